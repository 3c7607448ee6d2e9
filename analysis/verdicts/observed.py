"""Decide from a recorded trace whether a β loop was stable.

A stable loop holds β near its equilibrium β* with a small, noise-driven
jitter; an unstable one shows a β oscillation that grows until it hits a clamp
and then settles into a limit cycle.  :func:`observed_stability` calls a run
**unstable** if, after a transient of ``skip`` rows, any of these holds:

1. *saturation*: β sits at its lower clamp (``β ≤ beta_min + tol``) in at
   least ``sat_frac`` of the rows (the loop is in a limit cycle against the clamp);
2. *large oscillation*: the RMS of ``β − median(β)`` over the last quarter of
   the rows is at least ``amp_rel·β*`` (an oscillation of that size is no
   longer small-signal: the linear verdict has failed either way);
3. *growth*: that RMS is at least ``growth`` times the RMS over the second
   quarter and at least ``floor_rel·β*`` (an oscillation still growing).

Otherwise it is **stable**.  The thresholds are arguments; the defaults
(``sat_frac = 0.01``, ``amp_rel = 0.5``, ``growth = 2``, ``floor_rel = 0.1``)
are checked on synthetic loops of known verdict in ``tests/test_loop_verdict.py``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["observed_stability"]


def _rms(x):
    return float(np.sqrt(np.mean((x - np.median(x)) ** 2)))


def observed_stability(beta, beta_star: float, skip: int = 100, beta_min: float = 0.0, sat_frac: float = 0.01,
                       amp_rel: float = 0.5, growth: float = 2.0, floor_rel: float = 0.1, tol: float = 1e-9) -> dict:
    """Stable or unstable, from the β of a closed-loop trace (see the module docstring).

    Parameters
    ----------
    beta : array ``(n,)``
        β of each update.
    beta_star : float
        Equilibrium β of the operating point (> 0), the scale of the thresholds.
    skip : int
        Rows of start-up transient ignored.
    beta_min, sat_frac, amp_rel, growth, floor_rel, tol : float
        Thresholds.

    Returns
    -------
    dict
        ``stable`` (bool), ``reasons`` (list of the rules that fired),
        ``saturated_frac``, ``rms_late_rel``, ``rms_mid_rel`` (RMS / β*), ``growth``.
    """
    b = np.asarray(beta, dtype=float)
    if b.ndim != 1 or not np.all(np.isfinite(b)):
        raise ValueError(f"beta must be a finite 1-D array, got shape {b.shape}")
    if not (beta_star > 0 and np.isfinite(beta_star)):
        raise ValueError(f"beta_star must be positive, got {beta_star!r}")
    skip = int(skip)
    if len(b) - skip < 40:
        raise ValueError(f"need at least {skip + 40} rows (40 after the {skip} skipped), got {len(b)}")
    b = b[skip:]
    q = len(b) // 4
    mid, late = b[q:2 * q], b[3 * q:]
    sat = float(np.mean(b <= beta_min + tol))
    r_mid, r_late = _rms(mid), _rms(late)
    gr = r_late / r_mid if r_mid > 0 else (np.inf if r_late > 0 else 1.0)
    reasons = []
    if sat >= sat_frac:
        reasons.append("saturation")
    if r_late >= amp_rel * beta_star:
        reasons.append("large_oscillation")
    if gr >= growth and r_late >= floor_rel * beta_star:
        reasons.append("growth")
    return dict(stable=not reasons, reasons=reasons, saturated_frac=sat, rms_late_rel=r_late / beta_star,
                rms_mid_rel=r_mid / beta_star, growth=float(gr))
