"""Checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts: model and
optimizer state, the controller's ``state_dict()``, the set point, every RNG
state (torch CPU and CUDA, NumPy, Python, and the trainer's data and noise
generators), the step and the run settings.  Files are written to a temporary
name and renamed, so a crash never leaves a half-written checkpoint behind the
last good one.
"""
from __future__ import annotations

import os
import random
import re

import numpy as np
import torch

__all__ = ["save", "load", "latest", "capture_rng", "restore_rng", "checkpoint_path"]

_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(run_dir: str, step: int) -> str:
    """``DIR/checkpoints/step_XXXXXXXX.pt``."""
    return os.path.join(run_dir, "checkpoints", f"step_{int(step):08d}.pt")


def latest(run_dir: str) -> str:
    """Path of the checkpoint with the highest step in ``DIR/checkpoints``.

    Raises
    ------
    ValueError
        If there is none.
    """
    d = os.path.join(run_dir, "checkpoints")
    found = sorted((int(m.group(1)), f) for f in (os.listdir(d) if os.path.isdir(d) else []) if (m := _NAME.match(f)))
    if not found:
        raise ValueError(f"cannot resume: no checkpoint in {d}")
    return os.path.join(d, found[-1][1])


def save(state: dict, path: str) -> None:
    """Write ``state`` atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str, map_location=None) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises
    ------
    ValueError
        If the file is missing, unreadable or not a trainer checkpoint.
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure mode is "this file is damaged"
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    needed = {"step", "config", "model", "optimizer", "controller", "rng"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise ValueError(f"checkpoint {path} is not a vae_plant checkpoint (missing {sorted(needed - set(state or {}))})")
    return state


def capture_rng(generators: dict) -> dict:
    """All RNG state as weights-only-safe values.

    Parameters
    ----------
    generators : dict of str → torch.Generator
        The trainer's own generators (data sampler, reparameterisation noise).
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    for k, g in generators.items():
        g.set_state(state["generators"][k].cpu())
