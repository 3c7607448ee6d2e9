"""PyTorch-VAE's BetaVAE losses reproduced bit for bit by the documented recipe (``from_pytorch_vae_config``).

PyTorch-VAE is not on PyPI and the tests cannot download, so the reference is a stand-in written from its
source, github.com/AntixK/PyTorch-VAE at commit a6896b944c918dd7030e7d795a8c13e5c6345ec7 (``models/beta_vae.py``,
``BetaVAE.loss_function``; ``experiment.py``, which calls it in ``training_step`` with ``M_N = kld_weight`` and
in ``validation_step`` with ``M_N = 1.0``; ``configs/bbvae.yaml`` and ``configs/bhvae.yaml``).  It keeps the
arithmetic of that function operation for operation: ``num_iter`` incremented on every call before anything
else, ``mse_loss`` reconstruction, the KLD summed over latents then averaged, ``(beta·M_N)·KLD`` for
``'H'`` and ``(gamma·M_N)·|KLD − C|`` for ``'B'`` with ``C`` clamped from the float32 tensor
``C_max/C_stop_iter·num_iter``.  The model around it is the docs' toy ``TinyBetaVAE``; the comparison is
between two copies of it that differ only in the KL term.
"""
import re
import types
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from klcontrol import CapacityRamp, LinearRamp
from klcontrol.integrations.pytorch_vae import PyTorchVAECapacity, from_pytorch_vae_config, pytorch_vae_controller

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
BBVAE = {"name": "BetaVAE", "in_channels": 3, "latent_dim": 128, "loss_type": "B", "gamma": 10.0,
         "max_capacity": 25, "Capacity_max_iter": 10000}
BHVAE = {"name": "BetaVAE", "in_channels": 3, "latent_dim": 128, "loss_type": "H", "beta": 10.0}
EXP = {"LR": 0.005, "weight_decay": 0.0, "scheduler_gamma": 0.95, "kld_weight": 0.00025, "manual_seed": 1265}
# A capacity run that crosses C both ways and reaches the clamp within the test's steps.
STRONG = dict(BBVAE, gamma=1000.0, max_capacity=3, Capacity_max_iter=60)
STRONG_EXP = dict(EXP, kld_weight=0.02)
STEPS = 150


@pytest.fixture(scope="module")
def recipe():
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    ns = {"__name__": "__main__"}
    exec(compile(blocks["pytorch_vae_betavae.py"], "docs/integration.md:pytorch_vae_betavae.py", "exec"), ns)
    return ns


def standin_loss_function(model_params):
    """BetaVAE.loss_function's arithmetic (commit a6896b9), bound to a model as PyTorch-VAE's is."""
    p = {"beta": 4, "gamma": 1000.0, "max_capacity": 25, "Capacity_max_iter": 1e5, "loss_type": "B",
         **model_params}

    def loss_function(self, *args, **kwargs):
        self.num_iter = getattr(self, "num_iter", 0) + 1  # counts every call: training and validation
        recons, x, mu, log_var = args[:4]
        kld_weight = kwargs["M_N"]
        recons_loss = F.mse_loss(recons, x)
        kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=1), dim=0)
        if p["loss_type"] == "H":
            loss = recons_loss + p["beta"] * kld_weight * kld_loss
        else:
            c_max = torch.Tensor([p["max_capacity"]]).to(x.device)
            capacity = torch.clamp(c_max / p["Capacity_max_iter"] * self.num_iter, 0, c_max.data[0])
            self.capacities.append(capacity)
            loss = recons_loss + p["gamma"] * kld_weight * (kld_loss - capacity).abs()
        return {"loss": loss, "Reconstruction_Loss": recons_loss, "KLD": kld_loss}

    return loss_function


def reference_model(ns, model_params):
    torch.manual_seed(0)
    ref = ns["TinyBetaVAE"]()
    ref.capacities = []
    ref.loss_function = types.MethodType(standin_loss_function(model_params), ref)
    return ref


def run_pair(ns, model_params, exp_params, monkeypatch, steps=STEPS, **kw):
    monkeypatch.setitem(ns, "exp_params", exp_params)  # train() reads the module-level exp_params
    torch.manual_seed(0)
    ours = ns["TinyBetaVAE"]()
    ours.kl_term = from_pytorch_vae_config(model_params, exp_params, **kw)
    ref = reference_model(ns, model_params)
    return ours, ns["train"](ours, steps), ref, ns["train"](ref, steps)


def assert_bit_for_bit(ours, losses, ref, ref_losses):
    assert len(losses) == len(ref_losses) >= 100
    for i, (a, b) in enumerate(zip(losses, ref_losses)):
        assert torch.equal(a.reshape(()), b.reshape(())), f"loss differs at step {i}: {a} vs {b}"
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name


def test_documented_recipe_runs_and_matches_bbvae_bit_for_bit(recipe, monkeypatch):
    model, losses = recipe["model"], recipe["losses"]
    assert model.kl_term.controller.steps_taken == len(losses) == STEPS
    ref = reference_model(recipe, BBVAE)
    assert_bit_for_bit(model, losses, ref, recipe["train"](ref, STEPS))


@pytest.mark.parametrize("path", ["float", "tensor"])
def test_capacity_loss_bit_for_bit_across_sign_changes_and_the_clamp(recipe, monkeypatch, path):
    ours, losses, ref, ref_losses = run_pair(recipe, STRONG, STRONG_EXP, monkeypatch, path=path)
    assert_bit_for_bit(ours, losses, ref, ref_losses)
    # the run exercised what could break exactness: both signs of KLD − C, the ramp and its clamp
    assert len({float(b) for b in ref_losses}) == STEPS  # every step's loss distinct: nothing stuck
    caps = torch.cat(ref.capacities)
    assert float(caps[-1]) == 3.0 and float(caps[0]) == pytest.approx(3 / 60)
    betas = []
    ctrl = pytorch_vae_controller(STRONG, STRONG_EXP)
    torch.manual_seed(0)
    probe = recipe["TinyBetaVAE"]()
    probe.kl_term = from_pytorch_vae_config(STRONG, STRONG_EXP, path=path)
    probe.kl_term.register_forward_hook(lambda m, i, o: betas.append(float(m.beta)))
    recipe["train"](probe, STEPS)
    assert {b > 0 for b in betas} == {True, False}
    assert isinstance(ctrl, CapacityRamp)


@pytest.mark.parametrize("path", ["float", "tensor"])
def test_beta_vae_h_loss_bit_for_bit(recipe, monkeypatch, path):
    ours, losses, ref, ref_losses = run_pair(recipe, BHVAE, EXP, monkeypatch, path=path)
    assert_bit_for_bit(ours, losses, ref, ref_losses)
    strong = dict(BHVAE, beta=7.3)
    assert_bit_for_bit(*run_pair(recipe, strong, STRONG_EXP, monkeypatch, path=path))


def test_the_literal_float32_recipe_is_not_bit_for_bit(recipe, monkeypatch):
    # The sensitivity check: a float32 tensor β times M_N rounds twice; the comparison above catches that.
    monkeypatch.setitem(recipe, "exp_params", EXP)
    ctrl = CapacityRamp(BBVAE["gamma"], LinearRamp(0, 25, 10000).shift(-1))

    def naive(kld):
        beta = ctrl.step(kld.detach())  # a float32 tensor
        return beta * EXP["kld_weight"] * kld

    torch.manual_seed(0)
    ours = recipe["TinyBetaVAE"]()
    ours.kl_term = naive
    losses = recipe["train"](ours, STEPS)
    ref = reference_model(recipe, BBVAE)
    recipe["train"](ref, STEPS)
    assert any(not torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
    assert len(losses) == STEPS


def test_validation_calls_advance_the_capacity_clock_as_pytorch_vae_does(recipe, monkeypatch):
    # experiment.py's validation_step (and Lightning's sanity check) call loss_function too: num_iter moves.
    monkeypatch.setitem(recipe, "exp_params", STRONG_EXP)
    torch.manual_seed(0)
    ours = recipe["TinyBetaVAE"]()
    ours.kl_term = from_pytorch_vae_config(STRONG, STRONG_EXP)
    ref = reference_model(recipe, STRONG)
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(3))
    for model in (ours, ref):
        model.eval()
        with torch.no_grad():
            for _ in range(7):  # PyTorch-VAE: M_N = 1.0 in validation; only the count matters here
                model.loss_function(*model(x), M_N=1.0)
        model.train()
    assert ours.kl_term.controller.steps_taken == ref.num_iter == 7
    assert_bit_for_bit(ours, recipe["train"](ours, 100), ref, recipe["train"](ref, 100))


def test_the_clock_lives_in_the_state_dict(recipe, monkeypatch):
    model = recipe["model"]
    sd = model.state_dict()
    assert int(sd["kl_term.clock"]) == STEPS
    torch.manual_seed(0)
    fresh = recipe["TinyBetaVAE"]()
    fresh.kl_term = from_pytorch_vae_config(BBVAE, EXP)
    fresh.load_state_dict(torch.load(_saved(sd), weights_only=True))
    assert fresh.kl_term.controller.steps_taken == STEPS
    assert fresh.kl_term.controller.setpoint(STEPS) == model.kl_term.controller.setpoint(STEPS)


def _saved(sd):
    import io

    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return buf


def test_capacity_setpoint_rounds_as_torch_on_a_cpu():
    for c_max, stop in ((25, 10000), (25, 1e5), (3, 60), (30, 77)):
        sp = PyTorchVAECapacity(c_max, stop).shift(-1)
        t = torch.arange(0, 30000)
        ref = torch.clamp(torch.Tensor([c_max]) / stop * (t + 1), 0, float(c_max))
        ours = torch.tensor([sp(int(i)) for i in t[::7]], dtype=torch.float32)
        assert torch.equal(ours, ref[::7])
        assert torch.equal(sp(t.double()).float(), ref)
    # a float64 ramp is not the same capacity (one ulp off at most steps)
    lin = LinearRamp(0, 25, 10000).shift(-1)
    assert sum(lin(i) != PyTorchVAECapacity(25, 10000).shift(-1)(i) for i in range(200)) > 100


def test_bad_configs_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"model_params\['loss_type'\] must be 'H' or 'B'"):
        pytorch_vae_controller(dict(BBVAE, loss_type="C"), EXP)
    with pytest.raises(ValueError, match=r"exp_params\['kld_weight'\] is missing"):
        pytorch_vae_controller(BBVAE, {})
    with pytest.raises(ValueError, match=r"kld_weight'\] must be a finite number > 0"):
        pytorch_vae_controller(BBVAE, {"kld_weight": float("nan")})
    with pytest.raises(ValueError, match="capacity_max_iter must be"):
        pytorch_vae_controller(dict(BBVAE, Capacity_max_iter=0), EXP)
    with pytest.raises(ValueError, match="model_params must be a dict"):
        pytorch_vae_controller(None, EXP)
    # defaults of BetaVAE.__init__: loss_type 'B', gamma 1000, C_max 25 over 1e5 iterations
    ctrl = pytorch_vae_controller({}, {"kld_weight": 0.5})
    assert float(ctrl.params["gamma"]) == 500.0 and ctrl.setpoint(99999) == 25.0
