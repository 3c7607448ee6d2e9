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

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klcontrol import ExpGain, FirstOrderPlant, Gain, Trace
from klcontrol.analysis.identification.traces import log_convention, read_trace, read_traces
from klcontrol.backend import is_sympy
from klcontrol.filters import moving_mean
from klcontrol.plant import LinearGain, gain_from_dict, register_gain, register_plant

__all__ = ["fit_plant", "read_trace", "PlantFit", "MonotoneSplineGain", "rise_time_a", "simulate_plant",
           "GAIN_MODELS", "IDENTIFIABILITY"]

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
    """``g = exp(θ0 − e^{θ1}·(β − β_c))``: log-level at the centre ``β_c`` and log-rate.

    Fitting ``log g(β_c)`` and ``log k`` with bounds keeps every value finite
    on any data: ``k·ptp(β) ≤ 50`` (g may change at most e⁵⁰-fold over the β
    range seen) and ``k·|β_c| ≤ 640``, so ``|log A| = |θ0 + k·β_c| ≤ 700`` and
    ``A = g(0)`` fits a float.  A fit that ends on one of these bounds is
    reported as not identifiable (:func:`assess_identifiability`).
    """

    name = "exp"
    lower = -np.inf
    _LOG_LEVEL = 60.0  # |log g(β_c)| ≤ 60: KL between 1e-26 and 1e26 nats at the centre of the β range
    _MAX_LOG_A = 700.0  # exp(709) is the largest float

    def __init__(self, beta_c, beta_ptp=None):
        self.beta_c = float(beta_c)
        self.n = 2
        k_max = math.exp(10.0)
        if beta_ptp:
            k_max = min(k_max, 50.0 / beta_ptp)
        if self.beta_c:
            k_max = min(k_max, (self._MAX_LOG_A - self._LOG_LEVEL) / abs(self.beta_c))
        self.log_k_max = math.log(k_max)

    def prepare(self, beta):
        return beta - self.beta_c

    def g_jac(self, x, db):
        k = math.exp(x[1])
        g = np.exp(x[0] - k * db)
        return g, np.stack([g, -k * db * g], axis=1)

    def penalty(self, x):
        return np.zeros(0), np.zeros((0, self.n))

    def gain(self, x):
        k = math.exp(min(x[1], self.log_k_max))
        log_a = float(np.clip(x[0], -self._LOG_LEVEL, self._LOG_LEVEL)) + k * self.beta_c
        return ExpGain(math.exp(min(log_a, self._MAX_LOG_A)), k)

    def bounds(self):
        return np.array([-self._LOG_LEVEL, -40.0]), np.array([self._LOG_LEVEL, self.log_k_max])

    def at_bound(self, x, tol=1e-6):
        """Names of the parameters that ended on a bound."""
        lo, hi = self.bounds()
        names = ("log g(β_c)", "k")
        return [f"{n} at its {'lower' if abs(v - l) <= tol * max(1, abs(l)) else 'upper'} bound"
                for n, v, l, h in zip(names, x, lo, hi)
                if abs(v - l) <= tol * max(1, abs(l)) or abs(v - h) <= tol * max(1, abs(h))]


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

    def at_bound(self, x, tol=1e-6):
        """No bound means trouble here: zero increments are flat stretches of g."""
        return []


# -- simulation of the model and its sensitivities ------------------------------------------------------------

#: Most updates one trace may span: the fit simulates every update (a dense array per trace).
MAX_SPAN = 20_000_000


def _pole(a):
    """Pole of one update of :meth:`klcontrol.FirstOrderPlant.step`, read off the plant itself.

    The update is affine in the state and in ``g``: stepping a plant whose
    gain is the constant 1 from states 1 and 0 gives the pole and the input
    weight (``1/(1+a)`` and ``a/(1+a)``), so the model's formula stays
    written once, in the plant.  The fit checks the weight is ``1 − pole``
    (a plant whose equilibrium is ``g``), which :func:`_run_updates` assumes.
    """
    unit = FirstOrderPlant(float(a), LinearGain(1.0, 0.0, 0.0))
    weight = float(unit.step((0.0,), 0.0)[0])
    pole = float(unit.step((1.0,), 0.0)[0]) - weight
    if not math.isclose(pole + weight, 1.0, rel_tol=1e-12, abs_tol=1e-15):
        raise ValueError(f"the plant's update is not y ← p·y + (1−p)·g (p = {pole}, weight {weight})")
    return pole


def _run_updates(pole, g, y_init, axis=0):
    """Apply ``y ← pole·y + (1 − pole)·g(u)`` (one :meth:`FirstOrderPlant.step` per update) along ``axis``."""
    from scipy.signal import lfilter

    g = np.asarray(g, dtype=float)
    zi_shape = list(g.shape)
    zi_shape[axis] = 1
    zi = np.broadcast_to(pole * np.asarray(y_init, dtype=float), zi_shape)
    return lfilter([1 - pole], [1, -pole], g, axis=axis, zi=zi)[0]


class _Updates:
    """Where a log's rows fall among the training updates (zero-order hold of β).

    ``beta_from[j]`` is the first update that uses logged β value ``j``; it
    stays in use until the next value starts (zero-order hold).  ``kl_at[i]``
    is the update after which KL value ``i`` was measured.  The model runs
    every update from ``beta_from[0]`` to ``kl_at[-1]``; ``hold[u]`` is the β
    row used by update ``beta_from[0] + u`` and ``pos[i]`` the update of KL row ``i``.
    """

    def __init__(self, beta_from, kl_at, name):
        beta_from = np.asarray(beta_from, dtype=np.int64)
        kl_at = np.asarray(kl_at, dtype=np.int64)
        self.u0 = int(beta_from[0])
        keep = kl_at >= self.u0  # a KL measured before the first known β says nothing about the plant
        self.kl_rows = np.flatnonzero(keep)
        kl_at = kl_at[keep]
        if len(kl_at) == 0:
            raise ValueError(f"{name}: no KL row after the first β row")
        self.span = int(kl_at[-1]) - self.u0 + 1
        if self.span > MAX_SPAN:
            raise ValueError(f"{name}: the log spans {self.span} updates (step {self.u0} to {int(kl_at[-1])}); the fit "
                             f"simulates every update and allows at most {MAX_SPAN}: fit a shorter part of the run")
        self.n_beta = int(np.searchsorted(beta_from, kl_at[-1], side="right"))  # later β rows affect no KL row
        self.hold = np.searchsorted(beta_from[:self.n_beta], np.arange(self.u0, self.u0 + self.span), side="right") - 1
        self.pos = kl_at - self.u0
        self.dense = self.span == len(kl_at) and self.n_beta == self.span and np.array_equal(self.hold, self.pos)

    def expand(self, rows):
        """Per-update values from per-β-row values (rows first)."""
        rows = np.asarray(rows)[:self.n_beta]
        return rows if self.dense else rows[self.hold]

    def sample(self, dense):
        """Values at the KL rows from per-update values."""
        return dense if self.dense else dense[self.pos]

    def simulate(self, pole, g_rows, y_init):
        """Model KL at the KL rows: every update simulated with the held β (see :class:`_Updates`)."""
        return self.sample(_run_updates(pole, self.expand(g_rows), y_init))


def simulate_plant(plant: FirstOrderPlant, beta, y_init: float, stride: int = 1, steps=None,
                   kl_steps=None) -> np.ndarray:
    """Noise-free KL of ``plant`` under a logged β sequence, β held between rows.

    Every update between two logged rows is simulated with the β of the
    earlier row (zero-order hold: a β logged at step ``s`` is the weight of
    update ``s`` and of every update until the next logged step).

    Parameters
    ----------
    plant : FirstOrderPlant
        Scalar ``a``.
    beta : array, shape (n,)
        β of each logged row.
    y_init : float
        KL before the first row's update, ``y(s₀ − 1)``.
    stride : int
        Updates between logged rows when ``steps`` is not given.
    steps : array of int, optional
        Logged step of each row (strictly increasing); default ``s₀ + stride·i``.
    kl_steps : array of int, optional
        Updates after which the KL is wanted (default ``steps``).

    Returns
    -------
    ndarray
        ``ŷ`` after each update in ``kl_steps``.
    """
    beta = np.asarray(beta, dtype=float)
    steps = np.arange(len(beta)) * int(stride) if steps is None else np.asarray(steps, dtype=np.int64)
    if len(steps) != len(beta) or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must strictly increase, one per β row")
    kl_steps = steps if kl_steps is None else np.asarray(kl_steps, dtype=np.int64)
    up = _Updates(steps, kl_steps, "simulate_plant")
    if len(up.kl_rows) != len(kl_steps):
        raise ValueError("kl_steps must not precede the first β step")
    g = np.asarray(plant.g(beta), dtype=float)
    return up.simulate(_pole(float(plant.a)), g, y_init)


class _Series:
    """One trace prepared for fitting: β rows, KL rows, where they fall among the updates, residual scale.

    The log conventions are read from ``trace.meta`` (set by
    :func:`~klcontrol.analysis.identification.traces.read_trace`): ``kl_lag`` (KL of row ``s`` is
    ``y(s − kl_lag)``) and ``beta_lead`` (β of row ``s`` is used from update
    ``s + beta_lead`` on) and ``beta_hold`` ("next": held until the next row;
    "previous": in use since the previous row); defaults 0, 0, "next", the
    klcontrol trainer's convention.
    """

    def __init__(self, tr: Trace, name: str):
        from scipy.ndimage import median_filter

        beta = np.asarray(tr.beta, dtype=float)
        kl = np.asarray(tr.kl, dtype=float)
        if beta.ndim != 1:
            raise ValueError(f"{name}: fit one loop per trace (use trace.loop(i)), got β of shape {beta.shape}")
        if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(kl))):
            raise ValueError(f"{name}: β and KL must be finite")
        step = np.asarray(tr.step)
        if np.any(np.diff(step) <= 0):
            raise ValueError(f"{name}: steps must strictly increase")
        if len(step) < 4:
            raise ValueError(f"{name}: need at least 4 rows to fit, got {len(step)}")
        conv = log_convention(tr)
        # where each logged β starts: at its own row (held until the next) or after the previous row
        start = step if conv["beta_hold"] == "next" else np.r_[step[0], step[:-1] + 1]
        up = _Updates(start + conv["beta_lead"], step - conv["kl_lag"], name)
        kl = kl[up.kl_rows]
        if len(kl) < 4:
            raise ValueError(f"{name}: need at least 4 rows to fit, got {len(kl)}")
        self.name, self.up, self.kl = name, up, kl
        self.beta = beta[:up.n_beta]
        self.step = step[up.kl_rows]
        d = np.diff(self.step)
        self.stride = int(d[0]) if len(d) and np.all(d == d[0]) else None  # None: uneven spacing
        self.n = len(kl)
        width = int(np.clip(self.n // 100, 5, 201)) | 1
        level = median_filter(np.abs(kl), size=width, mode="nearest")
        floor = max(0.05 * float(np.median(np.abs(kl))), 1e-9)
        self.scale = np.maximum(level, floor)
        self.open_loop = bool(np.ptp(self.beta) <= 1e-12 * max(1.0, abs(self.beta[0])))


class _Problem:
    """Stacked weighted residuals of all traces and their Jacobian in ``[log a, gain x, y_init…]``."""

    def __init__(self, series, param):
        self.series, self.param = series, param
        self.prepared = [param.prepare(s.beta) for s in series]
        self.ng = param.n
        self.n_par = 1 + param.n + len(series)
        # time constants from a tenth of an update to 1000× the longest trace: wider than anything identifiable
        span = max(s.up.span for s in series)
        self.span = span
        self.loga_bounds = (math.log(1e-3 / span), math.log(10.0))

    def split(self, x):
        return x[0], x[1:1 + self.ng], x[1 + self.ng:]

    def predict(self, x):
        loga, xg, y0 = self.split(x)
        pole = _pole(math.exp(loga))
        out = []
        for s, prep, yi in zip(self.series, self.prepared, y0):
            g, _ = self.param.g_jac(xg, prep)
            out.append(s.up.simulate(pole, g, yi))
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
        pole = _pole(a)
        blocks = []
        for i, (s, prep, yi) in enumerate(zip(self.series, self.prepared, y0)):
            up = s.up
            g, Jg = self.param.g_jac(xg, prep)
            gd = up.expand(g)
            yd = _run_updates(pole, gd, yi)
            J = np.zeros((s.n, self.n_par))
            # ∂ŷ/∂pole obeys z(u) = pole·z(u−1) + ŷ(u−1) − g(u), z(−1) = 0; ∂pole/∂log a = −a/(1+a)²
            z = lfilter([1.0], [1, -pole], np.r_[yi, yd[:-1]] - gd)
            J[:, 0] = up.sample(z) * (-a / (1 + a) ** 2)
            J[:, 1:1 + self.ng] = up.sample(_run_updates(pole, up.expand(Jg), 0.0))
            J[:, 1 + self.ng + i] = pole ** (up.pos + 1.0)
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

    series, param = problem.series, problem.param
    span = problem.span
    # subsample rows of long traces for this search only (rows are independent once columns are filtered)
    take = [slice(None, None, max(1, s.n // 2000)) for s in series]

    def design(loga):
        pole = _pole(math.exp(loga))
        rows, rhs = [], []
        for i, (s, BT, tk) in enumerate(zip(series, problem.prepared, take)):
            cols = np.zeros((len(s.kl[tk]), param.n + len(series)))
            cols[:, :param.n] = s.up.sample(_run_updates(pole, s.up.expand(BT), 0.0))[tk]
            cols[:, param.n + i] = pole ** (s.up.pos[tk] + 1.0)
            rows.append(cols / s.scale[tk, None])
            rhs.append((s.kl / s.scale)[tk])
        rows.append(np.hstack([param.P, np.zeros((len(param.P), len(series)))]))
        rhs.append(np.zeros(len(param.P)))
        return np.vstack(rows), np.concatenate(rhs)

    def cost(loga):
        M, r = design(loga)
        sol, *_ = np.linalg.lstsq(M, r, rcond=None)
        return float(np.sum((M @ sol - r) ** 2)), sol

    grid = np.linspace(math.log(0.05 / span), math.log(2.0), _A_GRID)
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
    sm = moving_mean(kl, w)
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
    failures: int = 0


@register_plant
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
        Per-trace names, lengths, strides and log conventions; optimiser status.
    identifiability : dict or None
        ``{"identifiable": bool, "a": bool, "g": bool, "gprime": bool,
        "reasons": [...], "figures": {...}}``: what the data identify and why
        not (time constant against log length, interval widths, β range,
        condition of the problem, bootstrap failures); ``None`` for a fit file
        written before these checks.
    traces : list of Trace
        The traces fitted (kept in memory for plots; not saved).
    """

    def __init__(self, a, g, gain_model, a_ci, level, beta_range, a_rise_time, y_init, noise_rel, bic,
                 info, boot=None, traces=None, identifiability=None):
        super().__init__(a, g)
        self.gain_model = gain_model
        self.a_ci = tuple(math.nan if v is None else float(v) for v in a_ci)  # None: saved without a bootstrap
        self.level = float(level)
        self.beta_range = tuple(float(v) for v in beta_range)
        self.a_rise_time = list(a_rise_time)
        self.y_init = [float(v) for v in y_init]
        self.noise_rel = float(noise_rel)
        self.bic = dict(bic)
        self.info = dict(info)
        self.boot = boot if boot is not None else _Boot(np.zeros(0), [])
        self.traces = list(traces or [])
        self.identifiability = identifiability

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
            "boot_failures": self.boot.failures, "info": self.info,
            "identifiable": self.identifiable, "identifiability": self.identifiability,
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
            "boot": {"a": self.boot.a.tolist(), "g": [gn.to_dict() for gn in self.boot.gains],
                     "failures": self.boot.failures},
            "identifiable": self.identifiable, "identifiability": self.identifiability,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PlantFit":
        """Rebuild from :meth:`to_dict` (bootstrap replicates included; traces are not saved)."""
        base = FirstOrderPlant.from_dict(d)
        f = d.get("fit")
        if not isinstance(f, dict):
            raise ValueError("not a plant fit: no 'fit' entry (a plain plant loads with FirstOrderPlant.from_dict)")
        boot = _Boot(np.asarray(f["boot"]["a"], dtype=float), [gain_from_dict(g) for g in f["boot"]["g"]],
                     int(f["boot"].get("failures", 0)))
        ident = f.get("identifiability")
        if ident is not None and not (isinstance(ident, dict) and isinstance(ident.get("identifiable"), bool)):
            raise ValueError("not a plant fit: 'identifiability' must be a dict with a true/false 'identifiable'")
        return cls(base.a, base.g, f["gain_model"], f["a_ci"], f["level"], f["beta_range"], f["a_rise_time"],
                   f["y_init"], f["noise_rel"], f["bic"], f["info"], boot, identifiability=ident)

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON (:func:`klcontrol.analysis.identification.fits.load_fit` reads it)."""
        from klcontrol.fileio import write_json  # NaN/inf as null: the file stays standard JSON

        write_json(path, self.to_dict(), indent=1)

    def design_problems(self, beta_lo=None, beta_hi=None) -> list:
        """Why this fit should not be used to check or tune gains over ``[beta_lo, beta_hi]`` (empty: usable).

        Parameters
        ----------
        beta_lo, beta_hi : float, optional
            β interval of the design (default :attr:`beta_range`).

        Returns
        -------
        list of str
            The reasons ``a`` or ``g`` are not identified, the g′ checks of
            :data:`IDENTIFIABILITY` redone on ``[beta_lo, beta_hi]`` (a fit whose
            g′ is unresolved only where g is flat may serve a narrower range),
            "unknown" for a fit file written before identifiability was
            recorded, and a g′ (band) that reaches 0 over the interval.
        """
        out = []
        b0 = self.beta_range[0] if beta_lo is None else float(beta_lo)
        b1 = self.beta_range[1] if beta_hi is None else float(beta_hi)
        ident = self.identifiability
        if ident is None:
            out.append("the fit file records no identifiability (written by an older klcontrol): refit it")
        elif not ident["identifiable"]:
            by_part = ident.get("reasons_by_part")
            if by_part is None or not self.boot.gains:
                out += list(ident["reasons"]) or ["the fit is marked not identifiable"]
            else:  # a and g's level hold or fail everywhere; g′ is judged on the β range asked about
                out += [f"{k}: {r}" for k in ("a", "g", "fit") for r in by_part.get(k, [])]
                rows = int(ident.get("figures", {}).get("rows", 0))
                out += [f"gprime: {r}" for r in _gprime_band_problems(self, b0, b1)
                        + (_g_change_problems(self, b0, b1, rows) if rows else [])]
        lo, hi = self.gprime_range(beta_lo, beta_hi, ci=True)
        if hi >= 0 and not any("≥ 0" in r for r in out):
            out.append(f"g′ {'band ' if self.boot.gains else ''}reaches {hi:.3g} ≥ 0 over β ∈ [{b0:g}, {b1:g}]: "
                       "the loop gain may vanish there, no gains are robustly stable")
        return out

    @property
    def identifiable(self):
        """``True``/``False`` from :attr:`identifiability`; ``None`` when unknown (an old fit file)."""
        return None if self.identifiability is None else bool(self.identifiability["identifiable"])

    def predict(self, trace) -> np.ndarray:
        """Model KL for a trace's recorded β, aligned with its rows.

        The same convention as every fit (:meth:`klcontrol.analysis.identification.models.HammersteinFit.predict`):
        start at equilibrium for the first β, level matched over the first rows.
        """
        from klcontrol.analysis.identification.models import _trace_arrays, level_matched

        beta, kl = _trace_arrays(trace)
        return level_matched(kl, simulate_plant(self, beta, float(self.g(beta[0])), 1))

    def fit_percents(self) -> list:
        """NRMSE fit % of each fitted trace's logged KL rows: 100 perfect, 0 no better than a constant, < 0 worse."""
        out = []
        for i, tr in enumerate(self.traces):
            y = np.asarray(tr.kl, dtype=float)
            yhat = self.simulate_trace(i)
            ok = np.isfinite(y) & np.isfinite(yhat)
            spread = np.linalg.norm(y[ok] - y[ok].mean()) if ok.sum() > 1 else 0.0
            out.append(float(100 * (1 - np.linalg.norm(y[ok] - yhat[ok]) / spread)) if spread > 0 else float("nan"))
        return out

    def simulate_trace(self, i: int) -> np.ndarray:
        """Model KL for fitted trace ``i`` at its rows (every update simulated, β held; NaN on unused rows)."""
        tr = self.traces[i]
        s = _Series(tr, f"trace {i}")
        out = np.full(len(tr), np.nan)
        out[s.up.kl_rows] = s.up.simulate(_pole(float(self.a)), np.asarray(self.g(s.beta), dtype=float),
                                          self.y_init[i])
        return out

    def __repr__(self):
        lo, hi = self.a_ci
        return f"PlantFit(a={self.a:.4g} [{lo:.4g}, {hi:.4g}], g={self.g!r})"


# -- the fit -------------------------------------------------------------------------------------------------


def fit_plant(traces, g: str = "exp", n_boot: int = 100, seed: int | None = 0, level: float = 0.95,
              loss: str = "soft_l1", n_segments: int = 8, kl_lag: int = 0, columns: dict | None = None,
              progress: bool = False) -> PlantFit:
    """Fit ``a`` and ``g(β)`` of the first-order plant to training traces.

    Parameters
    ----------
    traces : sequence of (str, Path or Trace)
        Open-loop runs (fixed β) and/or closed-loop runs (β varies), one loop
        each; paths are read with :func:`~klcontrol.analysis.identification.traces.read_traces` (a
        TensorBoard directory gives one trace per run).  At least two distinct
        β values overall.  Rows may skip updates: every update is simulated,
        a logged β held until the next row; the log conventions are read from
        each trace's ``meta`` (:data:`~klcontrol.analysis.identification.traces.CONVENTIONS`).
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
        For paths: passed to ``read_traces`` (1 when the log's KL comes from the
        forward pass of the same step).  Traces given as objects carry theirs in ``meta``.
    columns : dict, optional
        ``{"step":…, "beta":…, "kl":…}`` names for reading paths.
    progress : bool
        Show a progress bar over bootstrap replicates.

    Returns
    -------
    PlantFit
        With :attr:`PlantFit.identifiability` set (never raises for data that
        merely fail to identify the plant: check ``fit.identifiable``).
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
            runs = read_traces(t, kl_lag=kl_lag, **(columns or {}))  # a TensorBoard dir: one trace per run
            loaded += runs
            names += [str(t) if r.meta.get("run") in (None, ".") else f"{t} (run {r.meta['run']})" for r in runs]
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
        exp_problem = _Problem(series, _ExpParam(0.5 * (lo + hi), hi - lo))
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
        "traces": [{"name": s.name, "rows": s.n, "stride": s.stride, "updates": s.up.span, "open_loop": s.open_loop,
                    "beta_range": [float(s.beta.min()), float(s.beta.max())], **log_convention(t)}
                   for s, t in zip(series, loaded)],
        "optimizer": {"status": int(res.status), "message": str(res.message), "nfev": int(res.nfev)},
        "loss": loss, "n_segments": int(n_segments), "criterion": "BIC with effective sample size",
        "hold": "zero-order: a logged β is the weight of every update until the next logged row "
                "(since the previous row for traces read with beta_hold='previous')",
    }
    fit = PlantFit(math.exp(loga), prob.param.gain(xg), chosen, a_ci, level, (lo, hi),
                   [rise_time_a(t) for t in loaded], y0, sigma, bic, info, boot, loaded)
    fit.identifiability = _identifiability(prob, x, fit, int(n_boot))
    return fit


#: Thresholds of :func:`_identifiability` (module constants so that docs and tests quote one place).
IDENTIFIABILITY = {
    "max_time_constant_fraction": 0.5,  # τ at most half the longest log: the settling must be seen
    "max_a_ci_ratio": 4.0,  # the a interval spans at most a factor 4
    "max_condition": 1e8,  # of the column-scaled Jacobian at the optimum
    "max_boot_failure_fraction": 0.1,
    "max_gprime_ci_ratio": 10.0,  # at each β, the g′ band's ends differ at most 10-fold
    "min_fit_percent": 0.0,  # every trace predicted better than its own mean (NRMSE fit % > 0)
}


def _identifiability(prob, x, fit, n_boot) -> dict:
    """Which of ``a``, ``g`` and ``g′`` the data identify, and why not (see :data:`IDENTIFIABILITY`)."""
    th = IDENTIFIABILITY
    reasons = {"a": [], "g": [], "gprime": [], "fit": []}
    span = prob.span
    rows = sum(s.n for s in prob.series)
    loga, xg, _ = prob.split(x)
    tau = float(fit.time_constant)
    intervals = n_boot > 0 and len(fit.boot.a) > 0
    # time constant against the log
    if abs(loga - prob.loga_bounds[0]) < 1e-6 or abs(loga - prob.loga_bounds[1]) < 1e-6:
        reasons["a"].append(f"a = {fit.a:.3g} ended on its bound (time constant {tau:.3g} updates)")
    if tau > th["max_time_constant_fraction"] * span:
        reasons["a"].append(f"time constant {tau:.3g} updates is longer than half the longest log ({span} updates): "
                            "the KL never settles in the data, so a and the level of g are confounded")
    gaps = [float(np.median(np.diff(s.up.pos))) for s in prob.series if s.n > 1]
    if gaps and tau < min(gaps) / 5:
        reasons["a"].append(f"time constant {tau:.3g} updates is far below the logging interval "
                            f"({min(gaps):g} updates): every logged KL has already settled")
    for r in prob.param.at_bound(xg):
        reasons["g"].append(f"g's {r}: g is not determined by the data (β range too narrow for its slope?)")
    # intervals
    n_ok = len(fit.boot.a)
    if n_boot > 0:
        fails = fit.boot.failures
        if fails > th["max_boot_failure_fraction"] * n_boot:
            reasons["a"].append(f"{fails} of {n_boot} bootstrap replicates failed")
    if intervals:
        lo, hi = fit.a_ci
        if not (lo > 0 and hi < math.inf) or hi / lo > th["max_a_ci_ratio"]:
            reasons["a"].append(f"{100 * fit.level:.0f} % interval of a [{lo:.3g}, {hi:.3g}] spans more than a "
                                f"factor {th['max_a_ci_ratio']:g}")
        elif hi - lo <= 1e-9 * fit.a:
            reasons["a"].append(f"{100 * fit.level:.0f} % interval of a has zero width: a is pinned, not measured")
        reasons["gprime"] += _gprime_band_problems(fit, *fit.beta_range)
    if not intervals:  # no bootstrap: linearised intervals from the Jacobian (optimistic, but never silent)
        lin = _linearised(prob, x, fit)
        if lin is None:
            reasons["a"].append("the Jacobian at the optimum is singular: the parameters are not determined")
        else:
            if lin["a_ratio"] > th["max_a_ci_ratio"]:
                reasons["a"].append(f"linearised {100 * fit.level:.0f} % interval of a spans a factor "
                                    f"{lin['a_ratio']:.3g} (more than {th['max_a_ci_ratio']:g}; no bootstrap run)")
            if lin["gprime_hi"] >= 0:
                reasons["gprime"].append(f"linearised {100 * fit.level:.0f} % band of g′ reaches "
                                         f"{lin['gprime_hi']:.3g} ≥ 0 over the β range seen (no bootstrap run)")
            elif lin["gprime_ratio"] > th["max_gprime_ci_ratio"]:
                reasons["gprime"].append(f"linearised {100 * fit.level:.0f} % band of g′ spans a factor "
                                         f"{lin['gprime_ratio']:.3g} at some β (more than "
                                         f"{th['max_gprime_ci_ratio']:g}; no bootstrap run)")
    reasons["gprime"] += _g_change_problems(fit, *fit.beta_range, rows)
    b0, b1 = fit.beta_range
    g0, g1 = float(fit.g(b0)), float(fit.g(b1))
    change = abs(g0 - g1) / max(0.5 * (abs(g0) + abs(g1)), 1e-300)
    # condition of the problem (columns scaled to unit norm: the units of the parameters do not matter)
    J = prob.jacobian(x)[:rows]
    norms = np.linalg.norm(J, axis=0)
    sv = np.linalg.svd(J[:, norms > 0] / norms[norms > 0], compute_uv=False) if np.any(norms > 0) else np.zeros(1)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
    if not cond <= th["max_condition"] or np.any(norms == 0):
        reasons["a"].append(f"the least-squares problem is ill-conditioned (condition number {cond:.3g} > "
                            f"{th['max_condition']:.0e}): several parameter combinations fit the data equally well")
    # a model that predicts a trace no better than that trace's mean explains nothing of it, whatever its intervals
    for tr, pct in zip(fit.traces or [], fit.fit_percents() if fit.traces else []):
        if not pct > th["min_fit_percent"]:
            name = os.path.basename(str(tr.meta.get("source", "a trace")))
            reasons["fit"].append(f"the model predicts {name} no better than a constant (fit {pct:.1f} %)")
    ok = {k: not v for k, v in reasons.items()}
    ok["g"] = ok["g"] and ok["a"]  # g's level is read through a: a confounded a leaves g's level open
    return {
        "identifiable": bool(ok["a"] and ok["gprime"] and ok["g"] and ok["fit"]),
        "a": ok["a"], "g": ok["g"], "gprime": ok["gprime"], "fit": ok["fit"],
        "reasons": [f"{k}: {r}" for k, v in reasons.items() for r in v],
        "reasons_by_part": {k: list(v) for k, v in reasons.items()},
        "checked_intervals": bool(intervals),
        "figures": {"time_constant_steps": tau, "longest_log_updates": int(span), "rows": int(rows),
                    "a_ci": list(fit.a_ci), "condition_number": cond, "g_change_over_beta_range": change,
                    "boot_replicates": n_ok, "boot_failures": int(fit.boot.failures)},
    }


def _gprime_band_problems(fit, beta_lo, beta_hi) -> list:
    """The bootstrap band of g′ over ``[beta_lo, beta_hi]``: reaching 0, or wider than a factor
    ``IDENTIFIABILITY["max_gprime_ci_ratio"]`` at some β (empty without bootstrap replicates)."""
    if not fit.boot.gains:
        return []
    lvl = f"{100 * fit.level:.0f} %"
    b = np.linspace(beta_lo, beta_hi, 65)
    blo, bhi = fit.gprime_ci(b)
    if np.max(bhi) >= 0:
        return [f"the {lvl} band of g′ reaches {np.max(bhi):.3g} ≥ 0 over β ∈ [{beta_lo:g}, {beta_hi:g}]: the data "
                "do not show that the KL falls as β rises there"]
    ratio = float(np.max(blo / bhi))
    limit = IDENTIFIABILITY["max_gprime_ci_ratio"]
    if ratio > limit:
        return [f"the {lvl} band of g′ spans a factor {ratio:.3g} at some β ∈ [{beta_lo:g}, {beta_hi:g}] (more "
                f"than {limit:g})"]
    return []


def _g_change_problems(fit, beta_lo, beta_hi, rows) -> list:
    """g moving less over ``[beta_lo, beta_hi]`` than a mean of ``rows`` noisy rows can resolve."""
    g0, g1 = float(fit.g(beta_lo)), float(fit.g(beta_hi))
    change = abs(g0 - g1) / max(0.5 * (abs(g0) + abs(g1)), 1e-300)
    resolution = 2 * fit.noise_rel / math.sqrt(max(rows, 1))
    if change < resolution:
        return [f"g changes by {100 * change:.2g} % over β ∈ [{beta_lo:g}, {beta_hi:g}], below the resolution of "
                f"the data ({100 * resolution:.2g} %): widen the β range"]
    return []


def _linearised(prob, x, fit):
    """Delta-method intervals of ``a`` and ``g′`` from ``σ²(JᵀJ)⁻¹``, σ² inflated for correlated residuals.

    Returns ``{"a_ratio", "gprime_hi", "gprime_ratio"}`` (hi/lo of the a
    interval, the largest upper end of the g′ band, the largest hi/lo of the
    g′ band over the β range), or ``None`` if ``JᵀJ`` is singular.
    """
    from scipy.stats import norm

    rows = sum(s.n for s in prob.series)
    r = _data_part(prob, prob.residuals(x))
    J = prob.jacobian(x)[:rows]
    dof = max(rows - prob.n_par, 1)
    rho = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if rows > 2 and np.std(r) > 0 else 0.0
    rho = min(max(rho, 0.0), 0.99)
    s2 = float(np.sum(r**2)) / dof * (1 + rho) / (1 - rho)
    JtJ = J.T @ J
    try:
        cov = s2 * np.linalg.inv(JtJ)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return None
    z = float(norm.ppf(0.5 + fit.level / 2))
    se_loga = math.sqrt(cov[0, 0])
    b = np.linspace(*fit.beta_range, 17)
    _, xg, _ = prob.split(x)
    gp0 = np.asarray(prob.param.gain(xg).derivative(b), dtype=float)
    D = np.zeros((len(b), prob.ng))  # ∂g′(β)/∂x_gain by central differences
    for j in range(prob.ng):
        h = 1e-6 * max(1.0, abs(xg[j]))
        e = np.zeros(prob.ng)
        e[j] = h
        D[:, j] = (np.asarray(prob.param.gain(xg + e).derivative(b)) -
                   np.asarray(prob.param.gain(xg - e).derivative(b))) / (2 * h)
    sl = slice(1, 1 + prob.ng)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", D, cov[sl, sl], D), 0.0))
    lo, hi = gp0 - z * se, gp0 + z * se
    ratio = float(np.max(lo / hi)) if np.all(hi < 0) else math.inf
    # A huge standard error is itself the finding (a unidentified): an infinite ratio, never an OverflowError.
    a_ratio = math.exp(min(2 * z * se_loga, 700.0))
    return {"a_ratio": a_ratio if a_ratio < 1e300 else math.inf, "gprime_hi": float(np.max(hi)), "gprime_ratio": ratio}


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
        return _Boot(np.zeros(0), [], 0)
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
    failures = 0
    for _ in it:
        kls = []
        for s, yh, r, L in zip(prob.series, fitted, resid, blocks):
            starts = rng.integers(0, s.n - L + 1, size=-(-s.n // L))
            e = r[(starts[:, None] + np.arange(L)).ravel()[:s.n]]
            kls.append(yh + e * s.scale)
        try:
            with np.errstate(all="raise"):
                xb = prob.refine(x, kls, loss, f_scale)
            loga, xg, _ = prob.split(xb)
            gain = prob.param.gain(xg)
            a_b = math.exp(loga)
            if not (np.all(np.isfinite(xb)) and math.isfinite(a_b)):
                raise FloatingPointError("non-finite replicate")
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            # a replicate that cannot be refitted is counted (reported in identifiability), not averaged in
            failures += 1
            continue
        a_s.append(a_b)
        gains.append(gain)
    return _Boot(np.asarray(a_s), gains, failures)


def _block_length(r):
    """Block length: n^(1/3), longer when the residuals are correlated (2·integrated autocorrelation time)."""
    n = len(r)
    rho = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if n > 2 and np.std(r) > 0 else 0.0
    rho = min(max(rho, 0.0), 0.99)
    tau = (1 + rho) / (1 - rho)
    return int(np.clip(max(round(n ** (1 / 3)), math.ceil(2 * tau)), 1, max(1, n // 4)))
