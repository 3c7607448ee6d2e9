"""Identify the first-order KL plant from training traces.

The model (docs/design.md, DynamicVAE Eq. 14), row ``t`` holding ``β(t)`` and the
KL ``y(t)`` after update ``t``::

    y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t))

:func:`fit_plant` estimates ``a`` and ``g`` by *simulation-error* least
squares: each trace is simulated from its own initial KL ``y(−1)`` (a free
parameter per trace) with its recorded β sequence, and the residuals
``(kl − ŷ)/scale`` are minimised with :func:`scipy.optimize.least_squares`
(analytic Jacobian; ``scale`` is a running median of ``|kl|``, because
minibatch KL noise is roughly proportional to the KL).  Because the
measurement noise does not enter the simulated output, the estimate stays
consistent on closed-loop traces, where β depends on past noise.

Two steady-state models: ``ExpGain`` ``A·exp(−kβ)`` (the papers') and
:class:`MonotoneSplineGain`, a cubic B-spline with non-increasing
coefficients (monotone decreasing, continuous ``g′``) on the β range seen.
``g="auto"`` chooses by BIC.  Confidence intervals come from a moving-block
bootstrap of the residuals.  ``g`` is identified only over the β values the
traces visit: open-loop runs at fixed β tell ``g`` at those β values only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from klcontrol import ExpGain, FirstOrderPlant, Gain, Trace
from klcontrol.backend import is_sympy
from klcontrol.plant import gain_from_dict, register_gain

from .trace_io import align_kl, read_trace

__all__ = ["fit_plant", "read_trace", "PlantFit", "MonotoneSplineGain", "rise_time_a", "simulate_plant", "GAIN_MODELS",
           "read_plant_json", "read_json", "plant_from_dict"]

#: Steady-state models :func:`fit_plant` knows (``"auto"`` picks one of them by BIC).
GAIN_MODELS = ("exp", "spline")

_A_GRID = 32  # log-spaced trial values of a in the initial variable-projection search


# -- the non-parametric gain ----------------------------------------------------------------------------------


@register_gain
class MonotoneSplineGain(Gain):
    """Monotone decreasing cubic B-spline ``g(β)`` on ``[beta_lo, beta_hi]``.

    Non-increasing, non-negative B-spline coefficients make ``g`` decreasing
    and ≥ 0 with a continuous derivative.  Outside the range ``g`` continues
    linearly with the end slope, floored at 0 (``g′ = 0`` there): an
    extrapolation, not a measurement.

    Parameters
    ----------
    beta_lo, beta_hi : float
        Range of the knots (the β range seen by the fit), ``beta_lo < beta_hi``.
    coef : sequence of float
        B-spline coefficients, non-increasing and ≥ 0; ``len(coef) − 3``
        equal segments.
    """

    kind = "monotone_spline"
    degree = 3

    def __init__(self, beta_lo, beta_hi, coef):
        lo, hi = float(beta_lo), float(beta_hi)
        c = np.asarray(coef, dtype=float)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"need finite beta_lo < beta_hi, got {beta_lo!r}, {beta_hi!r}")
        if c.ndim != 1 or len(c) < self.degree + 1 or not np.all(np.isfinite(c)):
            raise ValueError(f"coef must be ≥ {self.degree + 1} finite numbers, got {coef!r}")
        tol = 1e-9 * max(1.0, float(np.abs(c).max()))
        if np.any(np.diff(c) > tol) or c[-1] < -tol:
            raise ValueError("coef must be non-increasing and ≥ 0 (a decreasing, non-negative g)")
        self.beta_lo, self.beta_hi = lo, hi
        self.coef = np.maximum(c, 0.0)
        self._spline = _bspline(lo, hi, len(c) - self.degree, self.coef)
        self._dspline = self._spline.derivative()
        self._ends = (float(self._spline(lo)), float(self._spline(hi)),
                      float(self._dspline(lo)), float(self._dspline(hi)))

    def __call__(self, beta):
        if is_sympy(beta):
            raise ValueError("MonotoneSplineGain is numeric only; use its derivative values in symbolic work")
        b = np.asarray(beta, dtype=float)
        g_lo, g_hi, d_lo, d_hi = self._ends
        inside = np.clip(b, self.beta_lo, self.beta_hi)
        out = self._spline(inside)
        out = np.where(b < self.beta_lo, g_lo + d_lo * (b - self.beta_lo), out)
        out = np.where(b > self.beta_hi, np.maximum(g_hi + d_hi * (b - self.beta_hi), 0.0), out)
        return out if out.ndim else float(out)

    def derivative(self, beta):
        b = np.asarray(beta, dtype=float)
        g_lo, g_hi, d_lo, d_hi = self._ends
        out = self._dspline(np.clip(b, self.beta_lo, self.beta_hi))
        out = np.where(b < self.beta_lo, d_lo, out)
        past = g_hi + d_hi * (b - self.beta_hi)
        out = np.where(b > self.beta_hi, np.where(past > 0, d_hi, 0.0), out)
        return out if out.ndim else float(out)

    def inverse(self, y):
        from scipy.optimize import brentq

        y_arr = np.asarray(y, dtype=float)
        g_lo, g_hi, d_lo, d_hi = self._ends

        def one(v):
            if g_hi <= v <= g_lo:
                if g_lo == g_hi:
                    return self.beta_lo
                return brentq(lambda b: float(self._spline(b)) - v, self.beta_lo, self.beta_hi, xtol=1e-10)
            slope, g0, b0 = (d_lo, g_lo, self.beta_lo) if v > g_lo else (d_hi, g_hi, self.beta_hi)
            if slope >= 0 or v <= 0:
                raise ValueError(f"no β with g(β) = {v}: g is flat or zero there")
            return b0 + (v - g0) / slope

        out = np.vectorize(one, otypes=[float])(y_arr)
        return out if out.ndim else float(out)

    def to_dict(self):
        return {"kind": self.kind, "beta_lo": self.beta_lo, "beta_hi": self.beta_hi, "coef": self.coef.tolist()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(d["beta_lo"], d["beta_hi"], d["coef"])

    def __repr__(self):
        return f"MonotoneSplineGain(beta_lo={self.beta_lo!r}, beta_hi={self.beta_hi!r}, coef={self.coef.tolist()!r})"


def _bspline(lo, hi, n_seg, coef):
    from scipy.interpolate import BSpline

    k = MonotoneSplineGain.degree
    t = np.r_[[lo] * k, np.linspace(lo, hi, n_seg + 1), [hi] * k]
    return BSpline(t, coef, k, extrapolate=False)


# -- gain parametrisations used by the fitter -------------------------------------------------------------


class _ExpParam:
    """``g = exp(θ0 − e^{θ1}·(β − β_c))``: log-level at the centre ``β_c`` and log-rate."""

    name = "exp"
    lower = -np.inf

    def __init__(self, beta_c):
        self.beta_c = beta_c
        self.n = 2

    def prepare(self, beta):
        return beta - self.beta_c

    def g_jac(self, x, db):
        k = math.exp(x[1])
        g = np.exp(x[0] - k * db)
        return g, np.stack([g, -k * db * g], axis=1)

    def penalty(self, x):
        return np.zeros(0), np.zeros((0, self.n))

    def gain(self, x):
        k = math.exp(x[1])
        return ExpGain(math.exp(x[0] + k * self.beta_c), k)

    def bounds(self):
        # log-level and log-rate: finite only to keep a wandering optimiser from overflowing
        return np.array([-60.0, -40.0]), np.array([60.0, 10.0])


class _SplineParam:
    """Cubic B-spline coefficients ``c = T·x`` with ``x ≥ 0`` (last coefficient, then increments).

    A second-difference penalty on ``c`` (relative to the KL scale) picks the
    smoothest g where the data leave it undetermined (between open-loop β values).
    """

    name = "spline"

    def __init__(self, lo, hi, n_seg, g_scale, penalty):
        self.lo, self.hi, self.n_seg = lo, hi, n_seg
        self.n = n_seg + 3
        m = self.n
        # c_i = Σ_{j ≤ m−1−i} x_j: x_0 = c_{m−1} ≥ 0, x_j = c_{m−1−j} − c_{m−j} ≥ 0
        self.T = (np.arange(m)[None, :] <= (m - 1 - np.arange(m))[:, None]).astype(float)
        d2 = np.diff(np.eye(m), 2, axis=0)
        self.P = math.sqrt(penalty) / g_scale * d2 @ self.T

    def prepare(self, beta):
        from scipy.interpolate import BSpline

        k = MonotoneSplineGain.degree
        t = np.r_[[self.lo] * k, np.linspace(self.lo, self.hi, self.n_seg + 1), [self.hi] * k]
        B = BSpline.design_matrix(np.clip(beta, self.lo, self.hi), t, k).toarray()
        return B @ self.T

    def g_jac(self, x, BT):
        return BT @ x, BT

    def penalty(self, x):
        return self.P @ x, self.P

    def gain(self, x):
        return MonotoneSplineGain(self.lo, self.hi, self.T @ np.maximum(x, 0.0))

    def bounds(self):
        return np.zeros(self.n), np.full(self.n, np.inf)


# -- simulation of the model and its sensitivities ------------------------------------------------------------


def simulate_plant(plant: FirstOrderPlant, beta, y_init: float, stride: int = 1) -> np.ndarray:
    """Noise-free KL of ``plant`` under a recorded β sequence.

    Parameters
    ----------
    plant : FirstOrderPlant
        Scalar ``a``.
    beta : array, shape (n,)
        β of each logged row.
    y_init : float
        KL before the first row, ``y(−1)``.
    stride : int
        Steps between logged rows (β assumed constant in between).

    Returns
    -------
    ndarray, shape (n,)
        ``ŷ`` at each row.
    """
    from scipy.signal import lfilter

    rho = (1.0 + float(plant.a)) ** (-stride)
    g = np.asarray(plant.g(np.asarray(beta, dtype=float)), dtype=float)
    return lfilter([1 - rho], [1, -rho], g, zi=[rho * y_init])[0]


class _Series:
    """One trace prepared for fitting: arrays, stride, residual scale."""

    def __init__(self, tr: Trace, name: str):
        from scipy.ndimage import median_filter

        beta = np.asarray(tr.beta, dtype=float)
        kl = np.asarray(tr.kl, dtype=float)
        if beta.ndim != 1:
            raise ValueError(f"{name}: fit one loop per trace (use trace.loop(i)), got β of shape {beta.shape}")
        if len(beta) < 4:
            raise ValueError(f"{name}: need at least 4 rows to fit, got {len(beta)}")
        if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(kl))):
            raise ValueError(f"{name}: β and KL must be finite")
        step = np.asarray(tr.step)
        d = np.diff(step)
        if np.any(d <= 0):
            raise ValueError(f"{name}: steps must strictly increase")
        if np.any(d != d[0]):
            i = int(np.flatnonzero(d != d[0])[0])
            raise ValueError(f"{name}: rows must be evenly spaced in steps (the model advances a fixed number "
                             f"of updates per row); spacing changes from {int(d[0])} to {int(d[i])} at step "
                             f"{int(step[i + 1])}")
        self.name, self.beta, self.kl, self.step = name, beta, kl, step
        self.stride = int(d[0])
        self.n = len(beta)
        width = int(np.clip(self.n // 100, 5, 201)) | 1
        level = median_filter(np.abs(kl), size=width, mode="nearest")
        floor = max(0.05 * float(np.median(np.abs(kl))), 1e-9)
        self.scale = np.maximum(level, floor)
        self.open_loop = bool(np.ptp(beta) <= 1e-12 * max(1.0, abs(beta[0])))


def _sim(rho, g, y_init):
    from scipy.signal import lfilter

    return lfilter([1 - rho], [1, -rho], g, zi=[rho * y_init])[0]


class _Problem:
    """Stacked weighted residuals of all traces and their Jacobian in ``[log a, gain x, y_init…]``."""

    def __init__(self, series, param):
        self.series, self.param = series, param
        self.prepared = [param.prepare(s.beta) for s in series]
        self.ng = param.n
        self.n_par = 1 + param.n + len(series)
        # time constants from one logged row to 1000× the longest trace: wider than anything identifiable
        span = max(s.n * s.stride for s in series)
        self.loga_bounds = (math.log(1e-3 / span), math.log(10.0))

    def split(self, x):
        return x[0], x[1:1 + self.ng], x[1 + self.ng:]

    def predict(self, x):
        loga, xg, y0 = self.split(x)
        a = math.exp(loga)
        out = []
        for s, prep, yi in zip(self.series, self.prepared, y0):
            g, _ = self.param.g_jac(xg, prep)
            out.append(_sim((1 + a) ** (-s.stride), g, yi))
        return out

    def residuals(self, x, kls=None):
        kls = kls or [s.kl for s in self.series]
        pen, _ = self.param.penalty(self.split(x)[1])
        parts = [(kl - yh) / s.scale for s, kl, yh in zip(self.series, kls, self.predict(x))]
        return np.concatenate(parts + [pen])

    def jacobian(self, x):
        from scipy.signal import lfilter

        loga, xg, y0 = self.split(x)
        a = math.exp(loga)
        blocks = []
        for i, (s, prep, yi) in enumerate(zip(self.series, self.prepared, y0)):
            rho = (1 + a) ** (-s.stride)
            g, Jg = self.param.g_jac(xg, prep)
            yh = _sim(rho, g, yi)
            J = np.zeros((s.n, self.n_par))
            # ∂ŷ/∂ρ obeys z(t) = ρ·z(t−1) + ŷ(t−1) − g(t), z(−1) = 0
            z = lfilter([1.0], [1, -rho], np.r_[yi, yh[:-1]] - g)
            J[:, 0] = z * (-s.stride * rho * a / (1 + a))
            J[:, 1:1 + self.ng] = lfilter([1 - rho], [1, -rho], Jg, axis=0)
            J[:, 1 + self.ng + i] = rho ** np.arange(1, s.n + 1)
            blocks.append(-J / s.scale[:, None])
        _, P = self.param.penalty(xg)
        if len(P):
            Pf = np.zeros((len(P), self.n_par))
            Pf[:, 1:1 + self.ng] = P
            blocks.append(Pf)
        return np.vstack(blocks)

    def bounds(self):
        lo, hi = self.param.bounds()
        n = len(self.series)
        return (np.r_[self.loga_bounds[0], lo, np.full(n, -np.inf)],
                np.r_[self.loga_bounds[1], hi, np.full(n, np.inf)])

    def refine(self, x, kls, loss, f_scale, steps: int = 4):
        """A few projected Gauss–Newton steps (IRLS weights for robust losses) from ``x``.

        Used for bootstrap replicates, whose optimum lies close to the fit's:
        the k-step bootstrap, much cheaper than a full solve per replicate.
        """
        lo, hi = self.bounds()
        n_data = sum(s.n for s in self.series)

        def cost(r):
            z = (r / f_scale) ** 2
            return float(np.sum(f_scale**2 * _RHO[loss](z)))

        r = self.residuals(x, kls)
        c = cost(r)
        for _ in range(steps):
            J = self.jacobian(x)
            w = np.ones_like(r)
            w[:n_data] = _WEIGHT[loss]((r[:n_data] / f_scale) ** 2)
            Jw = J * np.sqrt(w)[:, None]
            A = Jw.T @ Jw
            A[np.diag_indices_from(A)] *= 1 + 1e-10
            step = np.linalg.lstsq(A, -(Jw.T @ (np.sqrt(w) * r)), rcond=None)[0]
            for _halve in range(6):
                x_new = np.clip(x + step, lo, hi)
                r_new = self.residuals(x_new, kls)
                c_new = cost(r_new)
                if c_new <= c:
                    break
                step = step / 2
            else:
                break
            converged = c - c_new <= 1e-9 * c
            x, r, c = x_new, r_new, c_new
            if converged:
                break
        return x

    def solve(self, x0, kls=None, loss="linear", f_scale=1.0, max_nfev=None):
        from scipy.optimize import least_squares

        lo, hi = self.bounds()
        x0 = np.clip(x0, lo, hi)
        res = least_squares(lambda x: self.residuals(x, kls), x0, jac=self.jacobian, bounds=(lo, hi),
                            method="trf", loss=loss, f_scale=f_scale, x_scale="jac", max_nfev=max_nfev,
                            tr_solver="lsmr")  # an SVD of the tall Jacobian per iteration costs more than the model
        return res


#: IRLS weight ρ′(z) and loss ρ(z) of each supported least_squares loss, z = (r/f_scale)².
_WEIGHT = {
    "linear": np.ones_like,
    "soft_l1": lambda z: 1 / np.sqrt(1 + z),
    "huber": lambda z: np.where(z <= 1, 1.0, 1 / np.sqrt(np.maximum(z, 1))),
    "cauchy": lambda z: 1 / (1 + z),
}
_RHO = {
    "linear": lambda z: z,
    "soft_l1": lambda z: 2 * (np.sqrt(1 + z) - 1),
    "huber": lambda z: np.where(z <= 1, z, 2 * np.sqrt(np.maximum(z, 1)) - 1),
    "cauchy": np.log1p,
}


# -- initialisation by variable projection over a -------------------------------------------------------------


def _spline_init(problem: _Problem):
    """Best ``a`` on a log grid with the (linear) spline/initial-KL part solved exactly; returns x."""
    from scipy.optimize import minimize_scalar
    from scipy.signal import lfilter

    series, param = problem.series, problem.param
    span = max(s.n * s.stride for s in series)
    stride_max = max(s.stride for s in series)
    # subsample rows of long traces for this search only (rows are independent once columns are filtered)
    take = [slice(None, None, max(1, s.n // 2000)) for s in series]

    def design(loga):
        a = math.exp(loga)
        rows, rhs = [], []
        for i, (s, BT, tk) in enumerate(zip(series, problem.prepared, take)):
            rho = (1 + a) ** (-s.stride)
            idx = np.arange(s.n)[tk]
            cols = np.zeros((len(idx), param.n + len(series)))
            cols[:, :param.n] = lfilter([1 - rho], [1, -rho], BT, axis=0)[tk]
            cols[:, param.n + i] = rho ** (idx + 1)
            rows.append(cols / s.scale[tk, None])
            rhs.append((s.kl / s.scale)[tk])
        rows.append(np.hstack([param.P, np.zeros((len(param.P), len(series)))]))
        rhs.append(np.zeros(len(param.P)))
        return np.vstack(rows), np.concatenate(rhs)

    def cost(loga):
        M, r = design(loga)
        sol, *_ = np.linalg.lstsq(M, r, rcond=None)
        return float(np.sum((M @ sol - r) ** 2)), sol

    grid = np.linspace(math.log(0.05 / span), math.log(min(2.0, 2.0 / stride_max)), _A_GRID)
    costs = [cost(g)[0] for g in grid]
    j = int(np.argmin(costs))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    best = minimize_scalar(lambda v: cost(v)[0], bounds=(lo, hi), method="bounded",
                           options={"xatol": 1e-3}).x if hi > lo else grid[j]
    _, sol = cost(best)
    xg = np.maximum(sol[:param.n], 0.0)
    return np.r_[best, xg, sol[param.n:]]


def _exp_init(spline_x, spline_problem, exp_param, series):
    """Start the exponential fit from a log-linear fit of the spline's g over the β values seen."""
    gain = spline_problem.param.gain(spline_problem.split(spline_x)[1])
    b = np.quantile(np.concatenate([s.beta for s in series]), np.linspace(0, 1, 41))
    b = np.unique(b)
    gv = np.maximum(np.asarray(gain(b), dtype=float), 1e-6 * max(float(np.max(gain(b))), 1e-12))
    db = b - exp_param.beta_c
    slope, icpt = np.polyfit(db, np.log(gv), 1) if len(b) > 1 else (0.0, math.log(gv[0]))
    k = max(-slope, 1e-4 / max(float(np.ptp(b)), 1e-12))
    return np.r_[spline_x[0], icpt, math.log(k), spline_problem.split(spline_x)[2]]


# -- the 63.2 % rise time ------------------------------------------------------------------------------------


def rise_time_a(trace: Trace, tail: float = 0.1) -> float | None:
    """The paper's estimate ``a = 1/t*``, ``t*`` the step where the KL first reaches 63.2 % of its rise.

    Only for open-loop traces (constant β).  The final value is the mean of
    the last ``tail`` fraction of the trace, the initial value the median of
    the first five samples; the KL is smoothed by a centred moving average of
    ``n/100`` rows before the crossing is sought.

    Parameters
    ----------
    trace : Trace
        One loop.
    tail : float
        Fraction of rows averaged for the final value.

    Returns
    -------
    float or None
        ``None`` if β varies or the KL does not move by more than its noise.
    """
    beta = np.asarray(trace.beta, dtype=float)
    kl = np.asarray(trace.kl, dtype=float)
    step = np.asarray(trace.step)
    if np.ptp(beta) > 1e-12 * max(1.0, abs(beta[0])) or len(kl) < 10:
        return None
    w = max(1, len(kl) // 100)
    sm = np.convolve(kl, np.ones(w) / w, mode="valid")
    y0 = float(np.median(kl[:5]))  # not sm[0]: the moving average would already include part of the rise
    c0 = float(np.mean(kl[-max(1, int(tail * len(kl))):]))
    noise = float(np.std(kl[-max(2, int(tail * len(kl))):]))
    if abs(c0 - y0) <= 2 * noise / math.sqrt(w):
        return None
    target = y0 + 0.632 * (c0 - y0)
    crossed = np.flatnonzero((sm - target) * np.sign(c0 - y0) >= 0)
    if len(crossed) == 0:
        return None
    # smoothed sample i averages rows i … i+w−1 (centre them); row j is j·stride + 1 updates after y(−1)
    t_star = (crossed[0] + (w - 1) / 2) * float(step[1] - step[0]) + 1
    return 1.0 / max(t_star, 1.0)


# -- the result --------------------------------------------------------------------------------------------


@dataclass
class _Boot:
    a: np.ndarray
    gains: list


class PlantFit(FirstOrderPlant):
    """A fitted first-order plant with its uncertainty: use it wherever a :class:`FirstOrderPlant` goes.

    Attributes
    ----------
    a : float
        Fitted rate.
    g : Gain
        Fitted steady-state map (``ExpGain`` or :class:`MonotoneSplineGain`).
    gain_model : str
        ``"exp"`` or ``"spline"``.
    a_ci : (float, float)
        Bootstrap percentile interval of ``a`` (NaN without bootstrap).
    level : float
        Confidence level of the intervals.
    beta_range : (float, float)
        Smallest and largest β in the traces: where ``g`` is identified.
    a_rise_time : list of float or None
        The paper's 63.2 % estimate per trace (``None`` for closed-loop traces).
    y_init : list of float
        Estimated KL before the first row, per trace.
    noise_rel : float
        Robust (MAD) standard deviation of the relative residuals.
    bic : dict
        BIC of each model fitted (``g="auto"`` fits both).
    info : dict
        Per-trace names, lengths and strides; optimiser status.
    traces : list of Trace
        The traces fitted (kept in memory for plots; not saved).
    """

    def __init__(self, a, g, gain_model, a_ci, level, beta_range, a_rise_time, y_init, noise_rel, bic,
                 info, boot=None, traces=None):
        super().__init__(a, g)
        self.gain_model = gain_model
        self.a_ci = tuple(float(v) for v in a_ci)
        self.level = float(level)
        self.beta_range = tuple(float(v) for v in beta_range)
        self.a_rise_time = list(a_rise_time)
        self.y_init = [float(v) for v in y_init]
        self.noise_rel = float(noise_rel)
        self.bic = dict(bic)
        self.info = dict(info)
        self.boot = boot if boot is not None else _Boot(np.zeros(0), [])
        self.traces = list(traces or [])

    def gprime(self, beta):
        """``g′(β)``, vectorised."""
        return self.g.derivative(beta)

    def _band(self, fn, beta):
        beta = np.asarray(beta, dtype=float)
        if not self.boot.gains:
            nan = np.full(beta.shape, np.nan)
            return nan, nan
        vals = np.stack([np.asarray(fn(gn, beta), dtype=float) for gn in self.boot.gains])
        q = 100 * (1 - self.level) / 2
        return np.percentile(vals, q, axis=0), np.percentile(vals, 100 - q, axis=0)

    def g_ci(self, beta):
        """Bootstrap percentile band ``(lo, hi)`` of ``g(β)``."""
        return self._band(lambda gn, b: gn(b), beta)

    def gprime_ci(self, beta):
        """Bootstrap percentile band ``(lo, hi)`` of ``g′(β)``."""
        return self._band(lambda gn, b: gn.derivative(b), beta)

    def gprime_range(self, beta_lo=None, beta_hi=None, ci: bool = False, n: int = 513):
        """``(g′min, g′max)`` over ``[beta_lo, beta_hi]`` (default: the β range seen).

        Parameters
        ----------
        beta_lo, beta_hi : float, optional
            Interval of β; defaults :attr:`beta_range`.
        ci : bool
            Widen to the bootstrap band: the lowest lower bound and the highest
            upper bound of ``g′`` over the interval (for a conservative verdict).
        n : int
            Grid points.

        Returns
        -------
        (float, float)
        """
        lo = self.beta_range[0] if beta_lo is None else float(beta_lo)
        hi = self.beta_range[1] if beta_hi is None else float(beta_hi)
        if not hi >= lo:
            raise ValueError(f"need beta_lo ≤ beta_hi, got {lo}, {hi}")
        b = np.linspace(lo, hi, n)
        gp = np.asarray(self.gprime(b), dtype=float)
        if ci and self.boot.gains:
            blo, bhi = self.gprime_ci(b)
            return float(min(gp.min(), blo.min())), float(max(gp.max(), bhi.max()))
        return float(gp.min()), float(gp.max())

    @property
    def a_rise_time_mean(self):
        """Mean of the per-trace 63.2 % estimates (``None`` if no open-loop trace gave one)."""
        vals = [v for v in self.a_rise_time if v is not None]
        return float(np.mean(vals)) if vals else None

    def plant(self) -> FirstOrderPlant:
        """A plain :class:`FirstOrderPlant` with the point estimates."""
        return FirstOrderPlant(self.a, self.g)

    def summary(self) -> dict:
        """JSON-able figures: estimates, intervals, β range and g′ range, model choice."""
        gmin, gmax = self.gprime_range()
        cmin, cmax = self.gprime_range(ci=True)
        lo, hi = self.beta_range
        d = {
            "a": self.a, "a_ci": list(self.a_ci), "time_constant_steps": float(self.time_constant),
            "level": self.level, "gain_model": self.gain_model, "g": self.g.to_dict(),
            "beta_range": [lo, hi], "g_at_beta_range": [float(self.g(lo)), float(self.g(hi))],
            "gprime_range": [gmin, gmax], "gprime_range_ci": [cmin, cmax],
            "a_rise_time": self.a_rise_time, "a_rise_time_mean": self.a_rise_time_mean,
            "y_init": self.y_init, "noise_rel": self.noise_rel, "bic": self.bic, "n_boot": len(self.boot.gains),
            "info": self.info,
        }
        if isinstance(self.g, ExpGain):
            d["A"], d["k"] = float(self.g.A), float(self.g.k)
        return d

    def to_dict(self) -> dict:
        """Plant description (loadable by :meth:`FirstOrderPlant.from_dict`) plus the fit under ``"fit"``."""
        d = super().to_dict()
        d["fit"] = {
            "gain_model": self.gain_model, "a_ci": list(self.a_ci), "level": self.level,
            "beta_range": list(self.beta_range), "a_rise_time": self.a_rise_time, "y_init": self.y_init,
            "noise_rel": self.noise_rel, "bic": self.bic, "info": self.info,
            "boot": {"a": self.boot.a.tolist(), "g": [gn.to_dict() for gn in self.boot.gains]},
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PlantFit":
        """Rebuild from :meth:`to_dict` (bootstrap replicates included; traces are not saved)."""
        base = FirstOrderPlant.from_dict(d)
        f = d.get("fit")
        if not isinstance(f, dict):
            raise ValueError("not a plant fit: no 'fit' entry (a plain plant loads with FirstOrderPlant.from_dict)")
        boot = _Boot(np.asarray(f["boot"]["a"], dtype=float), [gain_from_dict(g) for g in f["boot"]["g"]])
        return cls(base.a, base.g, f["gain_model"], f["a_ci"], f["level"], f["beta_range"], f["a_rise_time"],
                   f["y_init"], f["noise_rel"], f["bic"], f["info"], boot)

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "PlantFit":
        """Read a fit written by :meth:`save` (``ValueError`` naming the file for anything else)."""
        fit = read_plant_json(path)
        if not isinstance(fit, PlantFit):
            raise ValueError(f"{path}: a plant without a fit (no 'fit' entry); write one with `klcontrol fit --out`")
        return fit

    def simulate_trace(self, i: int) -> np.ndarray:
        """Model KL for fitted trace ``i`` (recorded β, estimated initial KL)."""
        tr = self.traces[i]
        stride = int(np.diff(tr.step[:2])[0]) if len(tr) > 1 else 1
        return simulate_plant(self, tr.beta, self.y_init[i], stride)

    def __repr__(self):
        lo, hi = self.a_ci
        return f"PlantFit(a={self.a:.4g} [{lo:.4g}, {hi:.4g}], g={self.g!r})"


def read_json(path):
    """The JSON value in a file, with every way of failing named after the file.

    Raises
    ------
    ValueError
        Missing file, not UTF-8, not JSON, or nested too deeply.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"fit file not found: {p}")
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a JSON text file (binary or not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply") from None


def plant_from_dict(d, path="fit"):
    """:class:`PlantFit` (with a ``"fit"`` entry) or :class:`FirstOrderPlant` from a decoded JSON value.

    Raises
    ------
    ValueError
        Naming ``path``, for anything that is not a valid description (wrong
        types, missing entries, non-finite values).
    """
    try:
        return PlantFit.from_dict(d) if isinstance(d, dict) and "fit" in d else FirstOrderPlant.from_dict(d)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{path}: not a valid plant fit or plant description ({what})") from None


def read_plant_json(path):
    """A plant fit (:meth:`PlantFit.save`) or a plain plant (:meth:`FirstOrderPlant.to_dict`) from a JSON file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    PlantFit or FirstOrderPlant
        ``PlantFit`` when the file has a ``"fit"`` entry.

    Raises
    ------
    ValueError
        Naming the file (see :func:`read_json` and :func:`plant_from_dict`).
    """
    return plant_from_dict(read_json(path), path)


# -- the fit -------------------------------------------------------------------------------------------------


def fit_plant(traces, g: str = "exp", n_boot: int = 100, seed: int | None = 0, level: float = 0.95,
              loss: str = "soft_l1", n_segments: int = 8, kl_lag: int = 0, columns: dict | None = None,
              progress: bool = False) -> PlantFit:
    """Fit ``a`` and ``g(β)`` of the first-order plant to training traces.

    Parameters
    ----------
    traces : sequence of (str, Path or Trace)
        Open-loop runs (fixed β) and/or closed-loop runs (β varies), one loop
        each; paths are read with :func:`~analysis.trace_io.read_trace`.  At
        least two distinct β values overall.  Rows must be evenly spaced in
        steps (a stride > 1 assumes β constant between logged rows).
    g : {"exp", "spline", "auto"}
        Steady-state model: ``A·exp(−kβ)``, the monotone spline, or the one with
        the lower BIC (computed with the effective sample size
        ``N·(1−ρ₁)/(1+ρ₁)``, ρ₁ the lag-1 autocorrelation of the exponential
        fit's residuals, so that correlated noise does not favour the spline).
    n_boot : int
        Moving-block bootstrap replicates for the intervals (0: none).
    seed : int, optional
        Bootstrap seed.
    level : float
        Confidence level of the percentile intervals.
    loss : str
        :func:`scipy.optimize.least_squares` loss; the default ``"soft_l1"``
        with ``f_scale`` = 3 robust residual standard deviations is close to
        least squares on Gaussian noise and limits the pull of KL spikes.
    n_segments : int
        Spline segments on the β range seen.
    kl_lag : {0, 1}
        For paths: passed to ``read_trace`` (1 when the log's KL comes from the
        forward pass of the same step).  Traces given as objects are used as they are.
    columns : dict, optional
        ``{"step":…, "beta":…, "kl":…}`` names for reading paths.
    progress : bool
        Show a progress bar over bootstrap replicates.

    Returns
    -------
    PlantFit
    """
    with _one_blas_thread():
        return _fit_plant(traces, g, n_boot, seed, level, loss, n_segments, kl_lag, columns, progress)


def _one_blas_thread():
    """Limit BLAS to one thread while fitting, if threadpoolctl is installed.

    The matrices are tall and thin (rows × ~15): threading gains nothing and
    busy-waiting BLAS threads slow the fit several-fold on a loaded machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fit_plant(traces, g, n_boot, seed, level, loss, n_segments, kl_lag, columns, progress):
    if loss not in _WEIGHT:
        raise ValueError(f"loss must be one of {sorted(_WEIGHT)}, got {loss!r}")
    if g not in GAIN_MODELS + ("auto",):
        raise ValueError(f"g must be one of {GAIN_MODELS + ('auto',)}, got {g!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if int(n_segments) != n_segments or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    if isinstance(traces, (str, Path, Trace)):
        traces = [traces]
    traces = list(traces)
    if not traces:
        raise ValueError("fit_plant needs at least one trace")
    loaded, names = [], []
    for i, t in enumerate(traces):
        if isinstance(t, Trace):
            loaded.append(t)
            names.append(str(t.meta.get("source", f"trace {i}")))
        elif isinstance(t, (str, Path)):
            loaded.append(read_trace(t, kl_lag=kl_lag, **(columns or {})))
            names.append(str(t))
        else:
            raise ValueError(f"trace {i}: expected a path or a klcontrol.Trace, got {type(t).__name__}")
    series = [_Series(t, n) for t, n in zip(loaded, names)]
    all_beta = np.concatenate([s.beta for s in series])
    lo, hi = float(all_beta.min()), float(all_beta.max())
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        raise ValueError(f"every trace has β = {lo:g}: g(β) and its slope are identifiable only across "
                         "several β values; add a run at another β or a closed-loop run")

    g_scale = float(np.median(np.abs(np.concatenate([s.kl for s in series])))) or 1.0
    spline_problem = _Problem(series, _SplineParam(lo, hi, int(n_segments), g_scale, penalty=1.0))
    x_spline0 = _spline_init(spline_problem)
    fits = {}
    if g in ("spline", "auto"):
        fits["spline"] = (spline_problem, x_spline0)
    if g in ("exp", "auto"):
        exp_problem = _Problem(series, _ExpParam(0.5 * (lo + hi)))
        fits["exp"] = (exp_problem, _exp_init(x_spline0, spline_problem, exp_problem.param, series))

    results = {}
    for name, (prob, x0) in fits.items():
        r0 = prob.solve(x0, loss="linear")
        sigma = _mad(_data_part(prob, r0.fun))
        res = prob.solve(r0.x, loss=loss, f_scale=3 * sigma) if loss != "linear" else r0
        results[name] = (prob, res)

    bic = _bic(results)
    chosen = g if g != "auto" else min(bic, key=bic.get)
    prob, res = results[chosen]
    x = res.x
    resid = _data_part(prob, prob.residuals(x))
    sigma = _mad(resid)
    boot = _bootstrap(prob, x, int(n_boot), seed, loss, 3 * sigma, progress)
    q = 100 * (1 - level) / 2
    a_ci = (np.percentile(boot.a, q), np.percentile(boot.a, 100 - q)) if len(boot.a) else (math.nan, math.nan)
    loga, xg, y0 = prob.split(x)
    info = {
        "traces": [{"name": s.name, "rows": s.n, "stride": s.stride, "open_loop": s.open_loop,
                    "beta_range": [float(s.beta.min()), float(s.beta.max())]} for s in series],
        "optimizer": {"status": int(res.status), "message": str(res.message), "nfev": int(res.nfev)},
        "loss": loss, "n_segments": int(n_segments), "criterion": "BIC with effective sample size",
    }
    return PlantFit(math.exp(loga), prob.param.gain(xg), chosen, a_ci, level, (lo, hi),
                    [rise_time_a(t) for t in loaded], y0, sigma, bic, info, boot, loaded)


def _data_part(prob, r):
    return r[:sum(s.n for s in prob.series)]


def _mad(r):
    return max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-12)


def _bic(results):
    """BIC of each fitted model, with the effective sample size of the exponential fit's residuals."""
    ref = "exp" if "exp" in results else next(iter(results))
    prob, res = results[ref]
    n_eff = 0.0
    for s, r in zip(prob.series, _split(prob, _data_part(prob, prob.residuals(res.x)))):
        rho = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if len(r) > 2 and np.std(r) > 0 else 0.0
        rho = min(max(rho, 0.0), 0.99)
        n_eff += len(r) * (1 - rho) / (1 + rho)
    out = {}
    for name, (p, rs) in results.items():
        r = _data_part(p, p.residuals(rs.x))
        n = len(r)
        out[name] = float(n_eff * math.log(float(np.sum(r**2)) / n) + p.n_par * math.log(n_eff))
    return out


def _split(prob, r):
    return np.split(r, np.cumsum([s.n for s in prob.series])[:-1])


def _bootstrap(prob: _Problem, x, n_boot, seed, loss, f_scale, progress):
    """Moving-block bootstrap of each trace's weighted residuals around the fitted simulation."""
    if n_boot == 0:
        return _Boot(np.zeros(0), [])
    rng = np.random.default_rng(seed)
    fitted = prob.predict(x)
    resid = [(s.kl - yh) / s.scale for s, yh in zip(prob.series, fitted)]
    resid = [r - r.mean() for r in resid]
    blocks = [_block_length(r) for r in resid]
    a_s, gains = [], []
    it = range(n_boot)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bootstrap", unit="fit", mininterval=0.5)
    for _ in it:
        kls = []
        for s, yh, r, L in zip(prob.series, fitted, resid, blocks):
            starts = rng.integers(0, s.n - L + 1, size=-(-s.n // L))
            e = r[(starts[:, None] + np.arange(L)).ravel()[:s.n]]
            kls.append(yh + e * s.scale)
        loga, xg, _ = prob.split(prob.refine(x, kls, loss, f_scale))
        a_s.append(math.exp(loga))
        gains.append(prob.param.gain(xg))
    return _Boot(np.asarray(a_s), gains)


def _block_length(r):
    """Block length: n^(1/3), longer when the residuals are correlated (2·integrated autocorrelation time)."""
    n = len(r)
    rho = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if n > 2 and np.std(r) > 0 else 0.0
    rho = min(max(rho, 0.0), 0.99)
    tau = (1 + rho) / (1 - rho)
    return int(np.clip(max(round(n ** (1 / 3)), math.ceil(2 * tau)), 1, max(1, n // 4)))
