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

__all__ = ["RunLock", "LOCK_NAME"]

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
