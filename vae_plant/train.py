"""Train the dSprites β-VAE with β from any klcontrol controller.

Loss of update t: ``recon + β(t)·KL`` (reductions in :mod:`vae_plant.model`);
β may be negative (the capacity relay).

Time indexing (DESIGN.md, delay 0)
----------------------------------
``β(t)`` is the weight of update t; ``y(t)`` is the batch KL of the model
*after* update t, which is what the forward pass of update t+1 measures.  In
that forward pass the trainer records trace row t (``beta`` = β(t), ``kl`` =
y(t), ``recon`` and the per-latent KL of the same pass, ``setpoint`` = C(t)),
then calls ``controller.step(kl.detach())`` (a device tensor, no host sync),
which returns β(t+1), the weight of the very update whose forward pass it is.
Update 0's forward pass measures the initial model's KL y(−1): the trainer
synchronises once to read it, primes the controller's history with it
(``controller.prime``) and uses ``controller.beta`` as β(0).  The
``dynamicvae-official`` preset skips the priming (the official code's KL
window starts from zeros).  The last row needs one more forward pass without
an update, run without gradients on the next batch.

Checkpoint k (taken after k updates, before the forward pass of update k)
holds the model, optimizer, controller (having produced β(k−1)), set point,
RNG states (torch, CUDA, NumPy, Python, data sampler, noise) and rows 0…k−2
are on disk.  Resuming from it cuts ``trace.csv`` to those rows and redoes the
forward pass of update k, so a resumed run writes the same bytes as an
uninterrupted one on a CPU.

Speed: batches are drawn on the device (:meth:`DSprites.sample`), trace rows
stay on the device and are copied to the host every ``flush_every`` steps
(also the only time NaN is checked: ``controller.check()``), and each of
``compile`` (``torch.compile`` of the loss; ``"reduce-overhead"`` uses CUDA
graphs), ``amp`` (bf16 autocast), ``channels_last`` and ``fused_adam`` is an
option, off by default until measured (``benchmarks/train_speed.py``).

API
---
``train(out, preset="tiny", controller="dynamicvae", steps=None, seed=0, ...) -> RunResult``
    Train (or ``resume=True``: continue the run in ``out`` up to ``steps``).
``load_run(run_dir, device="cpu") -> RunResult``
    The trace arrays, the settings and the model of the latest checkpoint.
``RunResult.encode(dataset)``
    Encoder means over a dataset (for disentanglement metrics).
``Trainer``
    The object behind ``train`` (``Trainer(out, ...).run(until=None)``).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from klcontrol.controllers import Controller

from . import checkpoint as ckpt
from .data import DSprites
from .model import BetaVAE, vae_losses
from .presets import CONTROLLERS, make_controller, primes, schedule
from .trace_log import TraceLog, read_trace_csv

__all__ = ["train", "load_run", "Trainer", "RunResult", "resolve_device", "COMPILE_MODES"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
LATENT_DIM = 10
#: Settings a resumed run may change; all others must equal the stored ones.
_MAY_CHANGE = {"steps", "checkpoint_every", "flush_every", "tensorboard_every"}
_NEW_RUN_DEFAULTS = dict(preset="tiny", controller="dynamicvae", seed=0, compile="off", amp=False,
                         channels_last=False, fused_adam=False, hidden_fc=False)


def resolve_device(device) -> str:
    """``None`` → ``"cuda"`` if available else ``"cpu"``; ``ValueError`` for an unusable device."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available in this torch build/machine")
    return device


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _positive_int(name, v, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a{' non-negative' if allow_zero else ' positive'} integer, got {v!r}")
    return int(v)


@dataclass
class RunResult:
    """A training run: settings, trace arrays and model.

    Attributes
    ----------
    run_dir : str
    config : dict
        Settings and provenance (``config.json``).
    trace : dict
        ``step, beta, kl, recon, setpoint`` ``(T,)`` and ``kl_latent`` ``(T, L)``.
    model : BetaVAE
        The model of the latest checkpoint, in eval mode.
    step : int
        Number of updates of that model.
    """

    run_dir: str
    config: dict
    trace: dict
    model: BetaVAE
    step: int
    meta: dict = field(default_factory=dict)

    def to_trace(self):
        """The trace as a :class:`klcontrol.simulate.Trace` (for analysis and plotting)."""
        from klcontrol.simulate import Trace

        t = self.trace
        return Trace(step=t["step"], beta=t["beta"], kl=t["kl"], setpoint=t["setpoint"],
                     meta={"run_dir": self.run_dir, "controller": self.config.get("controller")})

    @torch.no_grad()
    def encode(self, dataset: DSprites | None = None, batch_size: int = 2048):
        """Encoder means over a dataset, in index order.

        Parameters
        ----------
        dataset : DSprites, optional
            Default: the procedural set on the model's device.
        batch_size : int

        Returns
        -------
        mu : ndarray ``(N, L)``, classes : ndarray ``(N, 6)``
        """
        dev = next(self.model.parameters()).device
        ds = DSprites(device=dev) if dataset is None else dataset
        mus, cls = [], []
        for x, c in ds.batches(batch_size):
            mus.append(self.model.encode(x.to(dev))[0].float().cpu())
            cls.append(c.cpu())
        return torch.cat(mus).numpy(), torch.cat(cls).numpy()


class Trainer:
    """One training run in a directory (new or resumed).

    Parameters are those of :func:`train`.
    """

    def __init__(self, out, preset=None, controller=None, steps=None, seed=None, batch_size=None,
                 device=None, checkpoint_every=None, flush_every=None, tensorboard_every=None, data=None,
                 compile=None, amp=None, channels_last=None, fused_adam=None, hidden_fc=None,
                 resume=False, progress=True, command=None, prime=None):
        self.out = os.fspath(out)
        self.progress = progress
        self._prime_arg = prime
        given = dict(preset=preset, steps=steps, seed=seed, batch_size=batch_size, device=device,
                     checkpoint_every=checkpoint_every, flush_every=flush_every,
                     tensorboard_every=tensorboard_every, data=None if data is None else os.fspath(data),
                     compile=compile, amp=amp, channels_last=channels_last, fused_adam=fused_adam,
                     hidden_fc=hidden_fc)
        ctrl_obj = controller if isinstance(controller, Controller) else None
        if ctrl_obj is not None:
            given["controller"] = repr(controller)
        elif controller is not None:
            given["controller"] = str(controller)
        if resume:
            self._init_resume(given, ctrl_obj, command)
        else:
            self._init_new(given, ctrl_obj, command)

    # -- set-up -----------------------------------------------------------------------
    def _resolve(self, given):
        s = {"device": None, "data": None, **_NEW_RUN_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        sched = schedule(s["preset"])
        for k in ("steps", "batch_size", "checkpoint_every", "flush_every", "tensorboard_every"):
            if s.get(k) is None:
                s[k] = getattr(sched, k)
        s["steps"] = _positive_int("steps", s["steps"])
        s["batch_size"] = _positive_int("batch_size", s["batch_size"])
        s["seed"] = _positive_int("seed", s["seed"], allow_zero=True)
        s["checkpoint_every"] = _positive_int("checkpoint_every", s["checkpoint_every"], allow_zero=True)
        s["flush_every"] = _positive_int("flush_every", s["flush_every"])
        s["tensorboard_every"] = _positive_int("tensorboard_every", s["tensorboard_every"])
        s["device"] = resolve_device(s["device"])
        if s["compile"] not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {s['compile']!r}")
        for k in ("amp", "channels_last", "fused_adam", "hidden_fc"):
            s[k] = bool(s[k])
        s.update(lr=sched.lr, adam_betas=list(sched.adam_betas), latent_dim=LATENT_DIM)
        return s

    def _controller(self, s, ctrl_obj):
        if ctrl_obj is not None:
            ctrl = ctrl_obj.copy()
            prime = True
        else:
            ctrl = make_controller(s["controller"])
            prime = primes(s["controller"])
        if self._prime_arg is not None:
            prime = bool(self._prime_arg)
        if ctrl.shape != ():
            raise ValueError("the trainer drives one loop: the controller's gains must be scalars, not arrays")
        return ctrl, prime

    def _init_new(self, given, ctrl_obj, command):
        s = self._resolve(given)
        if ctrl_obj is None:
            make_controller(s["controller"])  # raises the "unknown controller" error first
        ctrl, prime = self._controller(s, ctrl_obj)
        s["prime"] = prime
        out = self.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--out {out} exists and is not a directory")
        for name in ("trace.csv", "config.json", "checkpoints"):
            if os.path.exists(os.path.join(out, name)):
                raise ValueError(f"{out} already holds a run ({name}); resume it or choose another output directory")
        self.settings = s
        self._build(s, ctrl)
        os.makedirs(out, exist_ok=True)
        self.config = dict(settings=s, provenance=dict(
            torch=torch.__version__, python=platform.python_version(), git_commit=_git_commit(),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            command=command if command is not None else " ".join(sys.argv), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        ), resumes=[])
        _write_json(os.path.join(out, "config.json"), self.config)
        self.step = 0
        self.beta = None
        self.initial_kl = None
        self.log = TraceLog(out, LATENT_DIM, 0, s["tensorboard_every"])

    def _init_resume(self, given, ctrl_obj, command):
        out = self.out
        cfg_path = os.path.join(out, "config.json")
        if not os.path.isfile(cfg_path):
            raise ValueError(f"cannot resume: {out} holds no run (config.json missing)")
        try:
            with open(cfg_path) as fh:
                self.config = json.load(fh)
            stored = self.config["settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot resume: {cfg_path} is unreadable ({exc})") from None
        if given.get("device") is not None:
            given["device"] = resolve_device(given["device"])
        diffs = []
        for k, v in given.items():
            if v is None or k in _MAY_CHANGE or k not in stored:
                continue
            if v != stored[k]:
                diffs.append(f"{k}={v!r} (the run has {stored[k]!r})")
        if diffs:
            raise ValueError(f"cannot resume {out} with different settings: {'; '.join(diffs)}")
        if stored["controller"] not in CONTROLLERS and ctrl_obj is None:
            raise ValueError(f"cannot resume {out}: it used a custom controller {stored['controller']}; pass the same controller object")
        s = dict(stored)
        for k in _MAY_CHANGE:
            if given.get(k) is not None:
                s[k] = given[k]
        s = {**s, **{k: v for k, v in self._resolve(s).items() if k in _MAY_CHANGE}}
        path = ckpt.latest(out)
        state = ckpt.load(path, map_location=s["device"])
        k = int(state["step"])
        if s["steps"] < k:
            raise ValueError(f"cannot resume {out} to {s['steps']} steps: its latest checkpoint is already at step {k}")
        ctrl, _ = self._controller(s, ctrl_obj)
        self.settings = s
        self._build(s, ctrl)
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.ctrl.load_state_dict(state["controller"])
            ckpt.restore_rng(state["rng"], self.generators)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint {path} does not fit this run ({exc})") from None
        self.step = k
        b = self.ctrl.beta
        self.beta = b if torch.is_tensor(b) else torch.tensor(float(b), dtype=torch.float64, device=self.device)
        self.initial_kl = state.get("initial_kl")
        self.config["settings"] = s
        self.config.setdefault("resumes", []).append(dict(
            from_step=k, checkpoint=os.path.relpath(path, out), to_steps=s["steps"],
            command=command if command is not None else " ".join(sys.argv), time=time.strftime("%Y-%m-%dT%H:%M:%S")))
        _write_json(cfg_path, self.config)
        self.log = TraceLog(out, LATENT_DIM, max(k - 1, 0), s["tensorboard_every"])

    def _build(self, s, ctrl):
        self.device = torch.device(s["device"])
        torch.manual_seed(s["seed"])
        np.random.seed(s["seed"] % 2**32)
        self.model = BetaVAE(LATENT_DIM, hidden_fc=s["hidden_fc"]).to(self.device)
        if s["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=s["lr"], betas=tuple(s["adam_betas"]),
                                    **({"fused": True} if s["fused_adam"] else {}))
        self.ctrl = ctrl
        self.prime = s["prime"]
        self.data = DSprites(s["data"], device=self.device)
        self.generators = {
            "data": torch.Generator(self.device).manual_seed(s["seed"]),
            "noise": torch.Generator(self.device).manual_seed(s["seed"] + 0x5EED),
        }
        loss_fn = lambda x, noise: vae_losses(self.model, x, noise)  # noqa: E731
        self.loss_fn = loss_fn if s["compile"] == "off" else torch.compile(loss_fn, mode=None if s["compile"] == "default" else s["compile"])
        self.rows = []
        self.rows_first = None

    # -- one step ---------------------------------------------------------------------
    def _draw(self):
        s = self.settings
        x, _ = self.data.sample(s["batch_size"], self.generators["data"])
        if s["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(s["batch_size"], LATENT_DIM, generator=self.generators["noise"], device=self.device)
        return x, noise

    def _losses(self, x, noise):
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.settings["amp"] else contextlib.nullcontext()
        with amp:
            return self.loss_fn(x, noise)

    def _record(self, beta, kl, recon, kl_lat):
        if self.rows_first is None:
            self.rows_first = self.log.next_step
        # Keep the step's tensors as they are; the row is assembled in bulk
        # at the flush (a few ops per block instead of nine per step).
        self.rows.append((beta, kl.detach(), recon.detach(), kl_lat.detach()))

    def _update(self):
        t = self.step
        recon, kl, kl_lat = self._losses(*self._draw())
        if t == 0:
            self.initial_kl = float(kl.detach())  # the one host sync of the run
            if self.prime:
                self.ctrl.prime(self.initial_kl)
            beta = torch.tensor(float(self.ctrl.beta), dtype=torch.float64, device=self.device)
            self.config["initial_kl"] = self.initial_kl
            _write_json(os.path.join(self.out, "config.json"), self.config)
        else:
            self._record(self.beta, kl, recon, kl_lat)
            beta = self.ctrl.step(kl.detach().to(torch.float64))
        loss = recon + beta.to(kl.dtype) * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.beta = beta
        self.step = t + 1

    @torch.no_grad()
    def _final_row(self):
        recon, kl, kl_lat = self._losses(*self._draw())
        self._record(self.beta, kl, recon, kl_lat)

    # -- host side --------------------------------------------------------------------
    def _flush(self, pbar=None):
        if not self.rows:
            self._check_controller(self.log.next_step)
            return
        d = torch.float64
        cols = list(zip(*self.rows))
        block = torch.cat([torch.stack(cols[0]).reshape(-1, 1).to(d), torch.stack(cols[1]).reshape(-1, 1).to(d),
                           torch.stack(cols[2]).reshape(-1, 1).to(d), torch.stack(cols[3]).to(d)], dim=1)
        block = block.cpu().numpy()
        self.rows = []
        first = self.log.next_step
        sp = self.ctrl.setpoint
        steps = np.arange(first, first + len(block))
        c = np.broadcast_to(np.asarray(sp(steps), dtype=float), steps.shape) if sp is not None else np.full(len(block), np.nan)
        bad = np.flatnonzero(~np.all(np.isfinite(block), axis=1))
        good = len(block) if len(bad) == 0 else int(bad[0])
        if good:
            self.log.write(block[:good], c[:good])
        if pbar is not None:
            pbar.update(self.step - pbar.n)
            if good:
                pbar.set_postfix(beta=f"{block[good - 1, 0]:.4g}", kl=f"{block[good - 1, 1]:.4g}", refresh=False)
        if len(bad):
            raise ValueError(self._nan_message(first + good))
        self._check_controller(first + len(block))

    def _check_controller(self, upto):
        try:
            self.ctrl.check()
        except ValueError as exc:
            raise ValueError(f"{exc}; {self._nan_message(upto)}") from None

    def _nan_message(self, step):
        last = [f for f in sorted(os.listdir(os.path.join(self.out, "checkpoints")))] if os.path.isdir(
            os.path.join(self.out, "checkpoints")) else []
        keep = f"the last good checkpoint is checkpoints/{last[-1]}" if last else "no checkpoint was written yet"
        return (f"the KL (or reconstruction loss) became NaN or infinite at step {step} of {self.out}; "
                f"trace.csv keeps the rows before it and {keep}")

    def _save(self):
        s = self.settings
        state = dict(
            format=1, step=self.step, config=s, model=self.model.state_dict(), optimizer=self.opt.state_dict(),
            controller=self.ctrl.state_dict(),
            setpoint=dict(description=self.ctrl.setpoint.to_dict() if self.ctrl.setpoint is not None else None,
                          value=float(self.ctrl.setpoint(max(self.step - 1, 0))) if self.ctrl.setpoint is not None else None),
            rng=ckpt.capture_rng(self.generators), initial_kl=self.initial_kl, trace_rows=self.log.next_step,
        )
        ckpt.save(state, ckpt.checkpoint_path(self.out, self.step))

    def run(self, until: int | None = None) -> RunResult:
        """Train up to ``until`` updates (default: the run's ``steps``).

        At ``steps`` the last trace row is measured and the final checkpoint
        written.  Raises ``ValueError`` (after writing every good row) if the
        KL turns NaN; the last good checkpoint stays.
        """
        s = self.settings
        end = s["steps"] if until is None else min(int(until), s["steps"])
        every = s["checkpoint_every"]
        from tqdm.auto import tqdm

        pbar = tqdm(total=s["steps"], initial=self.step, unit="step", desc=str(s["controller"])[:24],
                    disable=not self.progress, mininterval=0.5, dynamic_ncols=True)
        saved_at_end = os.path.isfile(ckpt.checkpoint_path(self.out, end))
        try:
            while self.step < end:
                self._update()
                k = self.step
                if len(self.rows) >= s["flush_every"]:
                    self._flush(pbar)
                if (every and k % every == 0) or k == s["steps"]:
                    self._flush(pbar)
                    self._save()
                    saved_at_end = k == end
            if end == s["steps"]:
                if not saved_at_end:
                    self._flush(pbar)
                    self._save()
                self._final_row()
            self._flush(pbar)
        finally:
            pbar.close()
            self.log.writer.flush()
        return self.result()

    def close(self):
        """Close the TensorBoard writer."""
        self.log.close()

    def result(self) -> RunResult:
        """The run as it is on disk now, with the in-memory model."""
        return RunResult(self.out, self.config, read_trace_csv(self.log.path), self.model.eval(), self.step,
                         meta={"initial_kl": self.initial_kl})


def train(out, preset=None, controller=None, steps=None, seed=None, batch_size=None, device=None,
          checkpoint_every=None, flush_every=None, tensorboard_every=None, data=None, compile=None, amp=None,
          channels_last=None, fused_adam=None, hidden_fc=None, resume=False, progress=True,
          command=None, prime=None) -> RunResult:
    """Train a β-VAE on dSprites with a β controller; write trace, TensorBoard events and checkpoints.

    Parameters
    ----------
    out : str or path
        Run directory (``trace.csv``, ``tb/``, ``checkpoints/``, ``config.json``).
    preset : {"tiny", "cpu", "paper"}
        Schedule: batch size, default steps, checkpoint and flush intervals
        (default ``"tiny"``).
    controller : str or klcontrol Controller
        A preset name (:data:`vae_plant.presets.CONTROLLERS`, default
        ``"dynamicvae"``) or any single-loop controller object (it is copied).
    steps : int, optional
        Number of updates (default: the preset's).
    seed : int, optional
        Seeds model initialisation, data sampler and noise (default 0).
    batch_size, checkpoint_every, flush_every, tensorboard_every : int, optional
        Override the preset (``checkpoint_every=0``: only at the end).
    device : {"cpu", "cuda"}, optional
        Default: CUDA if available.
    data : str, optional
        Path of the official dSprites ``.npz``; default: procedural.
    compile : {"off", "default", "reduce-overhead", "max-autotune"}
        ``torch.compile`` mode of the forward/loss (backward follows); default off.
    amp, channels_last, fused_adam : bool
        bf16 autocast, channels-last tensors, fused Adam (default off).
    hidden_fc : bool
        The extra 256-unit encoder layer (see :mod:`vae_plant.model`).
    resume : bool
        Continue the run in ``out`` from its latest checkpoint up to ``steps``;
        settings left as ``None`` are the stored ones, given ones must equal
        them (except steps and the intervals).
    progress : bool
        tqdm progress bar (steps/s, β, KL).
    command : str, optional
        Command line recorded in ``config.json`` (default ``sys.argv``).
    prime : bool, optional
        Whether to prime the controller's KL history with the initial model's
        KL (default: yes, except for the ``dynamicvae-official`` preset).

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError
        Unknown preset or controller, an output directory that already holds a
        run (without ``resume``), a missing or corrupt checkpoint, different
        settings on resume, a KL that turns NaN (rows before it and the last
        good checkpoint are kept).
    """
    tr = Trainer(out, preset=preset, controller=controller, steps=steps, seed=seed, batch_size=batch_size,
                 device=device, checkpoint_every=checkpoint_every, flush_every=flush_every,
                 tensorboard_every=tensorboard_every, data=data, compile=compile, amp=amp,
                 channels_last=channels_last, fused_adam=fused_adam, hidden_fc=hidden_fc, resume=resume,
                 progress=progress, command=command, prime=prime)
    try:
        return tr.run()
    finally:
        tr.close()


def load_run(run_dir, device="cpu", step: int | None = None) -> RunResult:
    """Load a run: its settings, trace arrays and the model of a checkpoint.

    Parameters
    ----------
    run_dir : str or path
    device : str
        Where to put the model.
    step : int, optional
        Checkpoint step (default: the latest).

    Returns
    -------
    RunResult
    """
    run_dir = os.fspath(run_dir)
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{run_dir} holds no run (config.json missing)")
    with open(cfg_path) as fh:
        config = json.load(fh)
    path = ckpt.latest(run_dir) if step is None else ckpt.checkpoint_path(run_dir, step)
    state = ckpt.load(path, map_location=device)
    model = BetaVAE(config["settings"].get("latent_dim", LATENT_DIM), hidden_fc=config["settings"].get("hidden_fc", False))
    model.load_state_dict(state["model"])
    trace = read_trace_csv(os.path.join(run_dir, "trace.csv"))
    return RunResult(run_dir, config, trace, model.to(device).eval(), int(state["step"]),
                     meta={"initial_kl": state.get("initial_kl"), "checkpoint": path})

