"""Train any plant of the protocol (:mod:`klcontrol.realplant`) under a β controller, with the trainer's guarantees.

The loop as trained (delay 0, docs/design.md). Update ``k``'s forward pass measures ``y(k − 1)``, the KL of the
model after ``k`` updates … after ``k − 1`` updates; ``beta_of`` records trace row ``k − 1`` (``beta`` = β(k − 1),
``kl`` = y(k − 1), ``recon`` of that pass when the plant gives ``last_recon``, ``setpoint`` = C(k − 1)) and asks
the controller for β(k). Update 0's pass measures the initial model's KL: the controller is primed with it
(:meth:`klcontrol.Controller.prime`) and β(0) is ``controller.beta``. After the last update one more pass
measures the last row; its update is discarded (the final checkpoint is taken before it). The trace has the
columns of the dSprites trainer's (``step, beta, kl, recon, setpoint``), so ``klcontrol fit`` and the experiments
read both alike.

Guarantees, as for the dSprites trainer: the run directory is locked while in use
(:class:`~klcontrol.vae_plant.training.run_lock.RunLock`); checkpoints ``checkpoints/step_XXXXXXXX.pt`` (plant
state, controller state, global RNG states, the last β) carry a SHA-256 checksum and are verified on load;
``config.json`` records the plant spec, the settings and provenance; a run resumed from checkpoint ``k`` cuts the
trace to rows ``0 … k − 2`` and continues bit for bit as an uninterrupted run on a CPU (if the plant's
``state_dict`` holds everything, as the protocol asks).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import time

import numpy as np
import torch

from klcontrol.fileio import write_json
from klcontrol.realplant import factory_kwargs, load_factory, make_plant
from klcontrol.vae_plant.training import checkpoint as ckpt
from klcontrol.vae_plant.training.run_lock import RunLock, is_klcontrol_run
from klcontrol.vae_plant.training.trainer import _git_commit

__all__ = ["run_plant", "RUN_KIND", "COLUMNS"]

#: ``config.json["kind"]`` of a run this module wrote (the marker that it is klcontrol's).
RUN_KIND = "klcontrol.plant_run"
#: Trace columns.
COLUMNS = ("step", "beta", "kl", "recon", "setpoint")
#: Settings a resumed run may change.
_MAY_CHANGE = {"steps", "checkpoint_every"}


def _setpoint(ctrl, t):
    sp = getattr(ctrl, "setpoint", None)
    if sp is None:
        return math.nan
    try:
        return float(sp(t))
    except (TypeError, ValueError):
        return math.nan


def _trace_rows(path):
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def _cut_trace(path, rows):
    """Keep the header and the first ``rows`` rows (a resume redoes the rest)."""
    with open(path, newline="") as fh:
        lines = fh.readlines()
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        fh.writelines(lines[: rows + 1])
    os.replace(tmp, path)


def _source_digest(factory):
    """SHA-256 of the file that defines the factory (what the plant's code was), or None."""
    import hashlib
    import inspect

    try:
        path = inspect.getsourcefile(factory)
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (TypeError, OSError):
        return None


def _fmt(v) -> str:
    return repr(float(v)) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def run_plant(out, plant, controller, steps: int, *, seed: int = 0, device=None, batch_size=None, init_from=None,
              checkpoint_every: int = 0, flush_every: int = 50, command=None, progress=None, extra=None) -> dict:
    """Train a protocol plant for ``steps`` updates under ``controller``; resume a stopped run in ``out``.

    Parameters
    ----------
    out : str or path
        The run directory (created; a finished run there is left as it is and reported).
    plant : str or callable
        The factory, or its spec ``"module:factory"`` / ``"file.py:factory"`` (recorded in ``config.json``).
    controller : klcontrol.Controller
        A fresh controller (primed with the first measured KL).
    steps : int
        Updates to train.
    seed, device, batch_size : optional
        Passed to the factory when it accepts them.
    init_from : str or path, optional
        A finished run directory (e.g. a settle run): its last good checkpoint's plant state is the start
        (``settings.init_from`` records it).
    checkpoint_every : int
        Also checkpoint every that many updates (0: only at the end).
    flush_every : int
        Rows written to ``trace.csv`` at a time.
    command : str, optional
        The command line, for provenance.
    progress : callable, optional
        Called with ``(step, steps)`` after each flush.
    extra : dict, optional
        More settings to record (e.g. the excitation design).

    Returns
    -------
    dict
        ``out``, ``steps``, ``rows``, ``resumed_from`` (0 for a new run), ``seconds``.
    """
    out = os.fspath(out)
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    spec = plant if isinstance(plant, str) else f"{getattr(plant, '__module__', '?')}:{getattr(plant, '__qualname__', '?')}"
    factory = load_factory(plant) if isinstance(plant, str) else plant
    if os.path.isdir(out) and os.listdir(out) and not is_klcontrol_run(out):
        raise ValueError(f"{out} holds files klcontrol did not write: klcontrol never overwrites what it did not "
                         "make; choose another --out")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with RunLock(out):
        cfg_path, trace_path = os.path.join(out, "config.json"), os.path.join(out, "trace.csv")
        kwargs = factory_kwargs(factory, seed=seed, device=device, batch_size=batch_size)
        settings = dict(plant=spec, factory_kwargs=kwargs, steps=steps, seed=int(seed),
                        checkpoint_every=int(checkpoint_every), controller=repr(controller), **(extra or {}))
        start_ckpt = None
        if init_from is not None:
            start_ckpt, start_state = ckpt.latest_good(os.fspath(init_from))
            if start_ckpt is None:
                raise ValueError(f"--settled {init_from}: no verified checkpoint to start from")
            if start_state.get("kind") != ckpt.PLANT_KIND and not {"model", "optimizer"} <= set(start_state):
                raise ValueError(f"--settled {init_from}: not a checkpoint of a plant run or of klcontrol's trainer")
            settings["init_from"] = dict(run=os.path.basename(os.path.normpath(os.fspath(init_from))),
                                         checkpoint=os.path.relpath(start_ckpt, os.path.dirname(os.path.abspath(out))))
        existing = ckpt.list_checkpoints(out)
        if os.path.isfile(cfg_path):
            with open(cfg_path) as fh:
                old = json.load(fh)
            if old.get("kind") != RUN_KIND:
                raise ValueError(f"{out} holds a run that is not a plant run of klcontrol (config.json kind "
                                 f"{old.get('kind')!r}); choose another --out")
            diff = sorted(k for k in set(old["settings"]) | set(settings) if k not in _MAY_CHANGE
                          and old["settings"].get(k) != settings.get(k))
            if diff:
                raise ValueError(f"{out} holds a run with other settings ({', '.join(diff)}); choose another --out "
                                 "or delete that run yourself")
        plant_obj = make_plant(factory, where=f"--plant {spec}", **kwargs)
        state = ckpt.latest_good(out)[1] if existing else None
        if existing and state is None:
            raise ValueError(f"{out}: no checkpoint there verifies, so the run cannot resume; move it away or use "
                             "another --out")
        if state is not None and int(state["step"]) >= steps:
            return dict(out=out, steps=int(state["step"]), rows=_trace_rows(trace_path), resumed_from=int(state["step"]),
                        seconds=0.0)
        ctrl = controller
        if state is not None:
            k0 = int(state["step"])
            plant_obj.load_state_dict(state["plant"])
            ctrl.load_state_dict(state["controller"])
            ckpt.restore_rng(state["rng"], {})
            beta_prev = float(state["beta_prev"])
            _cut_trace(trace_path, max(k0 - 1, 0))
        else:
            k0, beta_prev = 0, math.nan
            if start_ckpt is not None and start_state.get("kind") == ckpt.PLANT_KIND:
                plant_obj.load_state_dict(start_state["plant"])
            elif start_ckpt is not None:  # a settled run of klcontrol's trainer seeding a TorchPlant of that model
                if not (hasattr(plant_obj, "model") and hasattr(plant_obj, "optimizer")):
                    raise ValueError(f"--settled {init_from}: a run of klcontrol's own trainer; only a TorchPlant of "
                                     "that model (klcontrol.vae_plant.training.dsprites_plant:make) can start from it")
                try:
                    plant_obj.model.load_state_dict(start_state["model"])
                    plant_obj.optimizer.load_state_dict(start_state["optimizer"])
                except (RuntimeError, KeyError, ValueError) as exc:
                    raise ValueError(f"--settled {init_from}: its model does not fit this plant ({exc})") from None
            with open(trace_path, "w", newline="") as fh:
                csv.writer(fh).writerow(COLUMNS)
        config = dict(kind=RUN_KIND, settings=settings, command=command,
                      provenance=dict(torch=torch.__version__, numpy=np.__version__,
                                      machine=f"{platform.system()} {platform.machine()}".strip(),
                                      git_commit=_git_commit(), plant_source_sha256=_source_digest(factory)))
        write_json(cfg_path, config, sort_keys=True)

        rows: list = []

        def flush():
            with open(trace_path, "a", newline="") as fh:
                w = csv.writer(fh)
                for r in rows:
                    w.writerow([r[0]] + [_fmt(v) for v in r[1:]])
            rows.clear()

        def save(k, beta_prev):
            flush()
            ckpt.save(dict(kind=ckpt.PLANT_KIND, format=ckpt.FORMAT, step=k, plant=plant_obj.state_dict(), controller=ctrl.state_dict(),
                           rng=ckpt.capture_rng({}), beta_prev=float(beta_prev), settings=settings),
                      ckpt.checkpoint_path(out, k))

        for k in range(k0, steps + 1):
            if k == steps:
                save(k, beta_prev)  # the state after `steps` updates: the next pass only measures the last row
            box = {}

            def beta_of(kl, k=k, box=box):
                kl = float(kl)
                if not math.isfinite(kl):
                    raise ValueError(f"update {k}: the plant's KL is {kl!r}; the last checkpoint is the last good state")
                if k == 0 and ctrl.steps_taken == 0:
                    ctrl.prime(kl)
                    b = float(ctrl.beta)
                else:
                    box["row"] = (k - 1, beta_prev, kl, math.nan, _setpoint(ctrl, k - 1))
                    b = float(ctrl.step(kl))
                box["beta"] = b
                return b

            plant_obj.step(beta_of)
            if "row" in box:
                r = box["row"]
                rows.append((r[0], r[1], r[2], float(getattr(plant_obj, "last_recon", math.nan)), r[4]))
            if k == steps:
                break
            beta_prev = box["beta"]
            if len(rows) >= flush_every:
                flush()
                if progress:
                    progress(k + 1, steps)
            if checkpoint_every and (k + 1) % checkpoint_every == 0 and k + 1 < steps:
                save(k + 1, beta_prev)
        flush()
        if progress:
            progress(steps, steps)
    return dict(out=out, steps=steps, rows=_trace_rows(trace_path), resumed_from=k0, seconds=time.time() - t0)
