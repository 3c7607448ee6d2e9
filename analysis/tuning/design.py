"""Gain design: Kp, Ki from a (fitted) plant that are robustly stable, fast and quiet.

The linearised loop around the equilibrium ``m = C`` is the one the stability
analysis builds by running the controller's laws on symbols
(:func:`klcontrol.analysis.stability.control.linear_matrices`); the tests check it
against the hand derivation (plant ``b·z/(z − r)``, controller
``((Kp/4 + Ki)·z − Kp/4)/(z·(z − 1))``, moving average and delay).  The noise gain is
the H2 norm of ``n → β`` (the standard deviation of β per unit of white KL
measurement noise, in steady state); stability and the worst-case decay rate
come from :mod:`klcontrol.analysis.stability` (exact, over the whole g′ interval).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from klcontrol.papers import DYNAMICVAE_GAINS

__all__ = ["GainFigures", "TuneResult", "loop_transfer_functions", "noise_gain", "gain_figures", "tune", "PAPER_GAINS"]

#: The DynamicVAE paper's hand-picked gains (:data:`klcontrol.papers.DYNAMICVAE_GAINS`).
PAPER_GAINS = DYNAMICVAE_GAINS


def _check_bound(name, v):
    """A design bound: a number ≥ 0 (``inf`` = no bound); NaN would silently accept every candidate."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number ≥ 0, got {v!r}") from None
    if not f >= 0:  # also NaN
        raise ValueError(f"{name} must be a number ≥ 0 (inf: no bound), got {v!r}")
    return f


def _check_plant(a, gprime):
    a = float(a)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"plant rate a must be finite and > 0, got {a!r}")
    lo, hi = (gprime, gprime) if np.ndim(gprime) == 0 else tuple(gprime)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"g′ range must be finite, got {gprime!r}")
    if lo > hi:
        raise ValueError(f"g′ range is empty: min {lo} > max {hi}")
    if hi >= 0:
        raise ValueError(f"g′ must be < 0 (g decreasing in β) over the whole range, got [{lo}, {hi}]")
    return a, lo, hi


def _loop_polynomials(kp, ki, a, gprime, window: int = 1, delay: int = 0, controller: str = "incremental") -> dict:
    """Numerator/denominator coefficients in powers of ``q = z⁻¹`` (``scipy.signal.lfilter`` order).

    From the loop built by running the laws on symbols
    (:func:`klcontrol.analysis.stability.control.linear_matrices`), never from a hand
    derivation: ``noise_to_beta`` is KL measurement noise → β, ``setpoint_to_kl``
    is C → y.
    """
    from scipy.signal import ss2tf

    from klcontrol.analysis.stability.control import linear_matrices, state_names

    A, B, C, _ = linear_matrices(kp, ki, a, gprime, window, delay, controller)
    names = state_names(window, delay, controller)
    c_beta = np.zeros((1, A.shape[0]))
    c_beta[0, names.index("beta")] = 1.0
    out = {}
    for name, (col, row) in {"noise_to_beta": (1, c_beta), "setpoint_to_kl": (0, C)}.items():
        num, den = ss2tf(A, B[:, [col]], row, np.zeros((1, 1)))
        num, den = np.trim_zeros(np.atleast_1d(num[0]), "b"), np.trim_zeros(np.atleast_1d(den), "b")
        out[name] = (num if len(num) else np.zeros(1), den)
    return out


def loop_transfer_functions(kp, ki, a, gprime, window: int = 1, delay: int = 0,
                            controller: str = "incremental") -> dict:
    """python-control transfer functions (dt = 1) of the linearised loop.

    Parameters
    ----------
    kp, ki : float
        Gains.
    a, gprime : float
        Plant rate and slope ``g′(β*)`` at the operating point.
    window : int
        Moving-average window T.
    delay : {0, 1}
        Measurement delay d.
    controller : str
        Linearisable controller kind (:data:`klcontrol.registry.LINEAR_KINDS`).

    Returns
    -------
    dict
        ``noise_to_beta`` (KL measurement noise → β) and ``setpoint_to_kl`` (C → y).
    """
    import control

    out = {}
    for name, (num, den) in _loop_polynomials(kp, ki, a, gprime, window, delay, controller).items():
        n = max(len(num), len(den))
        out[name] = control.tf(np.r_[num, np.zeros(n - len(num))], np.r_[den, np.zeros(n - len(den))], 1)
    return out


def _horizon(num, den, cap=2_000_000):
    rho = float(np.max(np.abs(1.0 / np.roots(den[::-1])))) if len(den) > 1 else 0.0
    if not rho < 1:
        return None
    return int(min(cap, max(200, math.log(1e-12) / math.log(max(rho, 1e-300)))))


def noise_gain(kp, ki, a, gprime, window: int = 1, delay: int = 0, controller: str = "incremental") -> float:
    """H2 norm of KL-measurement-noise → β for the linearised loop (``inf`` if unstable).

    Returns
    -------
    float
        ``sqrt(Σ h_k²)`` of the impulse response ``h`` of ``n → β``.
    """
    from scipy.signal import lfilter

    num, den = _loop_polynomials(kp, ki, a, gprime, window, delay, controller)["noise_to_beta"]
    n = _horizon(num, den)
    if n is None:
        return math.inf
    imp = np.zeros(n)
    imp[0] = 1.0
    return float(np.sqrt(np.sum(lfilter(num, den, imp) ** 2)))


def _linear_overshoot(kp, ki, a, gprime, window, delay, controller="incremental"):
    from scipy.signal import lfilter

    num, den = _loop_polynomials(kp, ki, a, gprime, window, delay, controller)["setpoint_to_kl"]
    n = _horizon(num, den)
    if n is None:
        return math.inf
    y = lfilter(num, den, np.ones(n))
    return float(max(0.0, y.max() - 1.0))


@dataclass
class GainFigures:
    """Predicted figures of a gain pair on a plant, worst case over the g′ range.

    Attributes
    ----------
    kp, ki : float
        The gains.
    robust : bool
        Stable for every g′ in the range (exact, :func:`klcontrol.analysis.stability.robust_stability`).
    worst_spectral_radius : float
        Largest pole modulus over the range.
    settling_steps : float
        Steps for the slowest mode to decay to 2 %: ``ln 0.02 / ln ρ``.
    overshoot : float
        Largest overshoot of the linear unit step response of C → KL (fraction).
    noise_gain : float
        Largest H2 gain from KL measurement noise to β.
    gain_margin : float
        Factor by which (Kp, Ki) can be scaled together and stay stable.
    """

    kp: float
    ki: float
    robust: bool
    worst_spectral_radius: float
    settling_steps: float
    overshoot: float
    noise_gain: float
    gain_margin: float

    def to_dict(self) -> dict:
        """Plain dict."""
        return asdict(self)


def _settling(rho, tol=0.02):
    if not rho < 1:
        return math.inf
    return math.log(tol) / math.log(rho) if rho > 0 else 1.0


def _gprime_grid(lo, hi, n):
    return np.array([lo]) if lo == hi else np.linspace(lo, hi, n)


def gain_figures(kp, ki, a, gprime, window: int = 1, delay: int = 0, controller: str = "incremental",
                 n_gprime: int = 9) -> GainFigures:
    """Predicted figures of ``(kp, ki)`` on a plant with g′ in a range.

    Parameters
    ----------
    kp, ki : float
        Gains.
    a : float
        Plant rate, > 0.
    gprime : float or (float, float)
        Slope, or the interval ``(g′min, g′max)`` the schedule visits.
    window, delay : int
        Filter window and measurement delay.
    controller : {"incremental", "positional"}
        Controller whose linearisation is analysed (both coincide).
    n_gprime : int
        g′ samples for the noise gain and overshoot (the spectral radius and
        the stability verdict are exact over the interval).

    Returns
    -------
    GainFigures
    """
    from klcontrol.analysis import stability

    a, lo, hi = _check_plant(a, gprime)
    rv = stability.robust_stability(kp, ki, a, lo, hi, window=window, delay=delay, controller=controller)
    gs = _gprime_grid(lo, hi, n_gprime)
    rho = float(np.max(stability.spectral_radius(np.full(gs.shape, kp), np.full(gs.shape, ki), a, gs,
                                                 window=window, delay=delay, controller=controller)))
    rho = max(rho, float(rv.worst_spectral_radius))
    settle = _settling(rho)
    if rv.stable:
        ng = max(noise_gain(kp, ki, a, g, window, delay, controller) for g in gs)
        ov = max(_linear_overshoot(kp, ki, a, g, window, delay, controller) for g in gs[[0, -1]])
    else:
        ng, ov = math.inf, math.inf
    return GainFigures(float(kp), float(ki), bool(rv.stable), rho, settle, ov, ng, float(rv.gain_margin))


@dataclass
class TuneResult:
    """Recommended gains with their predicted figures and those of reference gains.

    Attributes
    ----------
    kp, ki : float
        Recommended gains.
    figures : GainFigures
        Their predicted figures.
    references : dict
        Name → :class:`GainFigures` of the gains compared against (the paper's by default).
    a, gprime_range, window, delay, objective : ...
        The problem solved.
    """

    kp: float
    ki: float
    figures: GainFigures
    references: dict = field(default_factory=dict)
    a: float = 0.0
    gprime_range: tuple = (0.0, 0.0)
    window: int = 1
    delay: int = 0
    objective: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {
            "kp": self.kp, "ki": self.ki, "figures": self.figures.to_dict(),
            "references": {k: v.to_dict() for k, v in self.references.items()},
            "a": self.a, "gprime_range": list(self.gprime_range), "window": self.window, "delay": self.delay,
            "objective": self.objective,
        }

    def table(self) -> str:
        """A plain-text side-by-side table of the tuned and reference gains."""
        rows = [("tuned", self.figures)] + list(self.references.items())
        head = f"{'gains':>10} {'Kp':>10} {'Ki':>10} {'robust':>7} {'ρ worst':>10} {'settle(2%)':>11} {'overshoot':>10} {'noise→β':>9}"
        lines = [head]
        for name, f in rows:
            lines.append(
                f"{name:>10} {f.kp:10.4g} {f.ki:10.4g} {str(f.robust):>7} {f.worst_spectral_radius:10.6f} "
                f"{f.settling_steps:11.0f} {100 * f.overshoot:9.2f}% {f.noise_gain:9.4g}"
            )
        return "\n".join(lines)


def tune(plant=None, *, a=None, gprime=None, window: int = 1, delay: int = 0, controller: str = "incremental",
         settling: float | None = None, max_overshoot: float = 0.05, max_noise_gain: float | None = None,
         compare: dict | None = None, grid: int = 41, n_gprime: int = 9,
         max_candidates: int = 150) -> TuneResult:
    """Choose Kp, Ki for a plant: robustly stable over the g′ range, fast and quiet.

    Objective: minimise the noise gain (β noise per unit of KL measurement
    noise) subject to a worst-case 2 % settling time ≤ ``settling`` steps and a
    linear step overshoot ≤ ``max_overshoot``.  Without ``settling`` the
    target is the settling time of the fastest reference gains (by default the
    paper's), so the result is strictly faster than the paper's gains, with
    bounded overshoot, and as quiet as possible.  With no references and no
    target, minimise the worst-case spectral radius under the overshoot and
    ``max_noise_gain`` bounds instead.

    Parameters
    ----------
    plant : FirstOrderPlant or fit result, optional
        Convenience form: ``a`` from the plant and the g′ range from its
        ``gprime_range`` (fit results) or from g′ over ``beta_range`` attributes.
    a : float
        Plant rate (low-level form).
    gprime : float or (float, float)
        g′ at the operating point, or the interval the schedule visits.
    window, delay : int
        Filter window T and measurement delay d.
    controller : {"incremental", "positional"}
        Controller type (same linearisation).
    settling : float, optional
        Target worst-case 2 % settling time in steps.
    max_overshoot : float
        Largest allowed linear step overshoot (fraction).
    max_noise_gain : float, optional
        Largest allowed H2 noise gain (default: none).
    compare : dict, optional
        Name → (Kp, Ki) of gains to report side by side (default: the paper's).
    grid : int
        Points per axis of the log-spaced search grid.
    max_candidates : int
        Most grid candidates whose overshoot and noise gain are evaluated.
    n_gprime : int
        g′ samples used in the search.

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        For a plant with a ≤ 0, an empty or non-negative g′ range, or targets
        no gains on the grid can meet (the message says which constraint binds).
    """
    from klcontrol.analysis import stability

    if plant is not None:
        a = getattr(plant, "a", a)
        if gprime is None:
            if hasattr(plant, "gprime_range") and not callable(plant.gprime_range):
                gprime = plant.gprime_range
            elif hasattr(plant, "gprime_range"):
                gprime = plant.gprime_range()
            else:
                raise ValueError("give gprime=(g′min, g′max) for a plant without a fitted g′ range")
    if a is None or gprime is None:
        raise ValueError("tune needs a plant (or fit), or both a= and gprime=")
    a, lo, hi = _check_plant(a, gprime)
    if settling is not None and not settling > 0:
        raise ValueError(f"settling must be > 0 steps, got {settling!r}")
    max_overshoot = _check_bound("max_overshoot", max_overshoot)
    if max_noise_gain is not None:
        max_noise_gain = _check_bound("max_noise_gain", max_noise_gain)
    compare = {"paper": PAPER_GAINS} if compare is None else dict(compare)
    refs = {name: gain_figures(kp, ki, a, (lo, hi), window, delay, controller, n_gprime)
            for name, (kp, ki) in compare.items()}
    if max_noise_gain is None:
        max_noise_gain = math.inf

    gs = _gprime_grid(lo, hi, n_gprime)
    # Log grid reaching well beyond the paper's gains in both directions; the loop gain scales with a·|g′|.
    scale = 1.0 / (a * abs(hi) + 1e-300)
    kps = np.geomspace(1e-6, 4.0 * scale, grid)
    kis = np.geomspace(1e-8, 2.0 * scale, grid)
    KP, KI = np.meshgrid(kps, kis, indexing="ij")
    rho = np.zeros(KP.shape)
    for g in gs:
        rho = np.maximum(rho, stability.spectral_radius(KP, KI, a, np.full(KP.shape, g), window=window,
                                                        delay=delay, controller=controller))
    settle_grid = np.vectorize(_settling)(rho)
    if settling is None and refs:
        ref_settle = min(f.settling_steps for f in refs.values())
        if math.isfinite(ref_settle):
            settling = ref_settle * (1 - 1e-9)
    ends = gs[[0, -1]]
    best, why = None, "no gain pair on the grid is stable over the whole g′ range"
    if settling is not None:
        # Quietest gains among those at least as fast as the target.
        ok = np.flatnonzero(settle_grid.ravel() <= settling)
        if not len(ok):
            fastest = float(np.min(settle_grid))
            raise ValueError(f"infeasible targets: no stable gains settle within {settling:.0f} steps on this plant "
                             f"(fastest on the grid: {fastest:.0f})")
        # Noise grows with the gains: scan from the smallest Kp, and stop after a bounded number of candidates.
        ok = ok[np.lexsort((KI.flat[ok], KP.flat[ok]))][:max_candidates]
        why = f"overshoot bound {max_overshoot} not met by gains that settle within {settling:.0f} steps"
        for idx in ok:
            kp, ki = float(KP.flat[idx]), float(KI.flat[idx])
            if max(_linear_overshoot(kp, ki, a, g, window, delay, controller) for g in ends) > max_overshoot:
                continue
            ng = max(noise_gain(kp, ki, a, g, window, delay, controller) for g in ends)
            if ng <= max_noise_gain and (best is None or ng < best[2]):
                best = (kp, ki, ng)
    else:
        # Fastest worst-case decay under the overshoot and noise bounds.
        for idx in np.argsort(rho, axis=None)[:max_candidates]:
            if not rho.flat[idx] < 1:
                break
            kp, ki = float(KP.flat[idx]), float(KI.flat[idx])
            if max(_linear_overshoot(kp, ki, a, g, window, delay, controller) for g in ends) > max_overshoot:
                why = f"overshoot bound {max_overshoot} not met by the fastest candidates"
                continue
            if max(noise_gain(kp, ki, a, g, window, delay, controller) for g in ends) > max_noise_gain:
                why = f"noise-gain bound {max_noise_gain:.4g} not met by the fastest candidates"
                continue
            best = (kp, ki)
            break
    if best is None:
        raise ValueError(f"infeasible targets: {why}")
    kp, ki = best[0], best[1]
    fig = gain_figures(kp, ki, a, (lo, hi), window, delay, controller, n_gprime)
    if not fig.robust:
        raise ValueError("the best grid candidate failed the exact robust check; refine the grid")
    objective = (f"min noise gain s.t. settling ≤ {settling:.0f} steps, overshoot ≤ {max_overshoot}" if settling
                 else f"min worst-case spectral radius s.t. noise gain ≤ {max_noise_gain:.4g}, overshoot ≤ {max_overshoot}")
    return TuneResult(kp, ki, fig, refs, a, (lo, hi), int(window), int(delay), objective)
