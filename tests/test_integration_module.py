"""BetaLoss: the delay-0 adapter steps the controller inside the loss and keeps its state in ``state_dict``."""
import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from klcontrol import CapacityRamp, FixedBeta, IncrementalPI, LinearRamp, PositionalPI
from klcontrol.integrations import BetaLoss

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:.*treespec")

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"


def pi():
    return IncrementalPI(kp=0.05, ki=0.02, setpoint=3.0, beta0=1.0, filter=3)


def kls(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(3.0 + torch.randn((), generator=g)).requires_grad_() for _ in range(n)]


def roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what frameworks' loaders accept by default


@pytest.mark.parametrize("path", ["float", "tensor"])
def test_weighted_term_uses_the_beta_of_this_kl(path):
    term, ref = BetaLoss(pi(), path=path), pi()
    for kl in kls():
        out = term(kl)
        beta = ref.step(float(kl.detach()) if path == "float" else kl.detach())
        assert torch.equal(out, beta * kl)  # delay 0: β answers the KL it weighs
        out.backward()
        assert torch.equal(kl.grad, torch.as_tensor(beta, dtype=kl.dtype))
    assert isinstance(term.beta, float) == (path == "float")
    assert term.controller.steps_taken == 40


def test_auto_takes_the_float_path_on_a_cpu():
    term = BetaLoss(pi())
    term(torch.tensor(2.0))
    assert isinstance(term.beta, float) and isinstance(term.controller.state["beta"], type(torch.zeros(0).numpy()))


def test_capacity_form_is_the_capacity_loss_with_the_relay_gradient():
    ramp = LinearRamp(0.0, 4.0, 20)
    term = BetaLoss(CapacityRamp(50.0, ramp))
    assert term.form == "capacity"
    relay = CapacityRamp(50.0, ramp)
    for t, kl in enumerate(kls(30, seed=1)):
        out = term(kl)
        assert torch.equal(out, 50.0 * (kl - ramp(t)).abs())
        out.backward()
        g = kl.grad.clone()
        kl.grad = None
        (relay.step(float(kl)) * kl).backward()  # the relay form: same gradient
        assert torch.equal(g, kl.grad)
    with pytest.raises(ValueError, match="form='capacity' needs a CapacityRamp"):
        BetaLoss(CapacityRamp(50.0, ramp, beta_min=0.0), form="capacity")
    assert BetaLoss(CapacityRamp(50.0, ramp, filter=3)).form == "weighted"


@pytest.mark.parametrize("path", ["float", "tensor"])
def test_state_dict_resume_continues_bit_for_bit(path):
    def model():
        m = nn.Module()
        m.kl_term = BetaLoss(pi(), path=path)
        return m

    straight, first = model(), model()
    seq = kls(30, seed=2)
    outs = [straight.kl_term(k) for k in seq]
    for k in seq[:12]:
        first.kl_term(k)
    sd = roundtrip(first.state_dict())
    assert int(sd["kl_term.clock"]) == 12 and "kl_term.state_beta" in sd
    assert all(torch.is_tensor(v) for v in sd.values())  # tensors only: any checkpoint format takes them
    resumed = model()
    resumed.load_state_dict(sd)
    assert resumed.kl_term.controller.steps_taken == 12
    for k, expected in zip(seq[12:], outs[12:]):
        assert torch.equal(resumed.kl_term(k), expected)
    assert resumed.kl_term.controller.state_dict()["t"] == straight.kl_term.controller.state_dict()["t"] == 30


def test_a_fresh_state_restores_as_a_fresh_controller():
    a, b = BetaLoss(pi()), BetaLoss(pi(), path="tensor")
    b.load_state_dict(roundtrip(a.state_dict()))  # float64 host state, never stepped
    ref = pi()
    for k in kls(5):
        assert torch.equal(b(k), ref.step(k.detach()) * k)  # converted to float32 at its first step as usual


def test_bad_state_is_refused_clearly_and_keys_are_checked():
    term = BetaLoss(pi())
    sd = term.state_dict()
    with pytest.raises(RuntimeError, match="controller state: state dict beta = .* is outside"):
        term.load_state_dict(dict(sd, state_beta=torch.tensor(-5.0, dtype=torch.float64)))
    with pytest.raises(RuntimeError, match="Missing key.*clock"):
        term.load_state_dict({k: v for k, v in sd.items() if k != "clock"})
    with pytest.raises(RuntimeError, match="Unexpected key.*bogus"):
        term.load_state_dict(dict(sd, bogus=torch.zeros(())))
    with pytest.raises(RuntimeError, match="filter history of 1 samples, this controller.s filter needs 2"):
        term.load_state_dict({k: v for k, v in sd.items() if k != "filter_1"})
    assert term.controller.steps_taken == 0


def test_eval_mode_does_not_step_unless_asked():
    term = BetaLoss(pi()).eval()
    before = term.beta
    assert torch.equal(term(torch.tensor(9.0)), before * torch.tensor(9.0))
    assert term.controller.steps_taken == 0
    term.step_in_eval = True
    term(torch.tensor(9.0))
    assert term.controller.steps_taken == 1


def test_a_nan_kl_is_masked_and_reported_by_check():
    term, ref = BetaLoss(pi()), pi()
    for k in (2.0, 2.5):
        term(torch.tensor(k))
        ref.step(k)
    term(torch.tensor(float("nan")))  # handed to the tensor path: masked, not raised mid-step
    assert term.controller.steps_taken == 2
    assert float(term.beta) == pytest.approx(ref.beta, rel=1e-6)
    with pytest.raises(ValueError, match="NaN or infinite"):
        term.check()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="form must be one of"):
        BetaLoss(pi(), form="relay")
    with pytest.raises(ValueError, match="path must be one of"):
        BetaLoss(pi(), path="gpu")
    with pytest.raises(ValueError, match="controller must have step"):
        BetaLoss(object())
    with pytest.raises(ValueError, match="controller must drive one loop"):
        BetaLoss(FixedBeta([1.0, 2.0]))
    with pytest.raises(ValueError, match="kl must be a one-element tensor"):
        BetaLoss(pi())(torch.ones(3))
    with pytest.raises(ValueError, match="kl must be a one-element tensor"):
        BetaLoss(pi())(3.0)


def test_lightning_checkpoint_carries_the_adapter_state(tmp_path):
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.enc, self.dec = nn.Linear(16, 4), nn.Linear(2, 16)
            self.kl_term = BetaLoss(PositionalPI(kp=0.5, ki=0.1, setpoint=0.5, beta_min=0.1))

        def training_step(self, batch, batch_idx):
            (x,) = batch
            mu, logvar = self.enc(x).chunk(2, dim=-1)
            z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(int(self.global_step))) * (
                0.5 * logvar).exp()
            recon = nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1).mean()
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
            return recon + self.kl_term(kl)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        (torch.rand(32, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()), batch_size=8)
    kw = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    straight = Module()
    L.Trainer(max_epochs=4, enable_checkpointing=False, **kw).fit(straight, data)
    first = Module()
    t = L.Trainer(max_epochs=2, enable_checkpointing=False, **kw)
    t.fit(first, data)
    t.save_checkpoint(tmp_path / "half.ckpt")
    resumed = Module()
    L.Trainer(max_epochs=4, enable_checkpointing=False, **kw).fit(resumed, data, ckpt_path=tmp_path / "half.ckpt")
    assert resumed.kl_term.controller.steps_taken == straight.kl_term.controller.steps_taken == 16
    assert resumed.kl_term.beta == straight.kl_term.beta
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)


def test_documented_adapter_recipe_runs_as_written(tmp_path, monkeypatch):
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    exec(compile(blocks["beta_loss.py"], "docs/integration.md:beta_loss.py", "exec"), ns)
    model, resumed = ns["model"], ns["resumed"]
    assert model.kl_term.controller.steps_taken == resumed.kl_term.controller.steps_taken == 200
    assert resumed.kl_term.beta == model.kl_term.beta
    # and the resumed run continues as the uninterrupted one would
    torch.manual_seed(5)
    ns["train"](model, ns["opt"], ns["data"], 20)
    torch.manual_seed(5)
    ns["train"](resumed, ns["resumed_opt"], ns["data"], 20)
    assert resumed.kl_term.beta == model.kl_term.beta
    for a, b in zip(resumed.parameters(), model.parameters()):
        assert torch.equal(a, b)
