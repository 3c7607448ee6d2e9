"""Robust stability over an interval of plant slopes g′, with margins.

The plant slope ``g′ = g′(β*)`` moves with the operating point.  The
characteristic polynomial is affine in g′: after the bilinear map,
``q(w; g′) = Q0(w) + g′·Q1(w)``.  A root crosses the unit circle exactly where
``q(iω; g′) = 0`` for a real ω (λ = e^{iθ}, ω = tan(θ/2)) or where the leading
coefficient vanishes (λ = −1).  Real g′ needs
``Re Q0(iω)·Im Q1(iω) − Im Q0(iω)·Re Q1(iω) = 0``, a real polynomial in ω;
its real roots give every crossing value of g′.  Between consecutive crossings
the verdict is constant, so one evaluation per gap decides the whole g′ axis.

Because the loop gain is the product of the controller gains and g′, scaling
``(K_p, K_i)`` by ``s`` is the same as scaling g′ by ``s``; the gain margin
therefore follows from the same crossings.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from klcontrol.analysis.stability.codegen import coefficient_functions
from klcontrol.analysis.stability.config import check_config
from klcontrol.analysis.stability.numeric import is_stable_first_order, spectral_radius_first_order

__all__ = ["Crossing", "RobustStability", "crossings", "stable_gprime_intervals", "robust_stability", "robust_stable_map"]


@dataclass(frozen=True)
class Crossing:
    """A value of g′ where an eigenvalue lies on the unit circle.

    Attributes
    ----------
    gprime : float
        The slope.
    angle : float
        ``arg λ`` of the eigenvalue on the circle, in ``[0, π]`` (0: λ = 1,
        π: λ = −1).
    """

    gprime: float
    angle: float


@dataclass(frozen=True)
class RobustStability:
    """Verdict of :func:`robust_stability`.

    Attributes
    ----------
    stable : bool
        Stable for every g′ in ``[gprime_min, gprime_max]`` (exact: no
        unit-circle crossing inside and stable at one point).
    worst_spectral_radius, worst_gprime : float
        Largest spectral radius over the interval and where it occurs.
    gain_margin : float
        If stable: the largest ``s`` such that ``(s·K_p, s·K_i)`` stays stable
        over the interval for every factor in ``[1, s)`` (``inf`` if
        unbounded).  ``0.0`` when the gains are not robustly stable.
    gain_range : tuple or None
        The open range of factors ``s > 0`` that is robustly stable and
        contains 1 (if stable) or lies nearest to 1; ``None`` if no factor is.
    stable_gprime_range : tuple or None
        The open g′ range of stability containing the interval (if stable) or
        nearest to it; ``None`` if no g′ is stable.
    crossings : tuple of Crossing
        Every g′ (on the whole real line) where an eigenvalue is on the unit
        circle: the boundaries of the stable g′ ranges.
    gprime_min, gprime_max : float
        The interval examined.
    """

    stable: bool
    worst_spectral_radius: float
    worst_gprime: float
    gain_margin: float
    gain_range: tuple | None
    stable_gprime_range: tuple | None
    crossings: tuple
    gprime_min: float
    gprime_max: float

    def to_dict(self) -> dict:
        """JSON-able dict (crossings as lists of dicts)."""
        d = asdict(self)
        d["crossings"] = [asdict(c) for c in self.crossings]
        return d


def _split(kp, ki, a, window, delay, controller):
    """``(Q0, Q1)``: bilinear coefficients (ascending powers of w) at g′⁰ and g′¹."""
    ws = coefficient_functions(controller, window, delay)[2]
    parts = ws(kp, ki, a)
    if any(len(p) > 2 for p in parts):
        raise RuntimeError("characteristic polynomial is not affine in g′")
    q0 = np.array([float(p[0]) for p in parts][::-1])
    q1 = np.array([float(p[1]) if len(p) > 1 else 0.0 for p in parts][::-1])
    return q0, q1


def _on_imaginary_axis(q):
    """Real and imaginary parts of q(iω) as ascending real polynomials in ω."""
    k = np.arange(len(q))
    re = np.where(k % 4 == 0, q, np.where(k % 4 == 2, -q, 0.0))
    im = np.where(k % 4 == 1, q, np.where(k % 4 == 3, -q, 0.0))
    return re, im


#: Above this degree the ω-polynomial of :func:`_affine_crossings` (degree ≈ 2n in the monomial basis) loses
#: its roots to rounding, so a frequency sweep adds candidates (long moving-average windows).
_SWEEP_DEGREE = 12


def _ratio_on_circle(q0, q1, theta):
    """``−Q0(w)/Q1(w)`` at ``w = i·tan(θ/2)``, evaluated without overflow (reversed polynomials for |w| > 1)."""
    P = np.polynomial.polynomial
    w = 1j * np.tan(theta / 2)
    n = max(len(q0), len(q1))
    a0, a1 = np.pad(q0, (0, n - len(q0))), np.pad(q1, (0, n - len(q1)))
    big = np.abs(w) > 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        num = np.where(big, P.polyval(1 / np.where(big, w, 1), a0[::-1]), P.polyval(np.where(big, 1, w), a0))
        den = np.where(big, P.polyval(1 / np.where(big, w, 1), a1[::-1]), P.polyval(np.where(big, 1, w), a1))
        return -num / den


def _sweep_crossings(q0, q1, points: int = 6000):
    """Candidates of :func:`_affine_crossings` from sign changes of ``Im(−Q0/Q1)`` along the unit circle.

    Every bracket is refined at once: vectorised bisection (one evaluation of the ratio per halving for all of
    them, instead of a root finder's calls per bracket; long windows have dozens).
    """
    theta = np.unique(np.r_[np.geomspace(1e-9, 0.5, points), np.linspace(0.5, math.pi - 1e-9, points // 3)])
    r = _ratio_on_circle(q0, q1, theta)
    im, re = r.imag, r.real
    ok = np.isfinite(r)
    idx = np.flatnonzero(ok[:-1] & ok[1:] & (np.sign(im[:-1]) * np.sign(im[1:]) < 0))
    # A sign change through a pole of the ratio is no crossing: its |Im| is large on both sides.
    pole = np.minimum(np.abs(im[idx]), np.abs(im[idx + 1])) > 1e3 * (1 + np.maximum(np.abs(re[idx]), np.abs(re[idx + 1])))
    idx = idx[~pole]
    if not idx.size:
        return []
    lo, hi, s_lo = theta[idx].copy(), theta[idx + 1].copy(), np.sign(im[idx])
    for _ in range(64):  # the bracket halves each time: 2^-64 of ≤ 0.5 is below the spacing of doubles
        mid = 0.5 * (lo + hi)
        live = (mid > lo) & (mid < hi)
        if not live.any():
            break
        s_mid = np.sign(_ratio_on_circle(q0, q1, mid).imag)
        left = (s_mid == s_lo) & live
        lo = np.where(left, mid, lo)
        hi = np.where(~left & live, mid, hi)
    th = 0.5 * (lo + hi)
    g = _ratio_on_circle(q0, q1, th)
    keep = np.isfinite(g.real) & (np.abs(g.imag) <= 1e-6 * (1 + np.abs(g.real)))
    return [(float(v.real), float(t)) for v, t in zip(g[keep], th[keep])]


def _affine_crossings(q0, q1):
    """Candidate ``(p, arg λ)`` where ``Q0(w) + p·Q1(w)`` (ascending coefficients) has a root on the imaginary axis.

    The root ``w = iω`` is ``λ = e^{iθ}`` with ``ω = tan(θ/2)``; a real ``p``
    needs ``Re Q0(iω)·Im Q1(iω) − Im Q0(iω)·Re Q1(iω) = 0``.  A vanishing
    leading coefficient (``w = ∞``) is ``λ = −1``.  For high degrees a
    frequency sweep adds candidates (:func:`_sweep_crossings`).  Unverified, unsorted.
    """
    P = np.polynomial.polynomial
    r0, i0 = _on_imaginary_axis(q0)
    r1, i1 = _on_imaginary_axis(q1)
    d = P.polysub(P.polymul(r0, i1), P.polymul(i0, r1))
    d = np.trim_zeros(d, "b")
    found = []
    if len(d) > 1:
        scale = np.max(np.abs(d))
        d = np.where(np.abs(d) > 1e-14 * scale, d, 0.0)
        d = np.trim_zeros(d, "b")
        roots = P.polyroots(d) if len(d) > 1 else np.array([])
        for om in roots:
            if abs(om.imag) > 1e-6 * (1 + abs(om.real)) or om.real < -1e-12:
                continue
            om = max(om.real, 0.0)
            for _ in range(3):  # polish the real root
                dv, ddv = P.polyval(om, d), P.polyval(om, P.polyder(d))
                if ddv == 0:
                    break
                om = max(om - dv / ddv, 0.0)
            v0 = P.polyval(1j * om, q0)
            v1 = P.polyval(1j * om, q1)
            if abs(v1) == 0:
                continue
            g = -v0 / v1
            if abs(g.imag) > 1e-6 * (1 + abs(g.real)):
                continue
            found.append((g.real, 2 * math.atan(om)))
    if q1[-1] != 0:  # leading coefficient vanishes: root at λ = −1
        found.append((-q0[-1] / q1[-1], math.pi))
    if max(len(q0), len(q1)) - 1 > _SWEEP_DEGREE:
        found += _sweep_crossings(q0, q1)
    return sorted(found)


def crossings(kp, ki, a, window=1, delay=0, controller="incremental"):
    """All g′ at which an eigenvalue of the loop lies on the unit circle.

    Parameters
    ----------
    kp, ki, a : float
        Gains and plant rate.
    window, delay, controller
        Loop configuration.

    Returns
    -------
    tuple of Crossing
        Sorted by g′; each verified (spectral radius 1 within 1e-7 there).
    """
    window, delay, controller = check_config(window, delay, controller)
    kp, ki, a = (float(v) for v in (kp, ki, a))
    if not (math.isfinite(kp) and math.isfinite(ki) and math.isfinite(a) and a > 0):
        raise ValueError("kp, ki must be finite and a finite and > 0")
    return _crossings(kp, ki, a, window, delay, controller)


@lru_cache(maxsize=64)  # robust_stability asks twice (crossings, then the stable intervals)
def _crossings(kp, ki, a, window, delay, controller):
    q0, q1 = _split(kp, ki, a, window, delay, controller)
    found = _affine_crossings(q0, q1)
    out = []
    for g, ang in sorted(found):
        if not math.isfinite(g):
            continue
        rho = spectral_radius_first_order(kp, ki, a, g, window, delay, controller)
        if abs(rho - 1) > 1e-7:
            continue
        if out and abs(out[-1].gprime - g) <= 1e-9 * (1 + abs(g)) and abs(out[-1].angle - ang) < 1e-6:
            continue
        out.append(Crossing(float(g) + 0.0, float(ang)))  # + 0.0 turns -0.0 into 0.0
    return tuple(out)


def _probe(lo, hi):
    """A point strictly inside (lo, hi), which may be unbounded."""
    if math.isinf(lo) and math.isinf(hi):
        return 0.0
    if math.isinf(lo):
        return hi - 1 - abs(hi)
    if math.isinf(hi):
        return lo + 1 + abs(lo)
    return 0.5 * (lo + hi)


def stable_gprime_intervals(kp, ki, a, window=1, delay=0, controller="incremental"):
    """The open g′ intervals on which the loop is stable.

    Returns
    -------
    list of (float, float)
        Disjoint, sorted; bounds may be ``±inf``.
    """
    cr = sorted({c.gprime for c in crossings(kp, ki, a, window, delay, controller)})
    edges = [-math.inf] + cr + [math.inf]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        # A crossing point itself is never stable, so neighbouring stable gaps stay separate.
        if hi > lo and is_stable_first_order(kp, ki, a, _probe(lo, hi), window, delay, controller):
            out.append((lo, hi))
    return out


def _robust_at(s, cr, gmin, gmax, kp, ki, a, cfg):
    lo, hi = s * gmin, s * gmax
    if any(lo <= c <= hi for c in cr):
        return False
    return is_stable_first_order(kp, ki, a, 0.5 * (lo + hi), *cfg)


def _worst(kp, ki, a, gmin, gmax, cfg, points=257):
    if gmin == gmax:
        return spectral_radius_first_order(kp, ki, a, gmin, *cfg), gmin
    from scipy.optimize import minimize_scalar

    g = np.linspace(gmin, gmax, points)
    r = spectral_radius_first_order(kp, ki, a, g, *cfg)
    i = int(np.argmax(r))
    lo, hi = g[max(i - 1, 0)], g[min(i + 1, points - 1)]
    res = minimize_scalar(lambda x: -spectral_radius_first_order(kp, ki, a, x, *cfg), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-12 * (1 + abs(g[i]))})
    if -res.fun > r[i]:
        return float(-res.fun), float(res.x)
    return float(r[i]), float(g[i])


def robust_stability(kp, ki, a, gprime_min, gprime_max=None, window=1, delay=0, controller="incremental"):
    """Decide stability for every g′ in ``[gprime_min, gprime_max]`` and report margins.

    Parameters
    ----------
    kp, ki : float
        Gains.
    a : float
        Plant rate, > 0.
    gprime_min, gprime_max : float
        Interval of plant slopes (e.g. from a fitted g over a β range); a
        single value if ``gprime_max`` is omitted.  Order does not matter.
    window, delay, controller
        Loop configuration (see :func:`klcontrol.analysis.stability.is_stable`).

    Returns
    -------
    RobustStability

    Raises
    ------
    ValueError
        For non-finite input or ``a ≤ 0``.
    """
    cfg = check_config(window, delay, controller)
    vals = [float(v) for v in (kp, ki, a, gprime_min, gprime_min if gprime_max is None else gprime_max)]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"kp, ki, a, gprime_min, gprime_max must be finite, got {vals}")
    kp, ki, a, g1, g2 = vals
    if a <= 0:
        raise ValueError(f"a must be > 0, got {a}")
    gmin, gmax = min(g1, g2), max(g1, g2)
    cr_objs = crossings(kp, ki, a, *cfg)
    cr = sorted({c.gprime for c in cr_objs})
    intervals = stable_gprime_intervals(kp, ki, a, *cfg)

    stable = _robust_at(1.0, cr, gmin, gmax, kp, ki, a, cfg)
    worst, worst_g = _worst(kp, ki, a, gmin, gmax, cfg)

    g_range = None
    if intervals:
        mid = 0.5 * (gmin + gmax)

        def dist(iv):
            lo, hi = iv
            return 0.0 if lo <= mid <= hi else min(abs(mid - lo), abs(mid - hi))

        g_range = min(intervals, key=dist)

    # Factors s at which an end of s·[gmin, gmax] meets a crossing split (0, ∞).
    cand = sorted({c / e for c in cr for e in (gmin, gmax) if e != 0 and c / e > 0})
    edges = [0.0] + cand + [math.inf]
    ranges = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        s = _probe(lo, hi) if math.isfinite(hi) else (lo + 1) * 2
        if _robust_at(s, cr, gmin, gmax, kp, ki, a, cfg):
            ranges.append((lo, hi))
    gain_range = None
    if ranges:
        gain_range = min(ranges, key=lambda r: 0.0 if r[0] < 1 < r[1] else min(abs(math.log(max(r[0], 1e-300))),
                                                                                   abs(math.log(r[1]))))
    gain_margin = gain_range[1] if (stable and gain_range is not None) else 0.0
    return RobustStability(
        stable=bool(stable),
        worst_spectral_radius=float(worst),
        worst_gprime=float(worst_g),
        gain_margin=float(gain_margin),
        gain_range=gain_range,
        stable_gprime_range=g_range,
        crossings=cr_objs,
        gprime_min=gmin,
        gprime_max=gmax,
    )



def _hurwitz(c):
    """Batched Hurwitz matrices ``(m, n, n)`` of ``Σ c_k w^(n−k)`` (``c``: ``(m, n + 1)``, highest power first)."""
    m, n = c.shape[0], c.shape[1] - 1
    H = np.zeros((m, n, n))
    for i in range(n):
        for j in range(n):
            k = 2 * (j + 1) - (i + 1)
            if 0 <= k <= n:
                H[:, i, j] = c[:, k]
    return H


def _segment_hurwitz(q0, q1):
    """Whether every polynomial of the segment ``(1 − t)·q0 + t·q1``, ``t ∈ [0, 1]``, is Hurwitz, given that both
    ends are (rows of ``(m, n + 1)`` coefficients, highest power first; Białas' eigenvalue test)."""
    ok = (q0[:, 0] > 0) & (q1[:, 0] > 0)
    if q0.shape[1] <= 2:  # degree ≤ 1: one root, which moves along the real axis between two stable ends
        return ok
    ev = np.linalg.eigvals(np.linalg.solve(_hurwitz(q0), _hurwitz(q1)))
    neg_real = (np.abs(ev.imag) <= 1e-9 * np.maximum(np.abs(ev), 1e-300)) & (ev.real < 0)
    return ok & ~neg_real.any(axis=1)


def robust_stable_map(kp, ki, a, gprime_min, gprime_max, window=1, delay=0, controller="incremental"):
    """Whether each gain pair is stable for every g′ in ``[gprime_min, gprime_max]``: a robust map.

    The verdict of :func:`robust_stability` (``.stable``) over arrays of gains, without its margins. Scaling g′ by
    ``s`` scales the gain part of the bilinear-mapped polynomial, ``q(w; g′) = Q0(w) + g′·(Kp·Qp(w) + Ki·Qi(w))``,
    so over the interval a pair's polynomials form the segment between its two end polynomials. A segment of
    Hurwitz polynomials is Hurwitz throughout unless the Hurwitz determinant of some interior member vanishes
    (a root on the imaginary axis, or a pair ±r of which one is unstable); ``det((1 − t)H₀ + tH₁) = 0`` for
    ``t ∈ (0, 1)`` exactly when ``H₀⁻¹H₁`` has a negative real eigenvalue (Białas, 1985). So: both ends stable
    (the compiled or NumPy Routh–Hurwitz test), the leading coefficient positive at both ends (it is affine in g′:
    no root passes through λ = −1), and no negative real eigenvalue of ``H₀⁻¹H₁``.

    Parameters
    ----------
    kp, ki : float or array
        Gains, broadcast together.
    a : float
        Plant rate, > 0.
    gprime_min, gprime_max : float
        The interval of g′ (order does not matter).
    window, delay, controller
        Loop configuration (see :func:`klcontrol.analysis.stability.is_stable`).

    Returns
    -------
    bool or ndarray of bool
        Numerical: a pair within rounding of the robust boundary may go either way.
    """
    cfg = check_config(window, delay, controller)
    vals = [float(v) for v in (a, gprime_min, gprime_max)]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"a, gprime_min, gprime_max must be finite, got {vals}")
    a, g1, g2 = vals
    if a <= 0:
        raise ValueError(f"a must be > 0, got {a}")
    g1, g2 = min(g1, g2), max(g1, g2)
    ends = [is_stable_first_order(kp, ki, a, g, *cfg) for g in (g1, g2)]
    both = np.logical_and(*ends)
    if g1 == g2 or not np.any(both):
        return both
    shape = np.shape(both)
    kpf, kif = (np.broadcast_to(np.asarray(v, dtype=float), shape).reshape(-1) for v in (kp, ki))
    out = np.asarray(both).reshape(-1).copy()
    idx = np.flatnonzero(out)
    w = coefficient_functions(cfg[2], cfg[0], cfg[1])[0]
    block = 1 << 15
    for s in range(0, idx.size, block):
        i = idx[s:s + block]
        with np.errstate(over="ignore", invalid="ignore"):
            q = [np.stack([np.broadcast_to(np.asarray(c, dtype=float), i.shape) for c in w(kpf[i], kif[i], a, g)],
                          axis=1) for g in (g1, g2)]
        out[i] = _segment_hurwitz(*q)
    out = out.reshape(shape)
    return bool(out) if out.ndim == 0 else out
