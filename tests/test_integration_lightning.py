"""KLControlCallback: reads the KL a LightningModule logs, sets β, lives in checkpoints."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning", reason="the Lightning callback is an optional extra (klcontrol[lightning])")

from klcontrol import IncrementalPI, PositionalPI  # noqa: E402
from klcontrol.integrations import KLControlCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:.*treespec")

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
BATCHES = 4  # per epoch



def make_controller():
    return IncrementalPI(kp=0.5, ki=0.1, setpoint=0.5, beta0=1.5, filter=3)


class Recorder(L.LightningModule):
    """A tiny deterministic VAE that records the KL it reports and the β it used."""

    def __init__(self, source="logged", kl_key="kl", attribute="beta", nan_at=None):
        super().__init__()
        self.nan_at = nan_at
        torch.manual_seed(0)
        self.enc = nn.Linear(16, 4)
        self.dec = nn.Linear(2, 16)
        self.source, self.kl_key, self.attribute = source, kl_key, attribute
        self.kls, self.betas_used = [], []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        # Noise from the step number alone, so a resumed run sees the same noise.
        g = torch.Generator().manual_seed(int(self.global_step))
        z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
        recon = nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        if self.global_step == self.nan_at:
            kl = kl * float("nan")
        beta = getattr(self, self.attribute)
        self.kls.append(kl.detach().clone())
        self.betas_used.append(torch.as_tensor(beta).clone())
        loss = recon + beta * kl
        if self.source == "logged":
            self.log(self.kl_key, kl)
        elif self.source == "attribute":
            setattr(self, self.kl_key, kl)  # attached to the graph on purpose: the callback detaches
        if self.source == "outputs":
            return {"loss": loss, self.kl_key: kl}
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader():
    data = (torch.rand(BATCHES * 8, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    return DataLoader(TensorDataset(data), batch_size=8, shuffle=False)


def trainer(root, callbacks, **kw):
    return L.Trainer(
        accelerator="cpu", default_root_dir=root, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw,
    )


def states_equal(a, b):
    """Controller state dicts equal entry by entry (tensors compared exactly)."""
    assert a["kind"] == b["kind"] and a["t"] == b["t"] and a["params"] == b["params"]
    for k in a["state"]:
        xs, ys = a["state"][k], b["state"][k]
        for x, y in zip(xs, ys) if k == "filter" else [(xs, ys)]:
            if not torch.equal(torch.as_tensor(x), torch.as_tensor(y)):
                return False
    return True


@pytest.mark.parametrize("float_path", [None, False])
@pytest.mark.parametrize("source", ["logged", "outputs", "attribute"])
def test_beta_follows_the_controller_fed_the_reported_kl_with_one_step_delay(tmp_path, source, float_path):
    module = Recorder(source=source, kl_key="kl_value", attribute="weight_kl")
    cb = KLControlCallback(make_controller(), kl_key="kl_value", source=source, attribute="weight_kl",
                           float_path=float_path)
    trainer(tmp_path, [cb], max_steps=24).fit(module, loader())
    assert len(module.kls) == 24 and cb.controller.steps_taken == 24
    ref = make_controller()
    # on a CPU the callback steps on float(kl) by default (float_path=None); float_path=False keeps tensors
    fed = [float(k) for k in module.kls] if float_path is None else module.kls
    expected = [torch.tensor(ref.beta)] + [torch.as_tensor(ref.step(k)) for k in fed[:-1]]
    # β used in batch t+1 is the controller's answer to the KL of batch t.
    for used, exp in zip(module.betas_used, expected):
        assert torch.equal(used.to(exp.dtype), exp)
    assert torch.equal(torch.as_tensor(module.weight_kl), torch.as_tensor(ref.step(fed[-1])))
    assert len({float(b) for b in module.betas_used}) > 10  # β really moves
    if float_path is None:
        assert isinstance(module.weight_kl, float) and not torch.is_tensor(cb.controller.state["beta"])
    else:
        assert not cb.controller.beta.requires_grad


def test_the_float_path_is_the_default_on_a_cpu_and_cheaper(tmp_path):
    import time

    cb = KLControlCallback(make_controller())
    module = Recorder()
    trainer(tmp_path, [cb], max_steps=4).fit(module, loader())
    assert isinstance(module.beta, float) and isinstance(cb.controller.beta, float)
    # a controller restored onto tensors (an accelerator's checkpoint) stays on the tensor path
    on_tensors = make_controller()
    on_tensors.step(torch.tensor(0.4))
    cb2 = KLControlCallback(on_tensors)
    trainer(tmp_path, [cb2], max_steps=2).fit(Recorder(), loader())
    assert torch.is_tensor(cb2.controller.beta) and cb2.controller.steps_taken == 3

    def per_step(float_path):
        c = KLControlCallback(make_controller(), float_path=float_path, sync_dist=False, source="outputs")
        m = Recorder()
        out = {"loss": torch.tensor(0.0), "kl": torch.tensor(0.4)}
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                c.on_train_batch_end(None, m, out, None, 0)
            best = min(best, (time.perf_counter() - t0) / 200)
        return best

    assert per_step(None) < per_step(False)  # measured: ~40 µs against ~180 µs per batch (docs/integration.md)


def test_checkpoint_holds_the_controller_and_resume_continues_exactly(tmp_path):
    straight = Recorder()
    cb_a = KLControlCallback(make_controller())
    trainer(tmp_path / "a", [cb_a], max_epochs=4).fit(straight, loader())

    first = Recorder()
    cb_b = KLControlCallback(make_controller())
    t_b = trainer(tmp_path / "b", [cb_b], max_epochs=2)
    t_b.fit(first, loader())
    ckpt = tmp_path / "half.ckpt"
    t_b.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)["callbacks"][cb_b.state_key]["controller"]
    assert states_equal(saved, cb_b.controller.state_dict())
    assert saved["t"] == 2 * BATCHES

    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["state"] = cb_c.controller.state_dict()
            seen["beta"] = pl_module.beta

    resumed = Recorder()
    cb_c = KLControlCallback(make_controller())
    trainer(tmp_path / "c", [cb_c, Probe()], max_epochs=4).fit(resumed, loader(), ckpt_path=ckpt)
    assert states_equal(seen["state"], saved)
    assert seen["beta"] == cb_b.controller.beta  # float path on a CPU: Python floats
    # Bit for bit the uninterrupted run: same β sequence, same final controller state.
    assert len(resumed.betas_used) == 2 * BATCHES
    assert torch.equal(torch.stack(resumed.betas_used), torch.stack(straight.betas_used[2 * BATCHES:]))
    assert states_equal(cb_c.controller.state_dict(), cb_a.controller.state_dict())


def test_missing_logged_kl_names_the_key_and_lists_the_metrics(tmp_path):
    module = Recorder(kl_key="kl_div")
    with pytest.raises(ValueError, match=r"no logged metric 'kl'.*self\.log\('kl', kl\).*\['kl_div'\]"):
        trainer(tmp_path, [KLControlCallback(make_controller())], max_steps=2).fit(module, loader())


def test_missing_output_key_and_attribute_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"return a dict with key 'kl'.*returned \['loss'\]"):
        trainer(tmp_path, [KLControlCallback(make_controller(), source="outputs")], max_steps=2).fit(
            Recorder(source="logged"), loader()
        )
    with pytest.raises(ValueError, match=r"no attribute 'kl'.*self\.kl = kl\.detach\(\)"):
        trainer(tmp_path, [KLControlCallback(make_controller(), source="attribute")], max_steps=2).fit(
            Recorder(source="logged"), loader()
        )


def test_nan_kl_is_skipped_and_reported_at_epoch_end(tmp_path):
    module = Recorder(nan_at=2)
    cb = KLControlCallback(make_controller())
    with pytest.raises(ValueError, match="NaN or infinite"):
        trainer(tmp_path, [cb], max_epochs=2).fit(module, loader())
    # stopped at the end of the first epoch: BATCHES calls on the set-point clock; masked (NaN) steps do not count
    assert cb.controller.state_dict()["t"] == BATCHES
    assert cb.controller.steps_taken == sum(bool(torch.isfinite(k)) for k in module.kls) < BATCHES
    # The NaN measurement changed nothing: the state is that of the good measurements alone (stepped on
    # floats until the NaN, which moved the controller to the tensor path that masks it).
    ref = make_controller()
    for k in module.kls[:2]:
        ref.step(float(k))
    for k in module.kls[3:]:
        ref.step(k)
    assert torch.isnan(module.kls[2])
    assert torch.equal(cb.controller.beta, ref.beta)


def test_log_beta_logs_the_beta_used_in_the_batch(tmp_path):
    module = Recorder()
    cb = KLControlCallback(make_controller(), log_beta="beta", log_kl="kl_used")
    t = trainer(tmp_path, [cb], max_steps=5)
    t.fit(module, loader())
    # the last batch used the β published after batch 3, not the controller's next β
    assert torch.equal(t.callback_metrics["beta"], module.betas_used[-1].float())
    assert not torch.equal(t.callback_metrics["beta"], torch.as_tensor(cb.controller.beta).float())
    assert torch.equal(t.callback_metrics["kl_used"], module.kls[-1])


class PlantModule(L.LightningModule):
    """A LightningModule whose "KL" is a known first-order plant driven by the β of each batch.

    The forward pass of batch t reports the KL before update t, y(t−1), with 3 % noise (what
    ``self.log("kl", kl)`` in a training_step reports); the update then applies β(t) through the
    plant object's own step.
    """

    def __init__(self, plant, y0=2.0):
        super().__init__()
        self.plant, self.y = plant, y0
        self.w = nn.Parameter(torch.zeros(()))
        self.beta = 1.0
        self.rng = torch.Generator().manual_seed(5)

    def training_step(self, batch, batch_idx):
        kl = torch.tensor(self.y * (1 + 0.03 * float(torch.randn((), generator=self.rng))))
        self.log("kl", kl)
        self.y = float(self.plant.step((self.y,), float(self.beta))[0])  # update t uses β(t)
        return self.w * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_logged_pairs_fit_back_to_the_plant(tmp_path, logger):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from klcontrol import ExpGain, FirstOrderPlant, StepRamp
    from klcontrol.analysis.identification.first_order import fit_plant
    from klcontrol.analysis.identification.traces import read_trace

    plant = FirstOrderPlant(1 / 5, ExpGain(26.0, 0.12))  # fast: a one-row mis-pairing of β and KL shows
    steps = 800
    # set-point steps and brisk gains excite the loop: closed-loop data identify a
    ctrl = IncrementalPI(kp=0.3, ki=0.3, setpoint=StepRamp(3.0, 12.0, 3.0, 150, 1), beta0=15.0)
    cb = KLControlCallback(ctrl, log_beta="beta")
    log = CSVLogger(tmp_path, name="run") if logger == "csv" else TensorBoardLogger(tmp_path, name="run")
    data = DataLoader(TensorDataset(torch.zeros(steps, 1)), batch_size=1)
    L.Trainer(accelerator="cpu", max_steps=steps, callbacks=[cb], logger=log, log_every_n_steps=1,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(
        PlantModule(plant), data)
    path = tmp_path / "run" / "version_0" / ("metrics.csv" if logger == "csv" else "")
    tr = read_trace(path, kl_lag=1)  # the callback's documented pairing: β used in batch t, KL before update t
    assert len(tr) == steps and tr.meta["kl_lag"] == 1
    fit = fit_plant([tr], n_boot=0)
    assert abs(fit.a / plant.a - 1) < 0.05, fit.a
    b = np.linspace(*fit.beta_range, 5)
    np.testing.assert_allclose(fit.g(b), plant.g(b), rtol=0.05)
    # read without the lag, the same rows mis-pair β and KL: the fit is visibly off
    wrong = fit_plant([read_trace(path)], n_boot=0)
    assert abs(wrong.a / plant.a - 1) > 0.1


def test_dotted_attribute_setter_and_scales(tmp_path):
    class Cfg:
        beta = 0.0

    module = Recorder(attribute="beta")
    module.cfg = Cfg()
    module.beta = 1.0
    cb = KLControlCallback(make_controller(), attribute="cfg.beta", kl_scale=2.0, beta_scale=0.5)
    trainer(tmp_path, [cb], max_steps=3).fit(module, loader())
    ref = make_controller()
    for kl in module.kls:
        ref.step(float(kl) * 2.0)  # the controller sees the KL times kl_scale
    assert module.cfg.beta == ref.beta * 0.5  # and publishes β times beta_scale at cfg.beta
    seen = []
    cb = KLControlCallback(make_controller(), attribute=lambda m, b: (seen.append(float(b)), setattr(m, "beta", b)))
    trainer(tmp_path, [cb], max_steps=2).fit(Recorder(), loader())
    assert len(seen) >= 3  # setup, train start, every batch
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        trainer(tmp_path, [KLControlCallback(make_controller(), attribute="nope.beta")], max_steps=1).fit(
            Recorder(), loader())
    for bad in ({"attribute": "cfg..beta"}, {"attribute": 3}, {"kl_scale": 0.0}, {"beta_scale": float("inf")},
                {"log_kl": ""}):
        with pytest.raises(ValueError):
            KLControlCallback(make_controller(), **bad)


def test_no_host_sync_in_the_per_batch_hook(tmp_path):
    syncing = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
               torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}
    calls = []

    class SyncDetector(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in syncing:
                calls.append(getattr(func, "__name__", repr(func)))
            return func(*args, **(kwargs or {}))

    with SyncDetector():  # the detector itself must see a sync
        torch.tensor(1.0).item()
    assert calls == ["item"]
    calls.clear()

    class Watched(KLControlCallback):
        def on_train_batch_end(self, *args):
            with SyncDetector():
                super().on_train_batch_end(*args)

    for source in ("logged", "outputs"):
        # the tensor path, as on an accelerator (on a CPU the default float path reads float(kl): no device there)
        cb = Watched(make_controller(), source=source, float_path=False)
        trainer(tmp_path, [cb], max_steps=6).fit(Recorder(source=source), loader())
        assert cb.controller.steps_taken == 6
    assert calls == []


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="source must be one of"):
        KLControlCallback(make_controller(), source="metrics")
    with pytest.raises(ValueError, match="kl_key must be a non-empty string"):
        KLControlCallback(make_controller(), kl_key="")
    with pytest.raises(ValueError, match="state_dict, load_state_dict"):
        KLControlCallback(type("OnlyStep", (), {"step": lambda self, kl: kl})())


def test_load_state_dict_rejects_foreign_state():
    cb = KLControlCallback(make_controller())
    before = cb.controller.state_dict()
    with pytest.raises(ValueError, match="holds no controller state"):
        cb.load_state_dict({"beta": 1.0})
    with pytest.raises(ValueError, match="positional_pi"):
        cb.load_state_dict({"controller": PositionalPI(1.0, 0.1, setpoint=2.0).state_dict()})
    assert cb.controller.state_dict() == before


def test_state_key_distinguishes_two_callbacks():
    a = KLControlCallback(make_controller(), kl_key="kl_a", attribute="beta_a")
    b = KLControlCallback(make_controller(), kl_key="kl_b", attribute="beta_b")
    assert a.state_key != b.state_key and "KLControlCallback" in a.state_key


def test_documented_lightning_example_runs_as_written(tmp_path, monkeypatch):
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    monkeypatch.chdir(tmp_path)  # the example lets Lightning write its checkpoint here
    ns = {"__name__": "__main__"}
    exec(compile(blocks["lightning_module.py"], "docs/integration.md:lightning_module.py", "exec"), ns)
    ctrl = ns["control"].controller
    assert ctrl.steps_taken == ns["trainer"].global_step == 200
    assert isinstance(ns["model"].beta, float) and np.isfinite(ns["model"].beta)  # the CPU float path
    assert list(tmp_path.rglob("*.ckpt")), "the example's trainer should have written a checkpoint"
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert states_equal(ckpt["callbacks"][ns["control"].state_key]["controller"], ctrl.state_dict())


def test_documented_fit_recipe_runs_as_written(tmp_path, monkeypatch):
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    exec(compile(blocks["lightning_fit.py"], "docs/integration.md:lightning_fit.py", "exec"), ns)
    trace, fit = ns["trace"], ns["fit"]
    assert len(trace) == 30 and trace.meta["kl_lag"] == 1
    np.testing.assert_array_equal(trace.step, np.arange(9, 300, 10))  # log_every_n_steps=10
    assert isinstance(fit.identifiable, bool) and (fit.identifiable or fit.identifiability["reasons"])


def test_package_imports_without_lightning():
    code = (
        "import sys\n"
        "sys.modules['lightning'] = None\n"
        "sys.modules['pytorch_lightning'] = None\n"
        "import klcontrol, klcontrol.integrations\n"
        "from klcontrol.integrations import DistributedController, all_reduce_mean\n"
        "try:\n"
        "    from klcontrol.integrations import KLControlCallback\n"
        "except ImportError as e:\n"
        "    print('IMPORT-ERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORT-ERROR" in out.stdout and "klcontrol[lightning]" in out.stdout


@pytest.mark.parametrize("sync_dist", [True, False])
def test_the_kl_goes_through_the_rank_average_when_sync_dist(tmp_path, monkeypatch, sync_dist):
    # all_reduce_mean itself is tested on two gloo processes in test_integration_ddp.py.
    import klcontrol.integrations.lightning as integration

    seen = []

    def spy(kl):
        seen.append(kl)
        return kl * 0 + 7.0  # a stand-in "mean over ranks" the controller must receive

    monkeypatch.setattr(integration, "all_reduce_mean", spy)
    module = Recorder()
    cb = KLControlCallback(make_controller(), sync_dist=sync_dist)
    trainer(tmp_path, [cb], max_steps=5).fit(module, loader())
    ref = make_controller()
    fed = [7.0] * 5 if sync_dist else [float(k) for k in module.kls]
    for k in fed:
        ref.step(k)
    assert len(seen) == (5 if sync_dist else 0)
    assert cb.controller.beta == ref.beta


def test_callback_state_with_beta_outside_the_clamps_is_refused_unchanged():
    cb = KLControlCallback(make_controller())
    good = cb.state_dict()
    bad = {"controller": dict(good["controller"], state=dict(good["controller"]["state"], beta=1e300))}
    with pytest.raises(ValueError, match=r"state dict beta = 1e\+300 is outside"):
        cb.load_state_dict(bad)
    assert states_equal(cb.state_dict()["controller"], good["controller"])
    neg = {"controller": dict(good["controller"], state=dict(good["controller"]["state"], beta=-1.0))}
    with pytest.raises(ValueError, match=r"state dict beta = -1 is outside \[0, "):
        cb.load_state_dict(neg)
