"""An exclusive lock on a run directory, so two trainers never write one run.

``DIR/.lock`` is locked with ``fcntl.flock`` (``msvcrt.locking`` on Windows):
the operating system drops the lock when the holding process exits or is
killed, so a stale lock of a dead process never blocks a resume.  The file
holds the holder's pid, quoted in the refusal message; the file itself may
stay behind (it is the lock, not the lock's state).
"""
from __future__ import annotations

import os
import time

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows is not a target, but the module must import there
    fcntl = None

__all__ = ["RunLock", "LOCK_NAME", "is_klcontrol_run", "remove_run", "read_json", "check_settings"]

LOCK_NAME = ".lock"


class RunLock:
    """Hold ``DIR/.lock`` exclusively (non-blocking).

    Parameters
    ----------
    run_dir : str
        The run directory (must exist).

    Raises
    ------
    ValueError
        If another live process holds the lock (the message names the
        directory and that process's pid).

    Examples
    --------
    >>> lock = RunLock(run_dir)   # doctest: +SKIP
    >>> lock.release()            # doctest: +SKIP
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fh = None
        self._fh = open(self.path, "a+")
        try:
            self._lock()
        except OSError:
            holder = ""
            for _ in range(20):  # the holder writes its pid just after locking: give it a moment
                self._fh.seek(0)
                holder = self._fh.read(32).strip()
                if holder:
                    break
                time.sleep(0.01)
            holder = holder or "unknown"
            self._fh.close()
            self._fh = None
            raise ValueError(f"{run_dir} is in use by another trainer (pid {holder}); wait for it to finish "
                             "or choose another output directory") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def _lock(self):
        if fcntl is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover
            import msvcrt

            self._fh.seek(0)
            msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fh is not None

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fh is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        if getattr(self, "_fh", None) is not None:
            self.release()


#: Files klcontrol writes into a run directory before its config.json (a run stopped that early is still its own).
_EARLY_FILES = {LOCK_NAME, "excitation.json", "gain.json"}


def is_klcontrol_run(run_dir) -> bool:
    """Whether ``run_dir`` is a run klcontrol made: its ``config.json`` has klcontrol's ``settings`` and
    ``provenance`` (:func:`klcontrol.fileio.has_klcontrol_config`), or it holds nothing but the files klcontrol
    writes before that.

    Stricter than :func:`klcontrol.fileio.is_run_directory` (any mark of a run: files to protect): this decides
    what klcontrol may delete, so a folder with a lock or a checkpoint but a foreign config is not klcontrol's."""
    from klcontrol.fileio import has_klcontrol_config

    run_dir = os.fspath(run_dir)
    mine = has_klcontrol_config(run_dir)
    if mine is not None:
        return mine
    try:
        return set(os.listdir(run_dir)) <= _EARLY_FILES
    except OSError:
        return False


def remove_run(run_dir) -> None:
    """Delete a run directory klcontrol made, under its lock; refuse anything else.

    Raises
    ------
    ValueError
        If ``run_dir`` is not klcontrol's (:func:`is_klcontrol_run`: the message names it and what to do), or
        another live process holds its lock.
    """
    import shutil

    run_dir = os.fspath(run_dir)
    if not os.path.lexists(run_dir):
        return
    if os.path.islink(run_dir) or not os.path.isdir(run_dir) or not is_klcontrol_run(run_dir):
        raise ValueError(f"{run_dir} exists and is not a run klcontrol made (no config.json of klcontrol's in it): "
                         "klcontrol never deletes what it did not make; move it away or choose another --out")
    with RunLock(run_dir):  # a live trainer in it refuses this
        shutil.rmtree(run_dir)


def read_json(path, what: str = "file"):
    """The JSON in ``path``; a file that is cut short or not JSON is a ``ValueError`` naming it and what to do.

    Parameters
    ----------
    path : str
        A file klcontrol wrote into a run directory (``config.json``, ``metrics.json``, ``excitation.json``).
    what : str
        What the file is, for the message.
    """
    import json

    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = " ".join(str(exc).split())[:120]
        raise ValueError(f"{path}: the {what} is damaged or not JSON ({type(exc).__name__}: {why}); move it away "
                         "(or delete it if klcontrol wrote it) and run again") from None


def check_settings(run_dir, wanted: dict, file: str = "config.json", key: str | None = "settings",
                   hint: str = "use another --out, or move that run away to start it again") -> None:
    """Refuse to reuse a finished run made with other settings than ``wanted``.

    Parameters
    ----------
    run_dir : str
        The run directory.
    wanted : dict
        Setting → value this command would use; every one must equal the run's stored value.
    file, key : str
        Where the run's settings are: ``run_dir/file`` (its ``key`` entry, or the whole object for ``None``).
    hint : str
        What the user can do, ending the message.

    Raises
    ------
    ValueError
        Naming the run and each setting that differs (its value there and here), or a damaged settings file.
    """
    path = os.path.join(os.fspath(run_dir), file)
    if not os.path.isfile(path):
        return
    stored = read_json(path, "run's " + file)
    stored = stored.get(key) if key is not None and isinstance(stored, dict) else stored
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: holds no settings of a klcontrol run; move {run_dir} away or choose another --out")

    def short(v):
        r = repr(v)
        return r if len(r) <= 80 else r[:77] + "…"

    diff = [f"{k}: {short(stored.get(k))} there, {short(v)} here" for k, v in wanted.items() if stored.get(k) != v]
    if diff:
        raise ValueError(f"{run_dir} holds a run of another experiment, made with other settings "
                         f"({'; '.join(diff)}); it is not reused: {hint}")
