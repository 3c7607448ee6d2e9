"""Train the dSprites β-VAE with β from any klcontrol controller.

Loss of update t: ``recon + β(t)·KL`` (reductions in :mod:`klcontrol.vae_plant.training.model`);
β may be negative (the capacity relay).

Time indexing (docs/design.md, delay 0)
----------------------------------
``β(t)`` is the weight of update t; ``y(t)`` is the batch KL of the model
*after* update t, which is what the forward pass of update t+1 measures.  In
that forward pass the trainer records trace row t (``beta`` = β(t), ``kl`` =
y(t), ``recon`` and the per-latent KL of the same pass, ``setpoint`` = C(t)),
then calls ``controller.step(kl.detach())`` (a device tensor, no host sync),
which returns β(t+1), the weight of the very update whose forward pass it is.
Update 0's forward pass measures the initial model's KL y(−1): the trainer
synchronises once to read it, primes the controller's history with it
(``controller.prime``) and uses ``controller.beta`` as β(0).  The official
presets (``dynamicvae-official``, ``controlvae-official``; ``prime="step"``)
skip the priming (the official code's KL window starts from zeros) and take
β(0) = ``controller.step(y(−1))`` instead, as the official loops use the PID
output already for update 0; their controller's call t then consumes y(t − 1)
and the trace's ``setpoint`` column holds the C of call t + 1, the one that
consumed y(t).  The last row needs one more forward pass without
an update, run without gradients on the next batch.

Checkpoint k (taken after k updates, before the forward pass of update k)
holds the model, optimizer, controller (having produced β(k−1)), set point,
RNG states (torch, CUDA, NumPy, Python, data sampler, noise) and rows 0…k−2
are on disk.  Resuming from it cuts ``trace.csv`` to those rows and redoes the
forward pass of update k, so a resumed run writes the same bytes as an
uninterrupted one on a CPU.

Safety: the run directory is locked while a trainer uses it
(:mod:`klcontrol.vae_plant.training.run_lock`; a second trainer on the same directory is refused,
naming the holder's pid; the lock dies with its process).  Checkpoints carry
a SHA-256 checksum and are verified on load (:mod:`klcontrol.vae_plant.training.checkpoint`); a
checkpoint is only written when the model and optimizer state are finite.  A
corrupt latest checkpoint is named with the previous good one, which
``from_step=`` resumes from (later checkpoints are renamed ``*.discarded``).
A run that stopped before its first checkpoint restarts from step 0 with
``restart=True``.  What determines the bytes of the trace besides the
settings is stored in ``config.json`` (``threads``, ``dtype`` among the
settings: a resume with another value is refused, and without ``threads``
it uses the stored thread count; torch/NumPy versions and the machine under
``provenance``: a change is warned about).

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
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from klcontrol.controllers import MEASURES, Controller
from klcontrol.registry import PRESETS, make_preset
from klcontrol.vae_plant.data.dsprites import DSprites
from klcontrol.vae_plant.training import checkpoint as ckpt
from klcontrol.vae_plant.training.model import BetaVAE, vae_losses
from klcontrol.vae_plant.training.presets import first_update, schedule
from klcontrol.vae_plant.training.run_lock import RunLock
from klcontrol.vae_plant.training.trace_log import TraceLog, columns, read_trace_csv, trace_rows

__all__ = ["train", "load_run", "Trainer", "RunResult", "resolve_device", "COMPILE_MODES"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
LATENT_DIM = 10
#: Settings a resumed run may change; all others must equal the stored ones.
_MAY_CHANGE = {"steps", "checkpoint_every", "flush_every", "tensorboard_every"}
#: Provenance entries that change the trace bytes without being settings; a change on resume is warned about.
_REPRODUCIBILITY = ("torch", "numpy", "machine")
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
    from klcontrol.fileio import write_json

    write_json(path, obj, sort_keys=True)  # a unique temporary file, flushed to disk before the rename


def _reproducibility() -> dict:
    """What besides the settings decides the trace bytes on this machine."""
    return dict(torch=torch.__version__, numpy=np.__version__,
                machine=f"{platform.system()} {platform.machine()} {platform.processor()}".strip())


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


def _label(controller: str) -> str:
    """Short progress-bar label: a preset's name, or a controller object's class (its repr is stored)."""
    return controller.split("(", 1)[0] if "(" in controller else controller


class Trainer:
    """One training run in a directory (new or resumed).

    Parameters are those of :func:`train`.
    """

    def __init__(self, out, preset=None, controller=None, steps=None, seed=None, batch_size=None,
                 device=None, checkpoint_every=None, flush_every=None, tensorboard_every=None, data=None,
                 compile=None, amp=None, channels_last=None, fused_adam=None, hidden_fc=None,
                 resume=False, progress=True, command=None, prime=None, threads=None, restart=False,
                 from_step=None, init_from=None):
        self.out = os.fspath(out)
        self.progress = progress
        self._prime_arg = prime
        self._lock = None
        self._threads_before = None
        self._created = not os.path.exists(self.out)
        self._held = False  # whether this trainer ever held the run's lock
        self.log = None
        if init_from is not None and resume:
            raise ValueError("init_from starts a new run from another run's checkpoint; it cannot be combined with resume")
        if threads is not None:
            threads = _positive_int("threads", threads)
        if from_step is not None:
            from_step = _positive_int("from_step", from_step, allow_zero=True)
            if not resume:
                raise ValueError("from_step (--from-step) picks the checkpoint a resumed run continues from; "
                                 "it needs resume (--resume DIR)")
        given = dict(preset=preset, steps=steps, seed=seed, batch_size=batch_size, device=device,
                     checkpoint_every=checkpoint_every, flush_every=flush_every,
                     tensorboard_every=tensorboard_every, data=None if data is None else os.fspath(data),
                     compile=compile, amp=amp, channels_last=channels_last, fused_adam=fused_adam,
                     hidden_fc=hidden_fc, threads=threads)
        ctrl_obj = controller if isinstance(controller, Controller) else None
        if ctrl_obj is not None:
            given["controller"] = repr(controller)
        elif controller is not None:
            given["controller"] = str(controller)
        try:
            if resume:
                self._init_resume(given, ctrl_obj, command, restart, from_step)
            else:
                self._init_new(given, ctrl_obj, command, restart, init_from=init_from)
        except BaseException:
            self._release()
            if self._held and self._created and os.path.isdir(self.out) and set(os.listdir(self.out)) <= {".lock"}:
                # A new run that failed before writing anything leaves no directory behind. Only the lock's holder
                # may clean up: a trainer refused by the lock must not remove the directory the holder is about to
                # write its config into (two trainers started together both "created" it).
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.out, ".lock"))
                    os.rmdir(self.out)
            raise

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
        s["threads"] = _positive_int("threads", s["threads"]) if s.get("threads") is not None else torch.get_num_threads()
        s.setdefault("dtype", str(torch.get_default_dtype()))
        s.update(lr=sched.lr, adam_betas=list(sched.adam_betas), latent_dim=LATENT_DIM)
        return s

    def _controller(self, s, ctrl_obj):
        if ctrl_obj is not None:
            ctrl = ctrl_obj.copy()
            prime = True
        else:
            ctrl = make_preset(s["controller"])
            prime = first_update(s["controller"])
        if self._prime_arg is not None:
            prime = "step" if self._prime_arg == "step" else bool(self._prime_arg)
        if ctrl.shape != ():
            raise ValueError("the trainer drives one loop: the controller's gains must be scalars, not arrays")
        if getattr(ctrl, "measures", "kl") not in MEASURES:
            raise ValueError(f"the controller measures {ctrl.measures!r}; the trainer passes one of {MEASURES}")
        return ctrl, prime

    def _warm_state(self, init_from, s):
        """The checkpoint a warm start loads (a file, or a run directory's latest), checked against ``s``."""
        init_from = os.fspath(init_from)
        path = ckpt.latest(init_from) if os.path.isdir(init_from) else init_from
        state = ckpt.load(path, map_location=s["device"])
        cfg = state.get("config") or {}
        for k in ("latent_dim", "hidden_fc"):
            if k in cfg and cfg[k] != s[k]:
                raise ValueError(f"cannot warm-start from {path}: its {k} is {cfg[k]!r}, this run's is {s[k]!r}")
        return path, state

    def _init_new(self, given, ctrl_obj, command, restart=False, keep_lock=False, init_from=None):
        s = self._resolve(given)
        warm = None
        if init_from is not None:
            path, state = self._warm_state(init_from, s)
            warm = state
            # Provenance of the starting point; the new run's own steps count from 0.
            s["init_from"] = dict(checkpoint=os.path.abspath(path), step=int(state["step"]),
                                  lr=(state.get("config") or {}).get("lr"))
        if ctrl_obj is None:
            make_preset(s["controller"])  # raises the "unknown controller" error first
        ctrl, prime = self._controller(s, ctrl_obj)
        s["prime"] = prime
        out = self.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--out {out} exists and is not a directory")
        os.makedirs(out, exist_ok=True)
        if not keep_lock:
            self._lock = RunLock(out)
        self._held = True
        if restart:
            self._clear_unfinished()
        for name in ("trace.csv", "config.json", "checkpoints"):
            if os.path.exists(os.path.join(out, name)):
                if ckpt.list_checkpoints(out):
                    raise ValueError(f"{out} already holds a run ({name}); resume it with --resume {out} "
                                     "or choose another output directory")
                raise ValueError(f"{out} already holds a run that stopped before its first checkpoint ({name}); "
                                 f"start it again with --resume {out} --restart (its stored settings) or "
                                 f"--out {out} --restart (these settings), or choose another output directory")
        self._set_threads(s["threads"])
        self.settings = s
        self._build(s, ctrl)
        if warm is not None:
            try:
                self.model.load_state_dict(warm["model"])
                self.opt.load_state_dict(warm["optimizer"])
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"cannot warm-start from {s['init_from']['checkpoint']}: {exc}") from None
        self.config = dict(settings=s, provenance=dict(
            torch=torch.__version__, python=platform.python_version(), git_commit=_git_commit(),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            command=command if command is not None else " ".join(sys.argv), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            **{k: v for k, v in _reproducibility().items() if k != "torch"},
        ), resumes=[])
        _write_json(os.path.join(out, "config.json"), self.config)
        self.step = 0
        self.beta = None
        self.initial_kl = None
        self.log = TraceLog(out, LATENT_DIM, 0, s["tensorboard_every"])

    def _clear_unfinished(self):
        """``restart``: remove what a run without a good checkpoint left (refused if it has one)."""
        out = self.out
        path, _ = ckpt.latest_good(out)
        if path is not None:
            raise ValueError(f"{out} has a good checkpoint ({os.path.relpath(path, out)}); --restart only starts "
                             f"runs that never reached one: resume it with --resume {out}")
        for _, bad in ckpt.list_checkpoints(out):  # corrupt ones: kept for inspection, out of the way
            os.replace(bad, bad + ".corrupt")
        for name in ("trace.csv", "config.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out, name))
        for name in ("tb", "checkpoints"):
            d = os.path.join(out, name)
            if name == "checkpoints" and os.path.isdir(d):
                for f in os.listdir(d):
                    if f.endswith((".tmp", ".sha256")):
                        os.remove(os.path.join(d, f))
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # only if nothing (no .corrupt file) is left
                if os.path.isdir(d):
                    os.replace(d, d + f".corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            elif os.path.isdir(d):
                shutil.rmtree(d)

    def _set_threads(self, n):
        if n != torch.get_num_threads():
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(n)

    def _init_resume(self, given, ctrl_obj, command, restart=False, from_step=None):
        out = self.out
        cfg_path = os.path.join(out, "config.json")
        if not os.path.isfile(cfg_path):
            hint = (f"; it holds files of a run that stopped before writing its settings: start it again with "
                    f"--out {out} --restart" if os.path.isdir(out) and os.listdir(out) else "")
            raise ValueError(f"cannot resume: {out} holds no run (config.json missing){hint}")
        self._lock = RunLock(out)
        try:
            with open(cfg_path, "rb") as fh:
                self.config = json.loads(fh.read().decode("utf-8"))
            stored = self.config["settings"]
            if not isinstance(stored, dict) or "controller" not in stored or "steps" not in stored:
                raise KeyError("settings")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"cannot resume: {cfg_path} is unreadable ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None
        if given.get("device") is not None:
            given["device"] = resolve_device(given["device"])
        diffs = []
        for k, v in given.items():
            if v is None or k in _MAY_CHANGE or k not in stored:
                continue
            if v != stored[k]:
                diffs.append(f"{k}={v!r} (the run has {stored[k]!r})")
        if "dtype" in stored and stored["dtype"] != str(torch.get_default_dtype()):
            diffs.append(f"default dtype {torch.get_default_dtype()} (the run has {stored['dtype']})")
        if diffs:
            raise ValueError(f"cannot resume {out} with different settings: {'; '.join(diffs)}"
                             + (" (the thread count changes the trace bytes)" if any(d.startswith("threads=") for d in diffs) else ""))
        if stored["controller"] not in PRESETS and ctrl_obj is None:
            raise ValueError(f"cannot resume {out}: it used a custom controller {stored['controller']}; pass the same controller object")
        s = dict(stored)
        for k in _MAY_CHANGE:
            if given.get(k) is not None:
                s[k] = given[k]
        try:
            # Every stored setting is checked again: a hand-edited config.json must not reach the training loop.
            s = self._resolve(s)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot resume: {cfg_path} has invalid settings ({type(exc).__name__}: {exc})") from None
        if restart:
            self._restart_from_config(s, given, ctrl_obj, command)
            return
        path, state = self._pick_checkpoint(s, from_step)
        k = int(state["step"])
        if s["steps"] < k:
            raise ValueError(f"cannot resume {out} to {s['steps']} steps: its latest checkpoint is already at step {k}")
        self._check_reproducibility()
        if s.get("threads") is not None:
            self._set_threads(int(s["threads"]))
        ctrl, _ = self._controller(s, ctrl_obj)
        self.settings = s
        self._build(s, ctrl)
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.ctrl.load_state_dict(state["controller"])
            ckpt.restore_rng(state["rng"], self.generators)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"checkpoint {path} does not fit this run ({type(exc).__name__}: {exc})") from None
        self.step = k
        self._sync_host_control()
        b = self.ctrl.beta
        self.beta = b if torch.is_tensor(b) or self._host_control else torch.tensor(float(b), dtype=torch.float64,
                                                                                     device=self.device)
        self.initial_kl = state.get("initial_kl")
        keep = max(k - 1, 0)
        rows = trace_rows(os.path.join(out, "trace.csv"), columns(LATENT_DIM))
        if rows < keep:
            fits = [j for j, _ in ckpt.list_checkpoints(out) if j < k and max(j - 1, 0) <= rows]
            hint = (f"resume from an earlier checkpoint with --resume {out} --from-step {fits[-1]}" if fits else
                    "no earlier checkpoint fits it either; choose another output directory")
            raise ValueError(f"cannot resume: {os.path.join(out, 'trace.csv')} has {rows} rows but the checkpoint "
                             f"{os.path.relpath(path, out)} needs the first {keep}; {hint}")
        if from_step is not None:
            for j, later in ckpt.list_checkpoints(out):
                if j > k:
                    os.replace(later, later + ".discarded")
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(later + ".sha256", later + ".sha256.discarded")
        self.config["settings"] = s
        self.config.setdefault("resumes", []).append(dict(
            from_step=k, checkpoint=os.path.relpath(path, out), to_steps=s["steps"],
            command=command if command is not None else " ".join(sys.argv), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
            **_reproducibility()))
        _write_json(cfg_path, self.config)
        self.log = TraceLog(out, LATENT_DIM, keep, s["tensorboard_every"])

    def _pick_checkpoint(self, s, from_step):
        """The verified checkpoint to resume from: the latest, or ``from_step``'s; a clear error otherwise."""
        out = self.out
        found = ckpt.list_checkpoints(out)
        if not found:
            raise ValueError(f"cannot resume: no checkpoint in {os.path.join(out, 'checkpoints')} (the run stopped "
                             f"before its first checkpoint); start it again from step 0 with its stored settings: "
                             f"--resume {out} --restart")
        if from_step is not None:
            path = ckpt.checkpoint_path(out, from_step)
            if not os.path.isfile(path):
                raise ValueError(f"cannot resume {out} from step {from_step}: no {os.path.relpath(path, out)} "
                                 f"(checkpoints: {', '.join(str(j) for j, _ in found)})")
            return path, ckpt.load(path, map_location=s["device"])
        path = found[-1][1]
        try:
            return path, ckpt.load(path, map_location=s["device"])
        except ckpt.CheckpointError as exc:
            prev, _ = ckpt.latest_good(out, map_location=s["device"], before=found[-1][0])
            if prev is None:
                offer = (f"no earlier checkpoint verifies either; start the run again with --resume {out} --restart")
            else:
                step = int(os.path.basename(prev)[5:-3])
                offer = (f"the previous good checkpoint is {os.path.relpath(prev, out)}: resume from it with "
                         f"--resume {out} --from-step {step} (later checkpoints are set aside as *.discarded)")
            raise ValueError(f"cannot resume: {exc}; {offer}") from None

    def _restart_from_config(self, s, given, ctrl_obj, command):
        """``--resume DIR --restart``: the stored settings, from step 0, in place of a run with no good checkpoint."""
        fresh = {k: s.get(k) for k in given if k != "controller"}
        fresh["controller"] = given.get("controller") or s["controller"]
        if s.get("prime") is not None and self._prime_arg is None:
            self._prime_arg = s["prime"]
        warm = (s.get("init_from") or {}).get("checkpoint")  # a warm-started run restarts from the same checkpoint
        self._init_new(fresh, ctrl_obj, command, restart=True, keep_lock=True, init_from=warm)

    def _check_reproducibility(self):
        prov = self.config.get("provenance", {})
        now = _reproducibility()
        changed = [f"{k} {prov[k]} → {now[k]}" for k in _REPRODUCIBILITY if k in prov and prov[k] != now[k]]
        if changed:
            warnings.warn(f"resuming {self.out} with {'; '.join(changed)}: the rest of the trace may differ "
                          "in the last bits from an uninterrupted run", RuntimeWarning, stacklevel=3)

    def _release(self):
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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
        self._sync_host_control()
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
        # What the controller consumes (Controller.measures): the KL, or the reconstruction loss for GECO.
        measured = recon if self.ctrl.measures == "recon" else kl
        if t == 0:
            self.initial_kl, initial_recon = torch.stack([kl.detach().double(), recon.detach().double()]).tolist()  # one sync
            if self.prime == "step":
                beta = self._control(measured)
            else:
                if self.prime:
                    self.ctrl.prime(initial_recon if self.ctrl.measures == "recon" else self.initial_kl)
                beta = (float(self.ctrl.beta) if self._host_control else
                        torch.tensor(float(self.ctrl.beta), dtype=torch.float64, device=self.device))
            self.config["initial_kl"] = self.initial_kl
            self.config["initial_recon"] = initial_recon
            _write_json(os.path.join(self.out, "config.json"), self.config)
        else:
            self._record(self.beta, kl, recon, kl_lat)
            beta = self._control(measured)
        loss = recon + (beta * kl if isinstance(beta, float) else beta.to(kl.dtype) * kl)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.beta = beta
        self.step = t + 1

    def _sync_host_control(self):
        # A controller restored with tensor state (a checkpoint from a GPU or an older trainer) stays on tensors.
        self._host_control = (self.device.type == "cpu" and self.ctrl.shape == ()
                              and not torch.is_tensor(self.ctrl.state["beta"]))

    def _control(self, measured):
        """β of the next update from the measured loss (a 0-d tensor on the device): a float64 tensor, or a float.

        On a GPU the law runs on tensors, so nothing waits for the device. On a CPU, reading the
        loss costs nothing and the law runs on floats: one call instead of some thirty tensor
        operations (about 0.1 ms per update, 0.4 % of a batch-8 step; ``benchmarks/train_speed.py``).
        A non-finite loss goes to the tensor path, which masks it and flags the controller
        (:meth:`_check_controller` reports it at the next flush).
        """
        if self._host_control:
            v = measured.item()
            if math.isfinite(v):
                return self.ctrl.step(v)  # a float: the loss multiplies it as it would β cast to the KL's dtype
            self._host_control = False
        return self.ctrl.step(measured.detach().to(torch.float64))

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
        block = torch.cat([_stack_betas(cols[0], d, self.device), torch.stack(cols[1]).reshape(-1, 1).to(d),
                           torch.stack(cols[2]).reshape(-1, 1).to(d), torch.stack(cols[3]).to(d)], dim=1)
        block = block.cpu().numpy()
        self.rows = []
        first = self.log.next_step
        sp = self.ctrl.setpoint
        steps = np.arange(first, first + len(block))
        calls = steps + (1 if self.prime == "step" else 0)  # the controller call that consumed row t's KL
        c = np.broadcast_to(np.asarray(sp(calls), dtype=float), steps.shape) if sp is not None else np.full(len(block), np.nan)
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

    def _good_checkpoint_note(self):
        path, _ = ckpt.latest_good(self.out)
        if path is None:
            return f"no good checkpoint was written yet (restart with --resume {self.out} --restart)"
        return f"the last good checkpoint is {os.path.relpath(path, self.out)}"

    def _nan_message(self, step):
        return (f"the KL (or reconstruction loss) became NaN or infinite at step {step} of {self.out}; "
                f"trace.csv keeps the rows before it and {self._good_checkpoint_note()}")

    def _save(self):
        s = self.settings
        state = dict(
            format=ckpt.FORMAT, step=self.step, config=s, model=self.model.state_dict(), optimizer=self.opt.state_dict(),
            controller=self.ctrl.state_dict(),
            setpoint=dict(description=self.ctrl.setpoint.to_dict() if self.ctrl.setpoint is not None else None,
                          value=float(self.ctrl.setpoint(max(self.step - 1, 0))) if self.ctrl.setpoint is not None else None),
            rng=ckpt.capture_rng(self.generators), initial_kl=self.initial_kl, trace_rows=self.log.next_step,
        )
        bad = ckpt.non_finite(state)
        if bad:
            # The KL of these weights is only measured by the next forward pass: refuse to call them a checkpoint.
            raise ValueError(f"the model became NaN or infinite before step {self.step} of {self.out} "
                             f"({', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}); no checkpoint was written "
                             f"for it, trace.csv keeps every good row and {self._good_checkpoint_note()}")
        path = ckpt.checkpoint_path(self.out, self.step)
        try:
            ckpt.save(state, path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write checkpoint {path} ({exc.strerror or exc}); nothing was left "
                                     f"half-written and {self._good_checkpoint_note()}; free space or fix the "
                                     f"directory, then run klcontrol train --resume {self.out}", path) from None

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

        pbar = tqdm(total=s["steps"], initial=self.step, unit="step", desc=_label(s["controller"]),
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
            with contextlib.suppress(Exception):  # never mask the error that got us here
                self.log.writer.flush()
        return self.result()

    def close(self):
        """Close the TensorBoard writer, release the run directory and restore the torch thread count."""
        try:
            if self.log is not None:
                self.log.close()
        finally:
            self._release()

    def result(self) -> RunResult:
        """The run as it is on disk now, with the in-memory model."""
        return RunResult(self.out, self.config, read_trace_csv(self.log.path), self.model.eval(), self.step,
                         meta={"initial_kl": self.initial_kl})


def _stack_betas(betas, dtype, device):
    """The β column of a block of trace rows: floats (a CPU run) or tensors (a GPU run; no host sync)."""
    if all(isinstance(b, float) for b in betas):
        return torch.tensor(betas, dtype=dtype, device=device).reshape(-1, 1)
    return torch.stack([b if torch.is_tensor(b) else torch.tensor(b, dtype=dtype, device=device)
                        for b in betas]).reshape(-1, 1).to(dtype)


def train(out, preset=None, controller=None, steps=None, seed=None, batch_size=None, device=None,
          checkpoint_every=None, flush_every=None, tensorboard_every=None, data=None, compile=None, amp=None,
          channels_last=None, fused_adam=None, hidden_fc=None, resume=False, progress=True,
          command=None, prime=None, threads=None, restart=False, from_step=None, init_from=None) -> RunResult:
    """Train a β-VAE on dSprites with a β controller; write trace, TensorBoard events and checkpoints.

    Parameters
    ----------
    out : str or path
        Run directory (``trace.csv``, ``tb/``, ``checkpoints/``, ``config.json``).
    preset : {"tiny", "cpu", "paper"}
        Schedule: batch size, default steps, checkpoint and flush intervals
        (default ``"tiny"``).
    controller : str or klcontrol Controller
        A preset name (:data:`klcontrol.registry.PRESETS`, default
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
        The extra 256-unit encoder layer (see :mod:`klcontrol.vae_plant.training.model`).
    resume : bool
        Continue the run in ``out`` from its latest checkpoint up to ``steps``;
        settings left as ``None`` are the stored ones, given ones must equal
        them (except steps and the intervals).
    progress : bool
        tqdm progress bar (steps/s, β, KL).
    command : str, optional
        Command line recorded in ``config.json`` (default ``sys.argv``).
    prime : bool or "step", optional
        Whether to prime the controller's KL history with the initial model's
        KL; ``"step"``: do not prime, and take update 0's β from
        ``controller.step`` on that KL, as the official loops (default: yes,
        ``"step"`` for the ``*-official`` presets, see
        :func:`klcontrol.vae_plant.training.presets.first_update`).
    threads : int, optional
        torch CPU threads for the run (stored; they change the trace bytes).
        Default: the current count for a new run, the stored one on resume;
        a different value on resume is refused.  Restored on return.
    restart : bool
        Start a run that never reached a good checkpoint again from step 0
        (with ``resume``: its stored settings), replacing its trace and events.
        Refused if the run has a good checkpoint.
    from_step : int, optional
        With ``resume``: continue from this checkpoint instead of the latest
        (e.g. when the latest is corrupt); later checkpoints are renamed
        ``*.discarded``.
    init_from : str or path, optional
        Warm start: a checkpoint file, or a run directory (its latest
        checkpoint), whose model and optimizer state this new run starts
        from, with its own controller, seed and trace (step 0 is the first
        update after the checkpoint).  Recorded as ``settings["init_from"]``.
        Used to excite a settled model around an operating point
        (:mod:`klcontrol.vae_plant.experiments.identify`).

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError
        Unknown preset or controller, an output directory that already holds a
        run (without ``resume``) or is in use by another trainer, a missing or
        corrupt checkpoint (the previous good one is named), different
        settings on resume, a KL or model that turns NaN (rows before it and
        the last good checkpoint are kept).
    OSError
        If the directory cannot be written (read-only, full disk); no
        half-written checkpoint is left and the run stays resumable.
    """
    tr = Trainer(out, preset=preset, controller=controller, steps=steps, seed=seed, batch_size=batch_size,
                 device=device, checkpoint_every=checkpoint_every, flush_every=flush_every,
                 tensorboard_every=tensorboard_every, data=data, compile=compile, amp=amp,
                 channels_last=channels_last, fused_adam=fused_adam, hidden_fc=hidden_fc, resume=resume,
                 progress=progress, command=command, prime=prime, threads=threads, restart=restart,
                 from_step=from_step, init_from=init_from)
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
    try:
        with open(cfg_path, "rb") as fh:
            config = json.loads(fh.read().decode("utf-8"))
        settings = config["settings"]
        latent_dim, hidden_fc = settings.get("latent_dim", LATENT_DIM), bool(settings.get("hidden_fc", False))
        latent_dim = _positive_int("latent_dim", latent_dim)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{cfg_path} is not a run's config.json ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    path = ckpt.latest(run_dir) if step is None else ckpt.checkpoint_path(run_dir, step)
    state = ckpt.load(path, map_location=device)
    model = BetaVAE(latent_dim, hidden_fc=hidden_fc)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise ValueError(f"checkpoint {path} does not fit the model of {cfg_path} ("
                         f"{' '.join(str(exc).split())[:300]})") from None
    trace = read_trace_csv(os.path.join(run_dir, "trace.csv"))
    return RunResult(run_dir, config, trace, model.to(device).eval(), int(state["step"]),
                     meta={"initial_kl": state.get("initial_kl"), "checkpoint": path})

