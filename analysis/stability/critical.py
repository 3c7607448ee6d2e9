"""The critical gain on a ray ``Kp = r·Ki``: where the linearised loop turns unstable, and the period it rings at.

At the critical ``Ki`` the dominant closed-loop eigenvalue crosses the unit circle at ``e^{±iθ}``; the loop then
oscillates with a period of ``2π/θ`` updates (θ = π: a period-2 flip; θ = 0: a real root at +1, no oscillation).
That period is what a real run at that gain shows, so it is a second, independent check of a plant model against
real runs (docs/your_vae.md).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from klcontrol.analysis.stability.api import eigenvalues, spectral_radius

__all__ = ["CriticalGain", "critical_gain", "controller_response", "critical_gain_from_response"]


@dataclass(frozen=True)
class CriticalGain:
    """Where the loop turns unstable on one ray.

    Attributes
    ----------
    ratio : float
        ``r`` of the ray ``Kp = r·Ki``.
    ki, kp : float
        The critical gains (``kp = ratio·ki``).
    period : float
        Oscillation period (updates) of the eigenvalue crossing there; ``inf`` for a real crossing at +1.
    """

    ratio: float
    ki: float
    kp: float
    period: float

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return {k: (v if math.isfinite(v) else None) for k, v in asdict(self).items()}


def critical_gain(ratio, *, a=None, gprime=None, plant=None, setpoint=None, window: int = 1, delay: int = 0,
                  controller: str = "incremental", ki_min: float = 1e-4, ki_max: float = 100.0,
                  n: int = 400) -> CriticalGain | None:
    """The smallest ``Ki > 0`` on the ray ``Kp = ratio·Ki`` where the loop is no longer stable, and its period.

    Parameters
    ----------
    ratio : float
        ``Kp/Ki`` of the ray (0: the integral-only ray).
    a, gprime : float, optional
        First-order plant (rate and slope ``g′(β*) < 0``).
    plant, setpoint : optional
        Any plant of :func:`klcontrol.analysis.stability.is_stable` (``plant=``), linearised at ``setpoint``.
    window, delay, controller
        Loop configuration.
    ki_min, ki_max, n
        Log-spaced search grid; the first crossing on it is refined by bisection on the spectral radius.

    Returns
    -------
    CriticalGain or None
        ``None`` when the loop stays stable on the whole grid, or is unstable already at ``ki_min``.
    """
    from scipy.optimize import brentq

    ratio = float(ratio)
    if not math.isfinite(ratio):
        raise ValueError(f"the ray's ratio Kp/Ki must be finite, got {ratio!r}")
    if not (0 < ki_min < ki_max and math.isfinite(ki_max)):
        raise ValueError(f"need 0 < ki_min < ki_max < inf, got {ki_min!r}, {ki_max!r}")
    kw = dict(a=a, gprime=gprime, window=window, delay=delay, controller=controller)
    if plant is not None:
        kw.update(plant=plant, setpoint=setpoint)

    def rho(k):
        return np.asarray(spectral_radius(ratio * k, k, **kw), dtype=float)

    ks = np.geomspace(ki_min, ki_max, int(n))
    r = rho(ks)
    if not np.all(np.isfinite(r)):
        raise ValueError("the spectral radius is not finite on this ray (check a and g′)")
    if r[0] >= 1:
        return None
    idx = np.flatnonzero((r[:-1] < 1) & (r[1:] >= 1))
    if not len(idx):
        return None
    i = int(idx[0])
    ki = float(brentq(lambda k: float(rho(k)) - 1.0, ks[i], ks[i + 1], xtol=1e-12, rtol=1e-10))
    lam = np.asarray(eigenvalues(ratio * ki, ki, **kw)).reshape(-1)
    dom = lam[np.argmax(np.abs(lam))]
    theta = abs(math.atan2(dom.imag, dom.real))
    period = 2 * math.pi / theta if theta > 1e-9 else math.inf
    return CriticalGain(ratio=ratio, ki=ki, kp=ratio * ki, period=period)


def controller_response(freqs, kp, ki, window: int = 1, delay: int = 0, controller: str = "incremental"):
    """Frequency response ``K(e^{2πif})`` of the linearised controller and filter, measured KL → β.

    From :func:`klcontrol.analysis.stability.lti.controller_linearization` (the laws themselves); ``NaN`` at
    ``f = 0``, the integrator's pole.
    """
    from klcontrol.analysis.stability.lti import controller_linearization

    cl = controller_linearization(window, delay, controller)
    A = cl.A0 + kp * cl.A_kp + ki * cl.A_ki
    B = (cl.B0 + kp * cl.B_kp + ki * cl.B_ki)[:, :1]
    n = A.shape[0]
    out = np.full(len(freqs), np.nan, dtype=complex)
    for i, f in enumerate(np.asarray(freqs, dtype=float)):
        if f > 0:
            out[i] = (cl.C @ np.linalg.solve(np.exp(2j * np.pi * f) * np.eye(n) - A, B)).item()
    return out


def critical_gain_from_response(freqs, response, ratio, *, window: int = 1, delay: int = 0,
                                controller: str = "incremental", controller_values=None) -> CriticalGain | None:
    """The critical gain on a ray from a plant's measured frequency response (no parametric model).

    The loop turns unstable where ``Ki·K₁(ω)·P(ω)`` reaches ``1``, with ``K₁`` the controller at ``Ki = 1`` on the
    ray (the law is linear in the gains) and ``P`` the plant β → KL: at each crossing of the positive real axis
    by ``K₁P`` the critical ``Ki`` is ``1/Re(K₁P)``; the smallest wins (Nyquist, for a plant that is stable in
    open loop, as a settled VAE is). Between grid points the crossing is interpolated linearly.

    Parameters
    ----------
    freqs : array
        Frequencies (cycles per update, in (0, 0.5]).
    response : array of complex
        ``P(e^{2πif})``, e.g. :func:`klcontrol.analysis.identification.frequency.frequency_response`.
    ratio, window, delay, controller
        As :func:`critical_gain`.
    controller_values : array of complex, optional
        :func:`controller_response` at ``freqs`` on the ray with ``Ki = 1``, when already computed (many plants,
        one controller).

    Returns
    -------
    CriticalGain or None
    """
    f = np.asarray(freqs, dtype=float)
    k1 = controller_values if controller_values is not None else controller_response(f, float(ratio), 1.0, window,
                                                                                       delay, controller)
    L = np.asarray(k1, dtype=complex) * np.asarray(response, dtype=complex)
    a, b = L[:-1], L[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        cross = np.isfinite(a) & np.isfinite(b) & (np.sign(a.imag) != np.sign(b.imag))
        w = a.imag / (a.imag - b.imag)
        re = a.real + w * (b.real - a.real)
    ok = np.flatnonzero(cross & (re > 0))
    if not len(ok):
        return None
    i = int(ok[np.argmin(1.0 / re[ok])])  # the smallest critical gain wins (the first ki in index order on ties)
    ki = 1.0 / float(re[i])
    fr = f[i] + float(w[i]) * (f[i + 1] - f[i])
    return CriticalGain(ratio=float(ratio), ki=float(ki), kp=float(ratio) * float(ki), period=float(1 / fr))
