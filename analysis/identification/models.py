"""Plant models beyond first order for the β → KL loop, identified around an operating point.

Structure (a Hammerstein model): a static map ``g(β)`` — the KL a trained
model settles at under a constant β — followed by a discrete LTI filter
``G(q)`` with unit DC gain, plus an output level::

    ŷ(t) = y₀ + G(q)[g(β)](t),      G(1) = 1,

row ``t`` holding ``β(t)`` and the KL ``y(t)`` after update ``t`` (direct
feedthrough: ``G`` may have a ``q⁰`` term).  ``G`` comes in three structures:

``first_order``
    ``G = (a/(1+a)) / (1 − q⁻¹/(1+a))``: DynamicVAE's Eq. 14, here estimated
    around the operating point.
``two_time_constant``
    ``G = w·G₁(a₁) + (1 − w)·G₂(a₂)``: a fast and a slow first-order mode in
    parallel.
``oe``
    Output-error ``B(q)/F(q)`` with ``nb`` numerator and ``nf`` denominator
    coefficients (``B(1) = F(1)``); orders chosen by AIC (:func:`fit_oe_orders`).

All are fitted by simulation-error least squares (``scipy.optimize.least_squares``)
on the raw KL of open- or closed-loop traces, with a per-trace level (and,
optionally, a per-trace linear drift) as nuisance parameters.  The fitted filter is a
python-control ``TransferFunction`` (``dt = 1``) and its state-space
realisation gives the small-signal model of :meth:`HammersteinFit.linearize`.

``g`` is :class:`LogPchipGain`: a monotone piecewise-cubic Hermite
interpolant in ``ln β`` through the settled operating points
(:func:`klcontrol.analysis.identification.experiment.static_points`), with their intervals.

Validation (:func:`validate`): NRMSE fit % of the 50-update moving mean and
of the raw KL, residual whiteness (autocorrelation) and cross-correlation
with β.  :meth:`HammersteinFit.predict` starts the model at equilibrium for the
first β and sets ``y₀`` so that the mean over the first :data:`INIT_ROWS` rows
equals the recorded one (an estimated initial condition, as in the usual
``compare``); everything after is pure simulation from the recorded β.
"""
from __future__ import annotations

import json
import math

import numpy as np

from klcontrol.analysis.identification.experiment import MEAN_WINDOW, static_points
from klcontrol.filters import moving_mean
from klcontrol.plant import Gain, Plant, gain_from_dict, register_gain, register_plant

__all__ = [
    "INIT_ROWS",
    "STRUCTURES",
    "LogPchipGain",
    "fit_static_map",
    "fit_percent",
    "residual_tests",
    "HammersteinFit",
    "fit_dynamics",
    "fit_oe_orders",
    "validate",
    "level_matched",
    "static_map_from_traces",
    "excitation_levels",
]

#: Rows over which a prediction's level is matched to the recorded KL.
INIT_ROWS = 200
STRUCTURES = ("first_order", "two_time_constant", "oe")


# -- the static map ----------------------------------------------------------------------------------------


@register_gain
class LogPchipGain(Gain):
    """Monotone ``g(β)``: PCHIP interpolation in ``ln β`` through settled points.

    Outside the points ``g`` continues linearly in ``ln β`` with the end
    slope, floored at 0: an extrapolation, not a measurement.

    Parameters
    ----------
    betas : sequence of float
        β of the operating points, > 0, strictly increasing (at least 2).
    levels : sequence of float
        Settled KL at each, strictly decreasing.
    level_ci : sequence of (lo, hi) or None, optional
        Intervals of the levels (kept for reports; the map uses ``levels``);
        ``None`` for a node estimated from dynamic data (:func:`fit_dynamics` ``free_betas``).
    """

    kind = "log_pchip"

    def __init__(self, betas, levels, level_ci=None):
        from scipy.interpolate import PchipInterpolator

        b = np.asarray(betas, dtype=float)
        v = np.asarray(levels, dtype=float)
        if b.ndim != 1 or len(b) < 2 or b.shape != v.shape or not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
            raise ValueError(f"need ≥ 2 finite (beta, level) pairs of equal length, got {betas!r}, {levels!r}")
        if np.any(b <= 0) or np.any(np.diff(b) <= 0):
            raise ValueError(f"betas must be > 0 and strictly increasing, got {b.tolist()}")
        if np.any(np.diff(v) >= 0):
            raise ValueError(f"levels must strictly decrease with β (a decreasing g), got {v.tolist()}")
        self.betas, self.levels = b, v
        self.level_ci = None if level_ci is None else [None if c is None else tuple(float(x) for x in c)
                                                       for c in level_ci]
        self._p = PchipInterpolator(np.log(b), v, extrapolate=False)
        self._dp = self._p.derivative()
        self._lo, self._hi = math.log(b[0]), math.log(b[-1])
        self._slo, self._shi = float(self._dp(self._lo)), float(self._dp(self._hi))

    def _eval(self, beta, deriv):
        beta = np.asarray(beta, dtype=float)
        x = np.log(np.maximum(beta, 1e-300))
        inside = self._p(np.clip(x, self._lo, self._hi))
        d_in = self._dp(np.clip(x, self._lo, self._hi))
        below, above = x < self._lo, x > self._hi
        val = np.where(below, self.levels[0] + self._slo * (x - self._lo),
                       np.where(above, self.levels[-1] + self._shi * (x - self._hi), inside))
        dx = np.where(below, self._slo, np.where(above, self._shi, d_in))
        pos = val > 0
        if deriv:
            out = np.where(pos, dx / np.maximum(beta, 1e-300), 0.0)
        else:
            out = np.where(pos, val, 0.0)
        return float(out) if out.ndim == 0 else out

    def __call__(self, beta):
        return self._eval(beta, False)

    def derivative(self, beta):
        return self._eval(beta, True)

    def inverse(self, y):
        from scipy.optimize import brentq

        def one(v):
            v = float(v)
            if not v > 0:
                raise ValueError(f"LogPchipGain.inverse needs y > 0, got {v}")
            lo, hi = self.betas[0], self.betas[-1]
            while self(lo) < v:
                lo /= 2
                if lo < 1e-12:
                    raise ValueError(f"no β gives KL {v} (g(0+) is finite)")
            while self(hi) > v:
                hi *= 2
                if hi > 1e12:
                    raise ValueError(f"no β gives KL {v}")
            return brentq(lambda b: self(b) - v, lo, hi, xtol=1e-12, rtol=1e-12)

        y = np.asarray(y, dtype=float)
        out = np.vectorize(one, otypes=[float])(y)
        return float(out) if out.ndim == 0 else out

    def to_dict(self):
        d = {"kind": self.kind, "betas": self.betas.tolist(), "levels": self.levels.tolist()}
        if self.level_ci is not None:
            d["level_ci"] = [None if c is None else list(c) for c in self.level_ci]
        return d

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(d["betas"], d["levels"], d.get("level_ci"))

    def __repr__(self):
        return f"LogPchipGain(betas={self.betas.tolist()}, levels={np.round(self.levels, 4).tolist()})"


def fit_static_map(points) -> LogPchipGain:
    """``g(β)`` from settled operating points (dicts with ``beta``, ``level``, optional ``level_ci``).

    Points at the same β are averaged (their intervals are joined).
    """
    pts = sorted(points, key=lambda p: p["beta"])
    if not pts:
        raise ValueError("fit_static_map needs at least two operating points, got none")
    groups: dict[float, list] = {}
    for p in pts:
        groups.setdefault(float(p["beta"]), []).append(p)
    betas = sorted(groups)
    levels = [float(np.mean([p["level"] for p in groups[b]])) for b in betas]
    ci = [(min(p.get("level_ci", [p["level"]] * 2)[0] for p in groups[b]),
           max(p.get("level_ci", [p["level"]] * 2)[1] for p in groups[b])) for b in betas]
    return LogPchipGain(betas, levels, ci)


# -- figures of merit --------------------------------------------------------------------------------------


def fit_percent(y, yhat, window: int = MEAN_WINDOW) -> float:
    """NRMSE fit %: ``100·(1 − ‖m(y) − m(ŷ)‖/‖m(y) − mean(m(y))‖)``, ``m`` the ``window``-row moving mean.

    100 is a perfect fit, 0 is no better than the constant mean, below 0 worse.
    """
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    if y.shape != yhat.shape or y.ndim != 1:
        raise ValueError(f"y and yhat must be 1-D of one length, got {y.shape} and {yhat.shape}")
    my, mh = moving_mean(y, window), moving_mean(yhat, window)
    den = float(np.linalg.norm(my - my.mean()))
    if den == 0:
        raise ValueError("the recorded KL is constant: the fit % is undefined")
    return float(100.0 * (1.0 - np.linalg.norm(my - mh) / den))


def _xcorr(a, b, max_lag):
    a = (a - a.mean()) / (a.std() or 1.0)
    b = (b - b.mean()) / (b.std() or 1.0)
    n = len(a)
    return np.array([np.dot(a[k:], b[:n - k]) / n for k in range(max_lag + 1)])


def residual_tests(residual, beta, max_lag: int = 25) -> dict:
    """Whiteness of the residuals and their cross-correlation with β (lags 0…``max_lag``).

    Returns
    -------
    dict
        ``autocorr`` (lags 1…max_lag), ``ljung_box_p`` (p-value of the
        Ljung–Box Q; small: the residual is not white), ``autocorr_outside``
        (fraction of lags outside ±1.96/√N), ``xcorr`` (β leading the residual,
        lags 0…max_lag), ``xcorr_max`` (largest |value|), ``xcorr_outside``
        (fraction outside ±1.96/√N), ``bound`` (1.96/√N).
    """
    from scipy.stats import chi2

    r = np.asarray(residual, dtype=float)
    u = np.asarray(beta, dtype=float)
    n = len(r)
    if n < max_lag + 2:
        raise ValueError(f"need more than {max_lag + 1} rows for residual tests, got {n}")
    ac = _xcorr(r, r, max_lag)[1:]
    q = n * (n + 2) * float(np.sum(ac ** 2 / (n - np.arange(1, max_lag + 1))))
    xc = _xcorr(r, u, max_lag) if np.ptp(u) > 0 else np.zeros(max_lag + 1)
    bound = 1.96 / math.sqrt(n)
    return dict(autocorr=ac.tolist(), ljung_box_p=float(chi2.sf(q, max_lag)),
                autocorr_outside=float(np.mean(np.abs(ac) > bound)), xcorr=xc.tolist(),
                xcorr_max=float(np.max(np.abs(xc))), xcorr_outside=float(np.mean(np.abs(xc) > bound)), bound=bound)


def level_matched(y, sim, init_rows: int = INIT_ROWS):
    """``sim`` shifted so its mean over the first ``init_rows`` rows equals that of ``y``."""
    k = max(1, min(int(init_rows), len(y)))
    return sim + (float(np.mean(y[:k])) - float(np.mean(sim[:k])))


# -- the dynamic part -------------------------------------------------------------------------------------


def _first_order_poly(a):
    rho = 1.0 / (1.0 + a)
    return np.array([1.0 - rho]), np.array([1.0, -rho])


def _polys(structure, theta, orders):
    """(b, f) in powers of q⁻¹ of the unit-DC filter for a parameter vector."""
    if structure == "first_order":
        return _first_order_poly(math.exp(theta[0]))
    if structure == "two_time_constant":
        b1, f1 = _first_order_poly(math.exp(theta[0]))
        b2, f2 = _first_order_poly(math.exp(theta[1]))
        w = 1.0 / (1.0 + math.exp(-theta[2]))
        b = np.polyadd(w * np.convolve(b1, f2), (1 - w) * np.convolve(b2, f1))
        return np.trim_zeros(b, "b") if np.any(b) else b, np.convolve(f1, f2)
    nb, nf = orders
    f = np.concatenate([[1.0], theta[nb - 1:nb - 1 + nf]])
    rest = np.asarray(theta[:nb - 1], dtype=float)
    b0 = float(np.sum(f)) - float(np.sum(rest))  # B(1) = F(1): unit DC gain
    return np.concatenate([[b0], rest]), f


def _simulate(b, f, u):
    """Filter ``u`` by ``B/F`` from equilibrium at ``u[0]`` (requires F(1) ≠ 0)."""
    from scipy.signal import lfilter, lfilter_zi

    if abs(np.sum(f)) < 1e-14:
        raise ValueError("the filter has a pole at 1: no equilibrium")
    zi = lfilter_zi(b, f) * u[0]
    return lfilter(b, f, u, zi=zi)[0]


def _stable(f):
    return len(f) < 2 or bool(np.all(np.abs(np.roots(f)) < 1.0))


def _trace_arrays(trace, where="trace"):
    from klcontrol.analysis.identification.traces import log_convention

    conv = log_convention(trace)
    if conv["kl_lag"] or conv["beta_lead"]:
        raise ValueError(f"{where}: read with kl_lag={conv['kl_lag']}, beta_lead={conv['beta_lead']}; these models "
                         "take canonical rows: pass klcontrol.analysis.identification.aligned(trace)")
    beta = np.asarray(trace.beta, dtype=float)
    kl = np.asarray(trace.kl, dtype=float)
    if beta.ndim != 1:
        raise ValueError(f"{where}: one loop per trace (use trace.loop(i)), got β of shape {beta.shape}")
    if len(beta) < 2 * MEAN_WINDOW:
        raise ValueError(f"{where}: need at least {2 * MEAN_WINDOW} rows, got {len(beta)}")
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(kl))):
        raise ValueError(f"{where}: β and KL must be finite")
    d = np.diff(np.asarray(trace.step))
    if np.any(d != 1):
        raise ValueError(f"{where}: these models need every update logged (step spacing 1); "
                         f"got spacing {sorted(set(d.tolist()))[:5]}")
    return beta, kl


@register_plant
class HammersteinFit(Plant):
    """A fitted plant ``ŷ = y₀ + G(q)[g(β)]`` (see the module docstring); loads with :func:`~klcontrol.analysis.identification.fits.load_fit`.

    Follows the plant protocol: :meth:`initial_state`, :meth:`step`,
    :meth:`equilibrium`, :meth:`linearize`, :meth:`to_dict` / :meth:`from_dict`.

    Parameters
    ----------
    structure : {"first_order", "two_time_constant", "oe"}
    b, f : sequence of float
        Numerator and denominator of ``G`` in powers of ``q⁻¹`` (``f[0] = 1``, ``B(1) = F(1)``).
    g : Gain
        Static map.
    orders : (int, int), optional
        ``(nb, nf)`` of an ``oe`` structure.
    params : dict, optional
        Named parameters (``a``, ``a1``, ``a2``, ``w``, …) for reports.
    info : dict, optional
        Fit details: traces, AIC, residual scale, per-trace fit %.
    """

    kind = "hammerstein"

    def __init__(self, structure, b, f, g, orders=None, params=None, info=None):
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        b, f = np.asarray(b, dtype=float), np.asarray(f, dtype=float)
        if b.ndim != 1 or f.ndim != 1 or len(b) < 1 or len(f) < 1 or f[0] != 1.0:
            raise ValueError("b and f must be 1-D coefficient lists with f[0] = 1")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(f))):
            raise ValueError("b and f must be finite")
        if not _stable(f):
            raise ValueError(f"the filter is unstable (poles {np.roots(f)})")
        if abs(np.sum(b) - np.sum(f)) > 1e-8 * max(1.0, abs(np.sum(f))):
            raise ValueError(f"G must have unit DC gain (B(1) = F(1)), got B(1) = {np.sum(b)}, F(1) = {np.sum(f)}")
        if not isinstance(g, Gain):
            raise ValueError(f"g must be a klcontrol Gain, got {g!r}")
        self.structure, self.b, self.f, self.g = structure, b, f, g
        self.orders = None if orders is None else tuple(int(v) for v in orders)
        self.params = dict(params or {})
        self.info = dict(info or {})

    @property
    def beta_range(self):
        """β range of the traces the dynamics were fitted on (``None`` if not recorded).

        The dynamics hold around these operating points: :func:`klcontrol.analysis.stability.lti.operating_points`
        (the default of ``klcontrol check --fit``) linearises here, not over the whole static map.
        """
        r = self.info.get("beta_range")
        return None if r is None else (float(r[0]), float(r[1]))

    # -- LTI views --------------------------------------------------------------------------------------
    def transfer_function(self):
        """``G`` as a python-control ``TransferFunction`` in ``z`` (``dt = 1``, unit DC gain)."""
        import control

        n = max(len(self.b), len(self.f))
        num = np.concatenate([self.b, np.zeros(n - len(self.b))])
        den = np.concatenate([self.f, np.zeros(n - len(self.f))])
        return control.tf(num, den, dt=1)

    @property
    def poles(self):
        """Poles of ``G`` (in ``z``)."""
        return np.roots(self.f) if len(self.f) > 1 else np.zeros(0)

    @property
    def time_constants(self):
        """``−1/ln|p|`` of each pole, in updates, longest first."""
        p = self.poles
        return sorted((float(-1.0 / math.log(abs(x))) for x in p if 0 < abs(x) < 1), reverse=True)

    def _ss(self):
        import control

        sys = control.tf2ss(self.transfer_function())
        return np.asarray(sys.A), np.asarray(sys.B), np.asarray(sys.C), np.asarray(sys.D)

    # -- plant protocol ---------------------------------------------------------------------------------
    def equilibrium(self, setpoint):
        """``(β*, y*)`` with ``g(β*) = y* = setpoint``."""
        return self.g.inverse(setpoint), setpoint

    def linearize(self, setpoint):
        """Small-signal ``(A, B, C, D)`` of ``u = β − β* → y − y*`` at the equilibrium for ``setpoint``.

        ``x(t+1) = A x(t) + B u(t)``, ``y(t) = C x(t) + D u(t)``: ``G``'s
        realisation with the input scaled by ``g′(β*)``.
        """
        beta_star = self.g.inverse(setpoint)
        gp = float(self.g.derivative(beta_star))
        A, B, C, D = self._ss()
        return A, B * gp, C, D * gp

    def statespace(self, setpoint):
        """:meth:`linearize` as a python-control ``StateSpace`` (``dt = 1``)."""
        import control

        return control.ss(*self.linearize(setpoint), dt=1)

    def initial_state(self, y0, shape=()):
        """``(x,)`` at equilibrium with output ``y0``; ``x`` has shape ``shape + (order,)``."""
        A, B, C, D = self._ss()
        beta0 = self.g.inverse(np.broadcast_to(np.asarray(y0, dtype=float), shape))
        u0 = np.asarray(self.g(beta0), dtype=float)
        xs = np.linalg.solve(np.eye(len(A)) - A, B[:, 0]) if len(A) else np.zeros(0)
        return (np.multiply.outer(u0, xs),)

    def step(self, state, beta, ops=None):
        """One update: ``(y, (x_new,))`` for weight ``beta`` (NumPy arrays; ``ops`` accepted for the protocol)."""
        A, B, C, D = self._ss()
        u = np.asarray(self.g(np.asarray(beta, dtype=float)), dtype=float)
        (x,) = state
        x = np.asarray(x, dtype=float)
        y = x @ C[0] + D[0, 0] * u if len(A) else D[0, 0] * u
        new = x @ A.T + np.multiply.outer(u, B[:, 0]) if len(A) else x
        return y, (new,)

    # -- prediction -------------------------------------------------------------------------------------
    def simulate(self, beta):
        """``G[g(β)]`` from equilibrium at the first β (no level shift)."""
        beta = np.asarray(beta, dtype=float)
        return _simulate(self.b, self.f, np.asarray(self.g(beta), dtype=float))

    def predict(self, trace, init_rows: int = INIT_ROWS):
        """Model KL for the trace's recorded β, aligned with its rows.

        The model starts at equilibrium for the first β, its level matched to
        the mean recorded KL of the first ``init_rows`` rows (:func:`level_matched`).
        """
        beta, kl = _trace_arrays(trace)
        return level_matched(kl, self.simulate(beta), init_rows)

    def frequency_response(self, freqs, setpoint=None, beta_star=None):
        """Small-signal response ``g′(β*)·G(e^{2πif})`` (nats per unit β) at ``freqs`` (cycles per update).

        The operating point is ``beta_star``, or the β with ``g(β) = setpoint``.
        """
        from scipy.signal import freqz

        if beta_star is None:
            if setpoint is None:
                raise ValueError("give setpoint or beta_star")
            beta_star = self.g.inverse(setpoint)
        gp = float(self.g.derivative(float(beta_star)))
        _, h = freqz(self.b, self.f, worN=2 * np.pi * np.asarray(freqs, dtype=float))
        return gp * h

    def parameter_draws(self, n: int = 100, seed: int = 0) -> list:
        """Fits drawn from the estimator's covariance (inflated for coloured residuals); stable draws only.

        Returns an empty list when the fit carries no covariance (saved by an older klcontrol, or singular).
        """
        theta, cov = self.info.get("theta"), self.info.get("theta_cov")
        if theta is None or cov is None:
            return []
        theta, cov = np.asarray(theta, dtype=float), np.asarray(cov, dtype=float)
        free = [float(b) for b in self.params.get("free_betas", [])]
        nfree = len(free)
        rng = np.random.default_rng(seed)
        try:
            samples = rng.multivariate_normal(theta, cov, size=int(n), check_valid="ignore", method="eigh")
        except (ValueError, np.linalg.LinAlgError):
            return []
        out = []
        for th in samples:
            dyn, lv = th[:len(th) - nfree], th[len(th) - nfree:]
            try:
                b, f = _polys(self.structure, dyn, self.orders)
                g = _with_nodes(self.g, free, lv) if nfree else self.g
                if g is None:
                    continue
                out.append(HammersteinFit(self.structure, b, f, g, self.orders))
            except (ValueError, OverflowError, np.linalg.LinAlgError):
                continue  # an unstable or degenerate draw is not a plant
        return out

    # -- persistence ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able description (``kind = "hammerstein"``)."""
        return {"kind": self.kind, "structure": self.structure, "b": self.b.tolist(), "f": self.f.tolist(),
                "orders": None if self.orders is None else list(self.orders), "g": self.g.to_dict(),
                "params": self.params, "info": self.info, "init_rows": INIT_ROWS, "mean_window": MEAN_WINDOW}

    @classmethod
    def from_dict(cls, d: dict) -> "HammersteinFit":
        """Rebuild from :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("kind") != cls.kind:
            raise ValueError(f"not a Hammerstein fit (kind {d.get('kind') if isinstance(d, dict) else d!r})")
        try:
            return cls(d["structure"], d["b"], d["f"], gain_from_dict(d["g"]), d.get("orders"), d.get("params"),
                       d.get("info"))
        except KeyError as exc:
            raise ValueError(f"Hammerstein fit description lacks {exc}") from None

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        from klcontrol.fileio import write_text

        write_text(path, json.dumps(self.to_dict(), indent=1))

    def __repr__(self):
        tc = ", ".join(f"{t:.3g}" for t in self.time_constants)
        return f"HammersteinFit({self.structure}{'' if self.orders is None else self.orders}, τ = [{tc}] updates, g={self.g!r})"


# -- estimation --------------------------------------------------------------------------------------------


def _nuisance(n, drift):
    t = np.arange(n, dtype=float)
    cols = [np.ones(n)] + ([(t - t.mean()) / max(n, 1)] if drift else [])
    return np.stack(cols, axis=1)


def _initial_thetas(structure, orders, spans):
    """Starting points: time constants log-spaced over what the traces can show."""
    taus = np.geomspace(2.0, max(spans) / 2, 6)
    if structure == "first_order":
        return [np.array([math.log(1.0 / t)]) for t in taus]
    if structure == "two_time_constant":
        out = []
        for i, t1 in enumerate(taus):
            for t2 in taus[i + 1:]:
                for w in (0.3, 0.7):
                    out.append(np.array([math.log(1.0 / t1), math.log(1.0 / t2), math.log(w / (1 - w))]))
        return out
    nb, nf = orders
    pole_sets = [np.full(nf, math.exp(-1.0 / t)) for t in taus]  # nf-fold real poles
    if nf >= 2:
        # an underdamped pair (Adam's momentum makes the KL overshoot) and, for nf ≥ 3, slow real poles
        for t in (5.0, 10.0, 20.0):
            for period in (30.0, 60.0, 120.0):
                r, th = math.exp(-1.0 / t), 2 * math.pi / period
                pair = [r * complex(math.cos(th), math.sin(th)), r * complex(math.cos(th), -math.sin(th))]
                for ts in ([] if nf == 2 else [max(spans) / 4, max(spans), 4 * max(spans)]):
                    pole_sets.append(np.array(pair + [math.exp(-1.0 / ts)] * (nf - 2)))
                if nf == 2:
                    pole_sets.append(np.array(pair))
    return [np.concatenate([np.zeros(nb - 1), np.real(np.poly(ps))[1:]]) for ps in pole_sets]


def _with_nodes(g, free_betas, values):
    """``g`` with extra (or replaced) PCHIP nodes at ``free_betas``; ``None`` if not decreasing."""
    nodes = dict(zip(g.betas.tolist(), zip(g.levels.tolist(), g.level_ci or [None] * len(g.betas))))
    for b, v in zip(free_betas, values):
        nodes[float(b)] = (float(v), None)
    bs = sorted(nodes)
    lv = [nodes[b][0] for b in bs]
    if np.any(np.diff(lv) >= 0):
        return None
    return LogPchipGain(bs, lv, [nodes[b][1] for b in bs])


def excitation_levels(traces, g, min_rows: int = 100):
    """The β levels an open-loop excitation holds for at least ``min_rows`` rows, other than ``g``'s nodes."""
    counts: dict[float, int] = {}
    for t in traces:
        vals, n = np.unique(np.round(np.asarray(t.beta, dtype=float), 12), return_counts=True)
        for v, c in zip(vals, n):
            counts[float(v)] = counts.get(float(v), 0) + int(c)
    nodes = set(np.round(g.betas, 12).tolist()) if isinstance(g, LogPchipGain) else set()
    return sorted(b for b, c in counts.items() if c >= min_rows and b not in nodes and b > 0)


def fit_dynamics(traces, g: Gain, structure: str = "two_time_constant", orders=None, drift: bool = False,
                 names=None, free_betas=()) -> HammersteinFit:
    """Fit the filter ``G`` of a Hammerstein model to traces by simulation-error least squares.

    Parameters
    ----------
    traces : sequence of Trace
        Open- or closed-loop traces logged every update (the simulated output
        does not see the measurement noise, so closed-loop data do not bias it).
    g : Gain
        Static map (e.g. :func:`fit_static_map`).
    structure : {"first_order", "two_time_constant", "oe"}
    orders : (int, int), optional
        ``(nb, nf)`` for ``"oe"`` (``nb ≥ 1`` numerator coefficients from ``q⁰``, ``nf ≥ 1``).
    drift : bool
        Per-trace linear drift as a nuisance term (not part of the model).
        Off by default: on the real VAE it absorbs level changes that the
        excitation itself causes and that the slow mode should carry (held-out
        fit % lower by 2–9 points with it, docs/identification.md).
    names : sequence of str, optional
        Trace names for ``info``.
    free_betas : sequence of float
        β values whose ``g`` is estimated here, jointly with the dynamics, as
        extra nodes of a :class:`LogPchipGain` ``g`` (the levels an open-loop
        excitation holds, :func:`excitation_levels`): the settled points of
        *other* runs fix the rest of the map.

    Returns
    -------
    HammersteinFit
    """
    from scipy.optimize import least_squares

    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    if structure == "oe":
        if orders is None or len(orders) != 2 or int(orders[0]) < 1 or int(orders[1]) < 1:
            raise ValueError(f"the oe structure needs orders (nb ≥ 1, nf ≥ 1), got {orders!r}")
        orders = (int(orders[0]), int(orders[1]))
    traces = list(traces)
    if not traces:
        raise ValueError("fit_dynamics needs at least one trace")
    names = list(names) if names is not None else [str(t.meta.get("source", f"trace {i}")) for i, t in enumerate(traces)]
    free_betas = [float(b) for b in free_betas]
    if free_betas and not isinstance(g, LogPchipGain):
        raise ValueError("free_betas needs a LogPchipGain static map")
    data = []
    for tr, nm in zip(traces, names):
        beta, kl = _trace_arrays(tr, nm)
        data.append((beta, kl, _nuisance(len(kl), drift)))
    n_tot = sum(len(d[1]) for d in data)
    nfree = len(free_betas)
    fixed_u = [np.asarray(g(beta), dtype=float) for beta, _, _ in data] if not nfree else None

    def split(theta):
        return theta[:len(theta) - nfree], theta[len(theta) - nfree:]

    def residuals(theta):
        th, lv = split(theta)
        b, f = _polys(structure, th, orders)
        gg = _with_nodes(g, free_betas, lv) if nfree else g
        if not _stable(f) or gg is None:
            return np.full(n_tot, 1e3)
        out = []
        for i, (beta, y, X) in enumerate(data):
            u = fixed_u[i] if fixed_u is not None else np.asarray(gg(beta), dtype=float)
            s = _simulate(b, f, u)
            e = y - s
            coef, *_ = np.linalg.lstsq(X, e, rcond=None)  # variable projection: level (and drift) per trace
            out.append(e - X @ coef)
        return np.concatenate(out)

    best = None
    lv0 = np.asarray(g(np.asarray(free_betas)), dtype=float) if nfree else np.zeros(0)
    for th0 in _initial_thetas(structure, orders, [len(d[1]) for d in data]):
        th0 = np.concatenate([th0, lv0])
        r0 = residuals(th0)
        if best is None or r0 @ r0 < best[1]:
            best = (th0, float(r0 @ r0))
    sol = least_squares(residuals, best[0], method="lm" if structure != "two_time_constant" else "trf",
                        x_scale="jac", max_nfev=2000)
    theta = sol.x
    th, lv = split(theta)
    b, f = _polys(structure, th, orders)
    if nfree:
        g = _with_nodes(g, free_betas, lv)
    r = residuals(theta)
    k = len(theta) + sum(X.shape[1] for _, _, X in data)
    sigma2 = float(r @ r) / n_tot
    cov = _parameter_covariance(sol.jac, r, sigma2)
    aic = n_tot * math.log(sigma2) + 2 * k
    params = {"free_betas": free_betas, "free_levels": lv.tolist()} if nfree else {}
    if structure == "first_order":
        params["a"] = math.exp(th[0])
    elif structure == "two_time_constant":
        a1, a2, w = math.exp(th[0]), math.exp(th[1]), 1 / (1 + math.exp(-th[2]))
        if a1 < a2:  # fast mode first
            a1, a2, w = a2, a1, 1 - w
        params.update(a_fast=a1, a_slow=a2, w_fast=w, tau_fast=1 / math.log1p(a1), tau_slow=1 / math.log1p(a2))
    betas = np.concatenate([np.asarray(tr.beta, dtype=float) for tr in traces])
    info = dict(traces=names, rows=n_tot, aic=aic, residual_sigma=math.sqrt(sigma2), n_params=len(theta),
                drift=drift, success=bool(sol.success), beta_range=[float(betas.min()), float(betas.max())],
                theta=theta.tolist(), theta_cov=None if cov is None else cov.tolist())
    fit = HammersteinFit(structure, b, f, g, orders, params, info)
    fit.info["fit_percent_fitted"] = [fit_percent(tr.kl, fit.predict(tr)) for tr in traces]
    return fit


def _parameter_covariance(jac, r, sigma2, max_lag: int = 50):
    """``σ²·(JᵀJ)⁻¹`` inflated for the residual's autocorrelation (``None`` when singular).

    Simulation-error residuals are coloured, so the white-noise covariance is too small by about the ratio of
    the residual count to its effective count, ``1 + 2·Σρ_k`` (Bartlett); that factor is applied (at least 1).
    """
    jac = np.asarray(jac, dtype=float)
    if jac.ndim != 2 or not np.all(np.isfinite(jac)):
        return None
    try:
        cov = sigma2 * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return None
    x = np.asarray(r, dtype=float) - float(np.mean(r))
    den = float(x @ x)
    if den > 0:
        lags = range(1, min(int(max_lag), len(x) - 1) + 1)
        rho = np.array([float(x[:-k] @ x[k:]) / den for k in lags])
        cov = cov * max(1.0, 1.0 + 2.0 * float(np.sum(rho)))
    if not (np.all(np.isfinite(cov)) and np.all(np.diag(cov) >= 0)):
        return None
    return cov


def fit_oe_orders(traces, g: Gain, max_nf: int = 3, drift: bool = False, names=None, free_betas=(),
                  all_models: bool = False):
    """OE models for every ``nf ≤ max_nf`` and ``nb ≤ nf + 1``; the one with the least AIC first.

    Returns
    -------
    best : HammersteinFit
    table : list of dict
        ``nb``, ``nf``, ``aic`` of each candidate, best first.
    models : list of HammersteinFit
        Only with ``all_models``: every fitted candidate, in the order of ``table``.
    """
    cands = []
    for nf in range(1, int(max_nf) + 1):
        for nb in range(1, nf + 2):
            try:
                cands.append(fit_dynamics(traces, g, "oe", (nb, nf), drift, names, free_betas))
            except ValueError:
                continue  # an unstable or degenerate candidate is not a model
    if not cands:
        raise ValueError("no OE candidate could be fitted")
    cands.sort(key=lambda m: m.info["aic"])
    table = [dict(nb=m.orders[0], nf=m.orders[1], aic=m.info["aic"]) for m in cands]
    return (cands[0], table, cands) if all_models else (cands[0], table)


def validate(fit, traces, names=None, max_lag: int = 25):
    """Held-out figures of a fit (any object with ``predict(trace)``) on each trace.

    Returns
    -------
    list of dict
        ``trace``, ``fit_percent`` (50-update mean), ``fit_percent_raw``,
        ``rmse_mean`` (nats, of the moving mean) and :func:`residual_tests` of the raw residual.
    """
    traces = list(traces)
    names = list(names) if names is not None else [str(t.meta.get("source", f"trace {i}")) for i, t in enumerate(traces)]
    out = []
    for tr, nm in zip(traces, names):
        yhat = np.asarray(fit.predict(tr), dtype=float)
        kl = np.asarray(tr.kl, dtype=float)
        res = kl - yhat
        out.append(dict(trace=nm, fit_percent=fit_percent(kl, yhat), fit_percent_raw=fit_percent(kl, yhat, 1),
                        rmse_mean=float(np.sqrt(np.mean((moving_mean(kl, MEAN_WINDOW) - moving_mean(yhat, MEAN_WINDOW)) ** 2))),
                        **residual_tests(res, tr.beta, max_lag)))
    return out


def static_map_from_traces(traces, rows: int = 1000, window: int = MEAN_WINDOW) -> LogPchipGain:
    """``g(β)`` from constant-β traces: the level of each over its last ``rows`` rows (with 95 % intervals)."""

    return fit_static_map(static_points([(t.beta, t.kl) for t in traces], rows, window))
