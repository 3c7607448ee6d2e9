"""Worker processes of the experiments: how many, and stopping them on SIGTERM as on Ctrl-C.

Ctrl-C reaches every process of the terminal's group, so the workers stop with the command. SIGTERM (``kill``, a
job scheduler, a container stopping) reaches the command alone: without :func:`worker_pool` the workers would go on
training into run directories that a rerun then finds half written.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings

__all__ = ["usable_cpus", "cap_jobs", "worker_pool", "sigterm_as_interrupt"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_jobs(jobs, n_jobs: int, flag: str = "--jobs") -> int:
    """``jobs`` checked and capped by the usable CPUs and the number of jobs (a warning says when it is cut).

    Raises
    ------
    ValueError
        If ``jobs`` is not a positive whole number (naming ``flag``).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, (int, float)) or jobs != int(jobs) or jobs < 1:
        raise ValueError(f"{flag} must be a positive whole number of processes, got {jobs!r}")
    jobs, cpus = int(jobs), usable_cpus()
    n = max(1, min(jobs, cpus, int(n_jobs)))
    if n < jobs:
        warnings.warn(f"{flag} {jobs}: running {n} at once ({cpus} usable CPUs, {n_jobs} runs to do)",
                      RuntimeWarning, stacklevel=2)
    return n


@contextlib.contextmanager
def sigterm_as_interrupt(on_term=None):
    """While inside, SIGTERM raises ``KeyboardInterrupt`` in the main thread (after calling ``on_term()``).

    Outside the main thread (where Python cannot install handlers) it does nothing; the previous handler is
    restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker inherited this handler: die as SIGTERM would have it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if on_term is not None:
            on_term()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(ex) -> None:
    # The executor keeps its workers in ``_processes`` (pid → Process); no public API stops a running task.
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()


@contextlib.contextmanager
def worker_pool(jobs: int, mp_context=None):
    """A ``ProcessPoolExecutor`` of ``jobs`` workers that stops them on Ctrl-C, SIGTERM or an error.

    A worker's run keeps what it wrote (its checkpoints; the OS drops its run lock), so a rerun resumes or restarts it
    as after Ctrl-C. ``KeyboardInterrupt`` (SIGTERM included) propagates once the workers are gone.
    """
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(int(jobs), mp_context=mp_context)
    try:
        with sigterm_as_interrupt(lambda: _stop(ex)):
            yield ex
    except BaseException:
        _stop(ex)
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
