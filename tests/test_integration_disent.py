"""KLControlCallback drives a disent ``StandinBetaVae`` (β read from ``cfg.beta``), in total nats, across a resume.

Against disent itself where it imports (``DISENT=real``: a throwaway venv, see docs/integration.md), otherwise
against a stand-in with disent 0.8.0's attribute layout (read from its source): ``cfg`` a dataclass with
``beta`` and ``loss_reduction``; the model at ``_model`` with ``z_size`` and ``x_size``; the KL logged as
``kl_loss`` with ``log_dict`` (reduced by ``loss_reduction``: ``"mean"`` averages over latent dimensions);
batches ``{"x_targ": (x,)}``; ``register_schedule``/``has_schedule`` writing ``cfg.beta`` every step; and
``on_save_checkpoint`` pickling ``cfg`` and the model into ``hyper_parameters`` (so that a resume needs
``weights_only=False``).
"""
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

L = pytest.importorskip("lightning", reason="the Lightning callback is an optional extra (klcontrol[lightning])")

from klcontrol import IncrementalPI  # noqa: E402
from klcontrol.integrations import KLControlCallback, disent_scales  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:.*treespec")

X_SHAPE, Z = (1, 8, 8), 4


# -- the stand-in (module level, so that checkpoints can pickle it as disent's own objects are) -------------


class _Latents(nn.Module):  # disent.model.DisentEncoder / DisentDecoder: sizes
    def __init__(self, x_shape=(3, 64, 64), z_size=6, z_multiplier=1):
        super().__init__()
        self.x_shape, self.z_size, self.z_multiplier = tuple(x_shape), int(z_size), int(z_multiplier)
        self.x_size = int(torch.tensor(self.x_shape).prod())
        self.z_total = self.z_size * self.z_multiplier

class StandinEncoderLinear(_Latents):
    def __init__(self, x_shape=(3, 64, 64), z_size=6, z_multiplier=1):
        super().__init__(x_shape, z_size, z_multiplier)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(self.x_size, self.z_total))

    def forward(self, x):
        return self.model(x)

class StandinDecoderLinear(_Latents):
    def __init__(self, x_shape=(3, 64, 64), z_size=6, z_multiplier=1):
        super().__init__(x_shape, z_size, z_multiplier)
        self.model = nn.Sequential(nn.Linear(self.z_size, self.x_size), nn.Unflatten(1, self.x_shape))

    def forward(self, z):
        return self.model(z)

class StandinAutoEncoder(_Latents):
    def __init__(self, encoder, decoder):
        super().__init__(decoder.x_shape, decoder.z_size, encoder.z_multiplier)
        self._encoder, self._decoder = encoder, decoder

    def encode(self, x, chunk=False):
        return self._encoder(x).split(self.z_size, dim=-1)

    def decode(self, z):
        return self._decoder(z)

class StandinBetaVae(L.LightningModule):
    """disent 0.8.0 BetaVae's surface as the callback meets it."""

    @dataclass
    class cfg:
        optimizer: str = "adam"
        recon_loss: str = "mse"
        loss_reduction: str = "mean"
        beta: float = 0.003

    def __init__(self, model, cfg=None, batch_augment=None):
        super().__init__()
        self.cfg = cfg if cfg is not None else self.cfg()
        assert model.z_multiplier == 2, "StandinBetaVae requires z_multiplier 2 (mean and log-variance)"
        self._model = model
        self._active_schedules = {}
        assert self.cfg.beta >= 0, "beta must be >= 0"

    def has_schedule(self, target):
        return target in self._active_schedules

    def register_schedule(self, target, schedule, logging=True):
        self._active_schedules[target] = (getattr(self.cfg, target), schedule)
        return True

    def training_step(self, batch, batch_idx):
        for target, (v0, sched) in self._active_schedules.items():  # disent's _update_config_from_schedules
            setattr(self.cfg, target, sched.compute_value(step=self.trainer.global_step, value=v0))
        (x,) = batch["x_targ"]
        mu, logvar = self._model.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        out = self._model.decode(z)
        if self.cfg.recon_loss == "bce":
            recon = nn.functional.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            recon = (torch.sigmoid(out) - x) ** 2
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
        if self.cfg.loss_reduction == "mean":  # disent.nn.loss.reduction: mean over every element
            recon, kl = recon.mean(), kl.mean()
        else:  # "mean_sum": sum over the sample's elements, mean over the batch
            recon, kl = recon.flatten(1).sum(-1).mean(), kl.sum(-1).mean()
        reg = self.cfg.beta * kl
        self.log_dict({"kl_loss": kl, "kl_reg_loss": reg})
        self.log_dict({"recon_loss": float(recon), "reg_loss": float(reg)}, prog_bar=True)
        loss = recon + reg
        self.log("loss", float(loss), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def on_save_checkpoint(self, checkpoint):
        checkpoint.setdefault("hyper_parameters", {})
        checkpoint["hyper_parameters"]["model"] = self._model  # pickled objects, as disent does
        checkpoint["hyper_parameters"]["cfg"] = self.cfg

class StandinLinearSchedule:
    def __init__(self, start_step, end_step, r_start=0.0, r_end=1.0):
        self.start_step, self.end_step, self.r_start, self.r_end = start_step, end_step, r_start, r_end

    def compute_value(self, step, value):
        f = min(max((step - self.start_step) / max(self.end_step - self.start_step, 1), 0.0), 1.0)
        return value * (self.r_start + f * (self.r_end - self.r_start))


def standin_modules():
    """``sys.modules`` entries for a stand-in of disent 0.8.0's ``disent.frameworks.vae``, ``disent.model``,
    ``disent.model.ae`` and ``disent.schedule`` (only what the callback and the recipe touch)."""
    import types

    mods = {name: types.ModuleType(name) for name in
            ("disent", "disent.frameworks", "disent.frameworks.vae", "disent.model", "disent.model.ae",
             "disent.schedule")}
    mods["disent.frameworks.vae"].BetaVae = StandinBetaVae
    mods["disent.model"].AutoEncoder = StandinAutoEncoder
    mods["disent.model.ae"].EncoderLinear, mods["disent.model.ae"].DecoderLinear = StandinEncoderLinear, StandinDecoderLinear
    mods["disent.schedule"].LinearSchedule = StandinLinearSchedule
    return mods


try:
    import disent.frameworks.vae  # noqa: F401

    REAL = True
except ImportError:
    REAL = False
    _STANDIN = standin_modules()
    sys.modules.update(_STANDIN)  # for this module's imports only; removed again below

from disent.frameworks.vae import BetaVae  # noqa: E402
from disent.model import AutoEncoder  # noqa: E402
from disent.model.ae import DecoderLinear, EncoderLinear  # noqa: E402
from disent.schedule import LinearSchedule  # noqa: E402

if not REAL:
    for _name in _STANDIN:
        del sys.modules[_name]


def make_framework(beta=0.003, reduction="mean"):
    torch.manual_seed(0)
    model = AutoEncoder(encoder=EncoderLinear(x_shape=X_SHAPE, z_size=Z, z_multiplier=2),
                        decoder=DecoderLinear(x_shape=X_SHAPE, z_size=Z))
    return BetaVae(model=model, cfg=BetaVae.cfg(beta=beta, recon_loss="bce", loss_reduction=reduction))


def a_schedule():
    return LinearSchedule(start_step=0, end_step=10, r_start=0.0, r_end=1.0)


class Images(Dataset):
    def __init__(self, n=64):
        self.x = (torch.rand(n, *X_SHAPE, generator=torch.Generator().manual_seed(0)) < 0.3).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x_targ": (self.x[i],)}  # disent's batch layout


class Probe(L.Callback):
    """Records cfg.beta as each batch starts and the kl_loss the module logged as it ends."""

    def __init__(self):
        self.beta_at_start, self.kl_loss = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.beta_at_start.append(torch.as_tensor(module.cfg.beta).clone())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.kl_loss.append(trainer.callback_metrics["kl_loss"].clone())


def controller():
    return IncrementalPI(kp=0.01, ki=0.005, setpoint=2.0, beta0=4.0)


def fit(module, callbacks, root, steps, **kw):
    t = L.Trainer(accelerator="cpu", max_steps=steps, callbacks=callbacks, default_root_dir=root, logger=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    t.fit(module, DataLoader(Images(), batch_size=8), **kw)
    return t


def test_disent_source_is_reported():
    # which disent this run tested against (the report quotes it)
    print(f"disent: {'real package' if REAL else 'stand-in'}")


def test_callback_drives_cfg_beta_in_total_nats_without_a_subclass(tmp_path):
    fw = make_framework()
    scales = disent_scales(fw)
    assert scales == {"kl_scale": float(Z), "beta_scale": Z / 64}
    probe = Probe()
    cb = KLControlCallback(controller(), kl_key="kl_loss", attribute="cfg.beta", float_path=False, **scales)
    fit(fw, [cb, probe], tmp_path, 6)
    ref = controller()
    expected = []
    for kl in probe.kl_loss:
        expected.append(torch.as_tensor(ref.beta * scales["beta_scale"], dtype=torch.float64))
        ref.step(kl * Z)  # per-dimension KL × z_size = total nats
    assert torch.allclose(torch.stack([torch.as_tensor(b, dtype=torch.float64) for b in probe.beta_at_start]),
                       torch.stack(expected), rtol=1e-6, atol=0)
    assert torch.equal(cb.controller.beta, ref.beta)


def test_mean_reduction_without_scales_warns_and_mean_sum_needs_none(tmp_path):
    with pytest.warns(UserWarning, match="loss_reduction is 'mean'.*disent_scales"):
        fit(make_framework(), [KLControlCallback(controller(), kl_key="kl_loss", attribute="cfg.beta", float_path=False)], tmp_path, 1)
    assert disent_scales(make_framework(reduction="mean_sum")) == {"kl_scale": 1.0, "beta_scale": 1.0}
    with pytest.raises(ValueError, match="loss_reduction must be"):
        disent_scales(nn.Linear(1, 1))


def test_a_beta_schedule_next_to_the_controller_is_refused(tmp_path):
    fw = make_framework()
    fw.register_schedule("beta", a_schedule())
    cb = KLControlCallback(controller(), kl_key="kl_loss", attribute="cfg.beta", float_path=False, **disent_scales(fw))
    with pytest.raises(ValueError, match="also schedules 'beta'"):
        fit(fw, [cb], tmp_path, 1)


def test_controller_state_survives_a_disent_resume(tmp_path):
    fw = make_framework()
    cb = KLControlCallback(controller(), kl_key="kl_loss", attribute="cfg.beta", float_path=False, **disent_scales(fw))
    first = fit(fw, [cb], tmp_path / "a", 6)
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in cb.controller.state_dict().items()}
    fw2 = make_framework()  # a fresh process: cfg.beta back at its configured value
    probe = Probe()
    cb2 = KLControlCallback(controller(), kl_key="kl_loss", attribute="cfg.beta", float_path=False, **disent_scales(fw2))
    # disent pickles cfg and the model into the checkpoint, so Lightning must be told to unpickle (trusted files)
    fit(fw2, [cb2, probe], tmp_path / "b", 9, ckpt_path=str(ckpt), weights_only=False)
    assert first.global_step == 6 and cb2.controller.steps_taken == 9
    restored = controller()
    restored.load_state_dict(state)
    # the first resumed batch used the restored β (in disent's units), not cfg.beta's configured 0.003
    assert torch.equal(torch.as_tensor(probe.beta_at_start[0], dtype=restored.beta.dtype),
                       restored.beta * (Z / 64))


def test_documented_disent_recipe_runs_as_written(tmp_path, monkeypatch):
    doc = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", doc.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    if not REAL:
        for name, mod in standin_modules().items():
            monkeypatch.setitem(sys.modules, name, mod)
    ns = {"__name__": "__main__"}
    exec(compile(blocks["disent_betavae.py"], "docs/integration.md:disent_betavae.py", "exec"), ns)
    fw, ctrl, trainer = ns["framework"], ns["control"].controller, ns["trainer"]
    assert ctrl.steps_taken == trainer.global_step == 200
    assert float(fw.cfg.beta) == pytest.approx(float(ctrl.beta) * ns["z_size"] / 64, rel=1e-6)
    # the controller saw total nats: kl_loss (per latent dimension) × z_size
    m = trainer.callback_metrics
    assert float(m["kl_nats"]) == pytest.approx(float(m["kl_loss"]) * ns["z_size"], rel=1e-6)
