"""PythaeBetaCallback against pythae itself (0.1.2, the wheel the package index serves).

pythae is not a dependency of the project: the fixture downloads its wheel and the pure-Python packages it
imports that this venv lacks (pydantic 2 with pydantic-core, annotated-types, typing-inspection, imageio)
with ``pip download --no-deps`` and installs them with ``--no-deps --target`` into a throwaway directory put
in front of ``sys.path`` for this module only, so pip never resolves torch (the CPU torch of the venv is
used).  ``KLCONTROL_WHEELS`` may name a directory that already holds those wheels (offline runs).  The
tests skip, saying why, only when the wheels cannot be obtained.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from klcontrol import IncrementalPI

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

WHEELS = ["pythae==0.1.2", "pydantic>=2", "pydantic-core", "annotated-types", "typing-inspection", "imageio"]
STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def pythae(tmp_path_factory):
    wheels = os.environ.get("KLCONTROL_WHEELS") or str(tmp_path_factory.mktemp("wheels"))
    target = tmp_path_factory.mktemp("pythae_site")
    pip = [sys.executable, "-m", "pip"]
    have = list(Path(wheels).glob("pythae-0.1.2-*.whl"))
    if not have:
        got = subprocess.run(pip + ["download", "--no-deps", "-q", "-d", wheels] + WHEELS, capture_output=True,
                             text=True, timeout=300)
        if got.returncode:
            pytest.skip(f"pythae wheels could not be downloaded (pip download --no-deps): {got.stderr[-300:]}")
    inst = subprocess.run(pip + ["install", "-q", "--no-deps", "--no-index", "--target", str(target)]
                          + [str(p) for p in Path(wheels).glob("*.whl")], capture_output=True, text=True,
                          timeout=300)
    if inst.returncode:
        pytest.skip(f"pythae wheels could not be installed (--no-deps --target): {inst.stderr[-300:]}")
    sys.path.insert(0, str(target))
    try:
        import pythae as module
        from pythae.models import BetaVAE, BetaVAEConfig  # noqa: F401

        assert module.__file__.startswith(str(target))
        yield module
    finally:
        sys.path.remove(str(target))


def controller():
    return IncrementalPI(kp=0.02, ki=0.01, setpoint=2.0, beta0=2.0, filter=2)


def make(pythae, tmp_path, callbacks, epochs=3, steps_saving=None):
    from pythae.data.datasets import BaseDataset
    from pythae.models import BetaVAE, BetaVAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.manual_seed(0)
    model = BetaVAE(BetaVAEConfig(input_dim=(1, 16), latent_dim=3, beta=1.0, reconstruction_loss="bce"))
    data = (torch.rand(16 * STEPS_PER_EPOCH, 1, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    cfg = BaseTrainerConfig(output_dir=str(tmp_path), num_epochs=epochs, per_device_train_batch_size=16,
                            per_device_eval_batch_size=16, learning_rate=1e-2, steps_saving=steps_saving,
                            no_cuda=True, train_dataloader_num_workers=0, eval_dataloader_num_workers=0)
    seen = {"beta": [], "kl": []}

    def record(module, inputs, output):
        if module.training:
            seen["beta"].append(module.beta)
            seen["kl"].append(output["reg_loss"].detach().clone())

    trainer = BaseTrainer(model=model, train_dataset=BaseDataset(data, torch.zeros(len(data))),
                          training_config=cfg, callbacks=callbacks)
    model.register_forward_hook(record)  # after BaseTrainer's own sanity-check forward
    return trainer, model, seen


def test_beta_follows_the_controller_fed_reg_loss_with_one_step_delay(pythae, tmp_path):
    from klcontrol.integrations import PythaeBetaCallback

    cb = PythaeBetaCallback(controller())
    trainer, model, seen = make(pythae, tmp_path, [cb])
    trainer.train()
    n = 3 * STEPS_PER_EPOCH
    assert len(seen["kl"]) == n and cb.controller.steps_taken == n
    ref = controller()
    expected = [ref.beta] + [ref.step(float(k)) for k in seen["kl"][:-1]]
    assert seen["beta"] == expected  # β of batch t+1 answers the KL of batch t; floats on a CPU
    assert model.beta == ref.step(float(seen["kl"][-1]))
    assert len(set(expected)) > n // 2
    assert model.model_config.beta == 1.0  # pythae's config keeps the initial β: it is not where β lives


def test_pythae_checkpoints_do_not_hold_the_controller_but_its_state_dict_resumes(pythae, tmp_path):
    from klcontrol.integrations import PythaeBetaCallback

    straight = PythaeBetaCallback(controller())
    make(pythae, tmp_path / "s", [straight], epochs=4)[0].train()
    cb = PythaeBetaCallback(controller())
    make(pythae, tmp_path / "a", [cb], epochs=2, steps_saving=1)[0].train()
    ckpt = next((tmp_path / "a").rglob("checkpoint_epoch_2"))
    saved = {p.name: torch.load(p, weights_only=False) for p in ckpt.glob("*.pt")}
    assert set(saved) == {"model.pt", "optimizer.pt"}  # no callback state, no β
    assert not any("beta" in k for k in saved["model.pt"]["model_state_dict"])
    state = cb.state_dict()
    resumed = PythaeBetaCallback(controller())
    resumed.load_state_dict(torch.load(_save(state, tmp_path / "ctrl.pt"), weights_only=True))
    trainer, model, seen = make(pythae, tmp_path / "b", [resumed], epochs=2)
    trainer.train()
    assert seen["beta"][0] == cb.controller.beta  # the first resumed batch used the restored β
    assert resumed.controller.steps_taken == straight.controller.steps_taken == 4 * STEPS_PER_EPOCH
    with pytest.raises(ValueError, match="no 'controller' entry"):
        resumed.load_state_dict({"beta": 1.0})


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_missing_kl_key_and_attribute_are_explained(pythae, tmp_path):
    from klcontrol.integrations import PythaeBetaCallback

    trainer, _, _ = make(pythae, tmp_path, [PythaeBetaCallback(controller(), kl_key="kld")], epochs=1)
    with pytest.raises(ValueError, match=r"no 'kld'; it has \[.*'reg_loss'"):
        trainer.train()
    trainer, _, _ = make(pythae, tmp_path, [PythaeBetaCallback(controller(), attribute="gamma")], epochs=1)
    with pytest.raises(ValueError, match="has no attribute 'gamma'"):
        trainer.train()
    with pytest.raises(ValueError, match="kl_key must be a non-empty string"):
        PythaeBetaCallback(controller(), kl_key="")
    with pytest.raises(ValueError, match="controller must have step"):
        PythaeBetaCallback(object())


def test_documented_pythae_recipe_runs_as_written(pythae, tmp_path, monkeypatch):
    import re

    doc = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", doc.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    exec(compile(blocks["pythae_betavae.py"], "docs/integration.md:pythae_betavae.py", "exec"), ns)
    cb, model = ns["control"], ns["model"]
    assert cb.controller.steps_taken == ns["epochs"] * ns["steps_per_epoch"]
    assert model.beta == cb.controller.beta
    restored = torch.load("controller.pt", weights_only=True)
    assert restored["controller"]["t"] == cb.controller.steps_taken
