"""The identification experiment's design and its settled runs: excitation signals, noise, static points, amplitude.

These read constant-β traces (a settle run's last rows); the experiment that produces them is
:mod:`klcontrol.vae_plant.experiments.identify` for klcontrol's VAE, any plant of the protocol otherwise.
"""
from __future__ import annotations

import math

import numpy as np

from klcontrol.filters import moving_mean
from klcontrol.setpoints import Constant, Sequence

__all__ = ["NOISE_ROWS", "MEAN_WINDOW", "settled_noise", "design_amplitude", "static_points", "random_binary_levels",
           "beta_schedule", "setpoint_steps"]

#: Rows at the end of a settle run over which its level and noise are measured.
NOISE_ROWS = 1000
#: Window of the moving mean whose NRMSE fit is the headline figure, and over which settled noise is measured.
MEAN_WINDOW = 50


def settled_noise(kl, rows: int = NOISE_ROWS, window: int = MEAN_WINDOW):
    """Noise of a settled KL trace: level, drift and the spread of its ``window``-update mean.

    The last ``rows`` samples are detrended by a straight line (the slow
    drift of a network that is still learning is not noise).

    Returns
    -------
    dict
        ``level`` (mean), ``slope`` (nats per update), ``sigma`` (raw KL),
        ``sigma_mean`` (of the ``window``-update moving mean), ``level_ci``
        (±1.96 standard errors of the level, from ``sigma_mean`` and the number
        of independent windows).
    """
    kl = np.asarray(kl, dtype=float)
    if kl.ndim != 1 or len(kl) < 2 * window:
        raise ValueError(f"need a 1-D KL trace of at least {2 * window} samples, got shape {kl.shape}")
    y = kl[-rows:]
    t = np.arange(len(y), dtype=float)
    slope, icpt = np.polyfit(t, y, 1)
    r = y - (slope * t + icpt)
    m = moving_mean(r, window)
    sm = float(np.std(m))
    half = 1.96 * sm / math.sqrt(max(len(y) // window, 1))
    level = float(np.mean(y))
    return dict(level=level, slope=float(slope), sigma=float(np.std(r)), sigma_mean=sm,
                level_ci=[level - half, level + half], rows=len(y))

def design_amplitude(sigma_mean: float, sensitivity: float, snr: float = 30.0, delta_min: float = 0.1,
                     delta_max: float = 0.5) -> float:
    """Log-amplitude δ of the β excitation: ``clip(snr·σ₅₀/|S|, δ_min, δ_max)``.

    Parameters
    ----------
    sigma_mean : float
        Noise of the 50-update mean KL at the settled state (:func:`settled_noise`).
    sensitivity : float
        ``S = dKL/d ln β`` at β* (nats per e-fold of β), e.g. ``β*·g′(β*)``.
    snr : float
        Wanted ratio of the KL swing to ``sigma_mean``.
    """
    if not (sigma_mean >= 0 and math.isfinite(sigma_mean)) or not (math.isfinite(sensitivity) and sensitivity != 0):
        raise ValueError(f"need sigma_mean ≥ 0 and a non-zero finite sensitivity, got {sigma_mean!r}, {sensitivity!r}")
    return float(min(delta_max, max(delta_min, snr * sigma_mean / abs(sensitivity))))

def static_points(traces, rows: int = NOISE_ROWS, window: int = MEAN_WINDOW):
    """Settled ``(β, KL)`` points with 95 % intervals from constant-β traces.

    Parameters
    ----------
    traces : iterable of (beta, kl) arrays
        Each a run at one constant β (the last ``rows`` rows are used).

    Returns
    -------
    list of dict
        ``beta``, ``level``, ``level_ci``, ``sigma``, ``sigma_mean``, ``slope``.
    """
    out = []
    for beta, kl in traces:
        beta = np.asarray(beta, dtype=float)
        b = beta[-rows:]
        if np.ptp(b) > 1e-12:
            raise ValueError("static_points needs constant-β traces (β varies over the rows used)")
        out.append(dict(beta=float(b[0]), **settled_noise(kl, rows, window)))
    return sorted(out, key=lambda d: d["beta"])

def random_binary_levels(length: int, hold_min: int, hold_max: int, seed: int):
    """A ±1 signal with hold times drawn log-uniformly in ``[hold_min, hold_max]``.

    Parameters
    ----------
    length : int
        Number of samples.
    hold_min, hold_max : int
        Shortest and longest hold (updates), ``1 ≤ hold_min ≤ hold_max``.
    seed : int

    Returns
    -------
    levels : ndarray of ±1, shape ``(length,)``
    holds : list of (sign, n)
        The same signal as runs.
    """
    length, hold_min, hold_max = int(length), int(hold_min), int(hold_max)
    if length < 1 or hold_min < 1 or hold_max < hold_min:
        raise ValueError(f"need length ≥ 1 and 1 ≤ hold_min ≤ hold_max, got {length}, {hold_min}, {hold_max}")
    rng = np.random.default_rng(seed)
    holds, n, sign = [], 0, 1 if rng.random() < 0.5 else -1
    while n < length:
        h = int(round(math.exp(rng.uniform(math.log(hold_min), math.log(hold_max)))))
        h = min(max(hold_min, min(hold_max, h)), length - n)
        holds.append((sign, h))
        n += h
        sign = -sign
    levels = np.concatenate([np.full(h, s, dtype=float) for s, h in holds])
    return levels, holds

def beta_schedule(beta_star: float, delta: float, length: int, lead: int, hold_min: int, hold_max: int, seed: int):
    """Open-loop excitation: ``lead`` updates at β*, then ``β*·exp(±δ)`` (see :func:`random_binary_levels`).

    Returns
    -------
    schedule : klcontrol.Sequence
        β as a function of the update index (for :class:`klcontrol.ScheduledBeta`).
    beta : ndarray ``(lead + length,)``
        The same values as an array.
    """
    if not (beta_star > 0 and math.isfinite(beta_star)):
        raise ValueError(f"beta_star must be positive, got {beta_star!r}")
    if not (0 < delta < 3):
        raise ValueError(f"delta (log-amplitude) must be in (0, 3), got {delta!r}")
    _, holds = random_binary_levels(length, hold_min, hold_max, seed)
    parts = [(Constant(beta_star), int(lead))] if lead else []
    parts += [(Constant(beta_star * math.exp(s * delta)), h) for s, h in holds]
    parts[-1] = (parts[-1][0], None)
    beta = np.concatenate([np.full(n if n is not None else holds[-1][1], sp.c) for sp, n in parts])
    return Sequence(parts), beta

def setpoint_steps(center: float, step: float, hold: int, levels=(0, 1, -1, 0)):
    """Set-point steps ``center + step·level`` each held ``hold`` updates (the last one forever)."""
    parts = [(Constant(center + step * lv), int(hold)) for lv in levels]
    parts[-1] = (parts[-1][0], None)
    return Sequence(parts)
