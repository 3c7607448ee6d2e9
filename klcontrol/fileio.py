"""Files klcontrol writes: JSON-ready values and atomic writes.

Every output goes to a temporary file in the target's directory and is renamed over the target, so a reader
never sees half a file and a failed write (a full disk, an interrupt) leaves the old file as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["jsonable", "atomic_write", "write_json", "write_text", "save_figure"]


def jsonable(o):
    """``o`` with NumPy scalars and arrays as Python numbers and lists, tuples as lists, non-finite floats as None."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if np.isfinite(f) else None
    return o


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **kwargs):
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``, on error it vanishes.

    Parameters
    ----------
    path : str or Path
        The file to (re)place.
    mode : str
        ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
    """
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens for writing only ('w' or 'wb'), got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path, obj, **kwargs) -> Path:
    """Write ``jsonable(obj)`` as JSON (indent 2 unless given) atomically; returns the path."""
    kwargs.setdefault("indent", 2)
    with atomic_write(path) as fh:
        json.dump(jsonable(obj), fh, **kwargs)
        fh.write("\n")
    return Path(path)


def write_text(path, text: str) -> Path:
    """Write ``text`` atomically; returns the path."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def save_figure(fig, path, dpi: int = 110, **kwargs) -> Path:
    """Save a Matplotlib figure atomically (format from the file name's suffix, PNG without one); returns the path."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix[1:].lower() or "png")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, dpi=dpi, **kwargs)
    return path

