"""Checkpoints that load with ``torch.load(..., weights_only=True)``, with a SHA-256 checksum.

A checkpoint holds only tensors, numbers, strings, lists and dicts: model and
optimizer state, the controller's ``state_dict()``, the set point, every RNG
state (torch CPU and CUDA, NumPy, Python, and the trainer's data and noise
generators), the step and the run settings.

Integrity: ``step_XXXXXXXX.pt`` comes with ``step_XXXXXXXX.pt.sha256`` (the
``sha256sum`` format, so ``sha256sum -c`` checks it too).  Both are written to
temporary names, flushed to disk and renamed (checksum first), so a crash or
a full disk never leaves a half-written checkpoint behind the last good one;
a failed write removes its temporary files.  :func:`load` refuses a file whose
bytes do not match its checksum, a checkpoint of this format without its
checksum file, and one whose model or optimizer state holds NaN or infinity
(such a checkpoint is not "good": resuming from it cannot go anywhere).
Checkpoints of the first format (no checksum file) still load, unverified.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re

import numpy as np
import torch

__all__ = ["save", "load", "latest", "list_checkpoints", "latest_good", "capture_rng", "restore_rng",
           "checkpoint_path", "non_finite", "CheckpointError", "FORMAT", "PLANT_KIND"]

#: Format written by :func:`save` (1: no checksum file).
FORMAT = 2
#: ``state["kind"]`` of a checkpoint of :func:`klcontrol.vae_plant.training.plant_runner.run_plant` (any plant of
#: the protocol: ``plant``, ``controller``, ``rng``, ``step``, ``beta_prev`` instead of model and optimizer).
PLANT_KIND = "plant"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, unverifiable or holds non-finite weights.

    Attributes
    ----------
    path : str
        The checkpoint file.
    """

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def checkpoint_path(run_dir: str, step: int) -> str:
    """``DIR/checkpoints/step_XXXXXXXX.pt``."""
    return os.path.join(run_dir, "checkpoints", f"step_{int(step):08d}.pt")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every checkpoint file in ``DIR/checkpoints``, by step."""
    d = os.path.join(run_dir, "checkpoints")
    names = os.listdir(d) if os.path.isdir(d) else []
    return sorted((int(m.group(1)), os.path.join(d, f)) for f in names if (m := _NAME.match(f)))


def latest(run_dir: str) -> str:
    """Path of the checkpoint with the highest step in ``DIR/checkpoints``.

    Raises
    ------
    ValueError
        If there is none.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise ValueError(f"cannot resume: no checkpoint in {os.path.join(run_dir, 'checkpoints')}")
    return found[-1][1]


def latest_good(run_dir: str, map_location=None, before: int | None = None):
    """The newest checkpoint that loads and verifies.

    Parameters
    ----------
    run_dir : str
    map_location : optional
        As for :func:`load`.
    before : int, optional
        Only consider checkpoints of steps below this one.

    Returns
    -------
    (path, state) or (None, None)
        ``None`` when no checkpoint verifies.
    """
    for step, path in reversed(list_checkpoints(run_dir)):
        if before is not None and step >= before:
            continue
        try:
            return path, load(path, map_location=map_location)
        except CheckpointError:
            continue
    return None, None


def _sha_path(path: str) -> str:
    return path + ".sha256"


def _write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (the fault-injection tests patch this)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save(state: dict, path: str) -> None:
    """Write ``state`` and its checksum atomically (temporary files, then renames).

    Raises
    ------
    OSError
        If writing fails (full disk, read-only directory); the temporary files
        are removed and any earlier checkpoint is untouched.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    line = f"{hashlib.sha256(data).hexdigest()}  {os.path.basename(path)}\n".encode()
    tmp, sha, sha_tmp = path + ".tmp", _sha_path(path), _sha_path(path) + ".tmp"
    try:
        _write_bytes(tmp, data)
        _write_bytes(sha_tmp, line)
        os.replace(sha_tmp, sha)
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, sha_tmp):
            try:
                os.remove(p)
            except OSError:
                pass
        raise


def _expected_digest(path: str) -> str | None:
    sha = _sha_path(path)
    if not os.path.exists(sha):
        return None
    try:
        with open(sha, "rb") as fh:
            text = fh.read(200).decode("ascii")
        digest = text.split()[0].lower()
        int(digest, 16)
        if len(digest) != 64:
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError, IndexError):
        raise CheckpointError(path, f"checkpoint {path}: its checksum file {sha} is unreadable or damaged") from None
    return digest


def _non_finite_tree(obj, name, out):
    if torch.is_tensor(obj):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            out.append(name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _non_finite_tree(v, f"{name}.{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _non_finite_tree(v, f"{name}.{i}", out)
    return out


def non_finite(state) -> list[str]:
    """Names of the floating tensors of ``state["model"]`` and the optimizer state that hold NaN or infinity.

    A plant run's checkpoint (``kind`` :data:`PLANT_KIND`): every floating tensor of ``state["plant"]``.
    """
    if state.get("kind") == PLANT_KIND:
        return _non_finite_tree(state["plant"], "plant", [])
    bad = [f"model.{k}" for k, v in state["model"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    opt = state["optimizer"].get("state", {}) if isinstance(state["optimizer"], dict) else {}
    for pid, entry in (opt.items() if isinstance(opt, dict) else ()):
        for k, v in (entry.items() if isinstance(entry, dict) else ()):
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                bad.append(f"optimizer.{pid}.{k}")
    return bad


def load(path: str, map_location=None) -> dict:
    """Load and verify a checkpoint (``weights_only=True``).

    Raises
    ------
    CheckpointError
        (a ``ValueError``) If the file is missing or unreadable, its bytes do
        not match its ``.sha256`` file, the checksum file of a format-2
        checkpoint is missing, it is not a trainer checkpoint, or its model or
        optimizer state holds NaN or infinity.
    """
    if not os.path.isfile(path):
        raise CheckpointError(path, f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CheckpointError(path, f"checkpoint {path} is unreadable ({exc.strerror or exc})") from None
    expected = _expected_digest(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(path, f"checkpoint {path} is corrupt: its bytes do not match the SHA-256 in "
                                    f"{os.path.basename(_sha_path(path))}")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure mode is "this file is damaged"
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        why = (f"it names the Python object {found.group(1)}, which weights-only loading refuses; nothing from "
               "it was run" if found else f"{type(exc).__name__}: {' '.join(text.split()[:40])}")
        raise CheckpointError(path, f"checkpoint {path} is corrupt or unreadable ({why})") from None
    plant_run = isinstance(state, dict) and state.get("kind") == PLANT_KIND
    needed = {"step", "plant", "controller", "rng"} if plant_run else {"step", "config", "model", "optimizer",
                                                                        "controller", "rng"}
    if not isinstance(state, dict) or not needed <= set(state):
        have = set(state) if isinstance(state, dict) else set()
        raise CheckpointError(path, f"checkpoint {path} is not a vae_plant checkpoint (missing {sorted(needed - have)})")
    fmt = state.get("format", 1)
    if expected is None and not (isinstance(fmt, int) and fmt < 2):
        raise CheckpointError(path, f"checkpoint {path} has no checksum file {os.path.basename(_sha_path(path))}, "
                                    "so it cannot be verified")
    if plant_run:
        if not isinstance(state["plant"], dict) or isinstance(state["step"], bool) or not isinstance(
                state["step"], int) or state["step"] < 0:
            raise CheckpointError(path, f"checkpoint {path} is not a plant-run checkpoint (malformed entries)")
    elif not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict) or isinstance(
            state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(path, f"checkpoint {path} is not a vae_plant checkpoint (malformed entries)")
    bad = non_finite(state)
    if bad:
        raise CheckpointError(path, f"checkpoint {path} holds NaN or infinite values ({', '.join(bad[:3])}"
                                    f"{' …' if len(bad) > 3 else ''}); it is not a good checkpoint")
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
