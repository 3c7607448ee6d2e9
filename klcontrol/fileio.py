"""Files klcontrol writes: JSON-ready values, atomic writes, and the run files no output may replace.

Every output goes to a temporary file in the target's directory and is renamed over the target, so a reader
never sees half a file and a failed write (a full disk, an interrupt) leaves the old file as it was.

A training run's directory is its state: its trace, config and checkpoints are what a resume reads. A command's
output named after one of them (``simulate``'s default ``--out trace.csv`` run inside a run directory) would
silently end that run's resume, so :func:`check_not_run_file` refuses it before any work; every command's output
check calls it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["has_klcontrol_config", "jsonable", "atomic_write", "write_json", "write_text", "save_figure", "RUN_FILES", "RUN_FOLDERS",
           "is_run_directory", "run_of", "check_not_run_file", "check_not_run_folder"]


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
        # mkstemp makes the file 0600; the result should have the mode a plain open() would give it (or keep
        # the mode of the file it replaces), not become private as a side effect of being written safely
        with contextlib.suppress(OSError):
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _file_mode(path) -> int:
    """The permission bits a new ``open(path, "w")`` would get (or the existing file's, which is replaced)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


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



# --- the files of a run -------------------------------------------------------------------------------------------

#: Files a klcontrol run keeps at the top of its directory: config and trace (what a resume reads), the run lock,
#: compare's cached metrics, identify's excitation design, verify-stability's gain design.
RUN_FILES = frozenset({"config.json", "trace.csv", "metrics.json", "excitation.json", "gain.json", ".lock"})
#: Folders of a run every file of which is the run's: checkpoints, TensorBoard events, ``klcontrol evaluate``'s.
RUN_FOLDERS = frozenset({"checkpoints", "tb", "eval"})


def is_run_directory(folder) -> bool:
    """Whether ``folder`` holds a klcontrol run.

    A run is recognised by any of its marks, so that one cut short (no config yet) or damaged still counts: a
    ``config.json`` with klcontrol's ``settings`` and ``provenance``, the run lock ``.lock``, or a checkpoint.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    bool
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return False
    if os.path.isfile(os.path.join(folder, ".lock")):
        return True
    try:
        if any(n.startswith("step_") and n.endswith(".pt") for n in os.listdir(os.path.join(folder, "checkpoints"))):
            return True
    except OSError:
        pass
    return has_klcontrol_config(folder) is True


def has_klcontrol_config(folder):
    """Whether ``folder/config.json`` is a config klcontrol wrote (its ``settings`` and ``provenance``).

    The one test of klcontrol's config marker: :func:`is_run_directory` (whose files to protect) and
    ``run_lock.is_klcontrol_run`` (which folders klcontrol may delete) both read it.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    bool or None
        True: klcontrol's; False: a config.json that is not (unreadable, too large, other content); None: none.
    """
    cfg = os.path.join(os.fspath(folder), "config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        if os.path.getsize(cfg) > 1 << 20:  # a config is a few kB; this is not one, and is not read whole
            return False
        with open(cfg, encoding="utf-8") as fh:
            c = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(c, dict) and isinstance(c.get("settings"), dict) and isinstance(c.get("provenance"), dict)


def run_of(path):
    """The run directory whose own file ``path`` names (after following links), or None.

    A run's own files are :data:`RUN_FILES` at the top of a run directory and every file under its
    :data:`RUN_FOLDERS`; another name in a run directory (``RUN/fit.json``) is not one of them.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str or None
        The run directory, or None.
    """
    real = os.path.realpath(os.fspath(path))
    folder, name = os.path.split(real)
    if name in RUN_FILES | RUN_FOLDERS and is_run_directory(folder):  # a file named checkpoints blocks the folder
        return folder
    child = folder  # under a run's folder, at any depth (TensorBoard writes a folder per writer under tb/)
    while True:
        parent = os.path.dirname(child)
        if parent == child:
            return None
        if os.path.basename(child) in RUN_FOLDERS and is_run_directory(parent):
            return parent
        child = parent


def check_not_run_file(path, flag: str) -> None:
    """Refuse an output path that names a file of a klcontrol run (its trace, config, lock, a checkpoint …).

    Called before any work by every command's output check, for every file it will write.

    Parameters
    ----------
    path : str or Path
        The output path as given.
    flag : str
        The option that gave it (``--out``), named in the message.

    Raises
    ------
    ValueError
        Naming the flag, the path and the run.
    """
    run = run_of(path)
    if run is not None:
        raise ValueError(f"{flag} {os.fspath(path)} is a file of the klcontrol run in {run} (what it resumes from): "
                         "klcontrol never overwrites what it did not make; choose another path")


def check_not_run_folder(path, flag: str) -> None:
    """Refuse an output folder that is a klcontrol run's directory or one of its folders.

    For commands that write their own files into a folder (``compare --out``, ``identify --export``), whose names
    (``config.json`` among them for exports) would mix with the run's.

    Parameters
    ----------
    path : str or Path
        The output folder as given.
    flag : str
        The option that gave it, named in the message.

    Raises
    ------
    ValueError
        Naming the flag, the folder and the run.
    """
    real = os.path.realpath(os.fspath(path))
    run = real if is_run_directory(real) else run_of(os.path.join(real, "x"))
    if run is not None:
        raise ValueError(f"{flag} {os.fspath(path)} is {'the directory' if run == real else 'inside the directory'} "
                         f"of the klcontrol run {run}: klcontrol never writes over what it did not make; give this "
                         "command a folder of its own")
