"""Where klcontrol keeps generated code: ``$KLCONTROL_CACHE`` (default ``~/.cache/klcontrol``), and when to trust it.

The cache holds Python source klcontrol generated (stability coefficients, compiled loop kernels) and numba's
machine-code index beside it; loading either runs it. So, as ssh does with its keys, klcontrol runs nothing from a
cache folder or file that another user could have written: every existing folder from the cache base down to the
file, and the file itself, must belong to the current user (or root) and be writable by no one else. A shared cache
(a team's folder with group or world write permission) is refused with the path and the reason, and the code is
generated and kept in memory instead, for every command. Folders klcontrol creates are private (mode 0700) and the
files it writes are mode 0600.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

__all__ = ["cache_dir", "cache_base", "untrusted_reason", "private_dir", "write_private"]

_WARNED: set = set()


def cache_base() -> Path:
    """``$KLCONTROL_CACHE``, or ``~/.cache/klcontrol``."""
    base = os.environ.get("KLCONTROL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "klcontrol")
    return Path(base)


def cache_dir(kind: str) -> Path:
    """The cache folder for one kind of generated file (not created).

    Parameters
    ----------
    kind : str
        Sub-folder, e.g. ``"stability"`` or ``"kernels"``.
    """
    return cache_base() / kind


def _problem(p: Path) -> str | None:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{p} cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return f"{p} is a symbolic link"
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and st.st_uid not in (uid, 0):
        return f"{p} belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{p} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {oct(st.st_mode & 0o777)})"
    return None


def untrusted_reason(path) -> str | None:
    """Why code read from ``path`` (a file or folder in the cache) must not run; ``None`` when it may.

    Checks ``path`` and every existing folder above it up to the cache base (inclusive). Paths outside the cache
    base are checked alone. On systems without POSIX owners only the write bits are checked.
    """
    path = Path(path)
    base = cache_base()
    chain = [path]
    try:
        rel = path.resolve().relative_to(base.resolve()) if base.exists() else None
    except ValueError:
        rel = None
    if rel is not None:
        chain = [base.joinpath(*rel.parts[:i]) for i in range(len(rel.parts), -1, -1)]
    for p in chain:
        why = _problem(p)
        if why:
            return why
    return None


def private_dir(kind: str) -> Path | None:
    """The cache folder for ``kind``, created private (0700) if missing; ``None`` if it cannot be trusted or made.

    A refusal is warned about once per folder (``RuntimeWarning``), naming the path and the reason; the caller then
    keeps generated code in memory.
    """
    d = cache_dir(kind)
    why = untrusted_reason(d)  # the existing part of the chain: nothing is created in a shared cache
    if why:
        _warn(d, why)
        return None
    try:
        if not d.exists():
            old = os.umask(0o077)
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            finally:
                os.umask(old)
    except OSError as exc:
        _warn(d, f"cannot be created ({exc.strerror or exc})")
        return None
    why = untrusted_reason(d)
    if why:
        _warn(d, why)
        return None
    return d


def _warn(d: Path, why: str) -> None:
    if str(d) not in _WARNED:
        _WARNED.add(str(d))
        warnings.warn(f"klcontrol's cache {d} is not used: {why}; generated code stays in memory (set "
                      "KLCONTROL_CACHE to a private folder to keep it between runs)", RuntimeWarning, stacklevel=3)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable and writable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
