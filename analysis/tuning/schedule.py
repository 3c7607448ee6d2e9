"""Gains for a whole annealing schedule, chosen by simulating the fitted plant.

:func:`klcontrol.analysis.tuning.design.tune` designs for the linearised loop around the operating range: settling,
overshoot and noise gain of small steps.  A training run is more than that: DynamicVAE starts at
β(0) = 150, where g′ ≈ 0 and only the integral term moves β, and then follows a rising set point.
How long that start takes (about ``β(0) / (Ki·C)`` updates) and how closely the ramp is followed
depend on the schedule and on the budget, which the linear figures do not see.

:func:`tune_schedule` therefore scores every (Kp, Ki) of a log grid that is robustly stable over the
g′ range by running the nonlinear loop on the fitted plant over the real schedule, all candidates
at once (:func:`klcontrol.simulate.simulate` with arrays of gains, each loop with its own draw of
the measurement noise from one seed), and keeps the gains with the smallest tracking error whose
overshoot and β jitter stay within bounds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from klcontrol.analysis.tuning.design import PAPER_GAINS, _check_bound, _check_plant, _gprime_grid, gain_figures

__all__ = ["ScheduleFigures", "ScheduleTuneResult", "schedule_figures", "tune_schedule"]


@dataclass
class ScheduleFigures:
    """Simulated figures of a gain pair over a schedule (nonlinear loop, fitted plant).

    Attributes
    ----------
    kp, ki : float
    tracking_rmse : float
        RMS of y(t) − C(t) over the run, noise-free plant output (nats).
    overshoot : float
        Largest excess of y over C after y first reaches C (nats).
    beta_jitter : float
        Standard deviation of β(t+1) − β(t) under the measurement noise.
    final_kl, final_setpoint : float
    robust : bool
        Exactly stable for every g′ in the range (``None`` if not checked).
    """

    kp: float
    ki: float
    tracking_rmse: float
    overshoot: float
    beta_jitter: float
    final_kl: float
    final_setpoint: float
    robust: bool | None = None

    def to_dict(self) -> dict:
        """Plain dict."""
        return asdict(self)


@dataclass
class ScheduleTuneResult:
    """Gains chosen by :func:`tune_schedule`, with the reference gains' figures on the same run.

    Attributes
    ----------
    kp, ki : float
    figures : ScheduleFigures
    references : dict
        Name → :class:`ScheduleFigures`.
    steps, noise_std, beta0, window, delay : ...
        The simulated experiment.
    objective : str
    """

    kp: float
    ki: float
    figures: ScheduleFigures
    references: dict = field(default_factory=dict)
    steps: int = 0
    noise_std: float = 0.0
    beta0: float = 0.0
    window: int = 1
    objective: str = ""
    delay: int = 0

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {"kp": self.kp, "ki": self.ki, "figures": self.figures.to_dict(),
                "references": {k: v.to_dict() for k, v in self.references.items()}, "steps": self.steps,
                "noise_std": self.noise_std, "beta0": self.beta0, "window": self.window, "objective": self.objective}

    def table(self) -> str:
        """Plain-text side-by-side table of the tuned and reference gains."""
        head = f"{'gains':>10} {'Kp':>10} {'Ki':>10} {'robust':>7} {'track RMSE':>11} {'overshoot':>10} {'β jitter':>9}"
        lines = [head]
        for name, f in [("tuned", self.figures), *self.references.items()]:
            lines.append(f"{name:>10} {f.kp:>10.4g} {f.ki:>10.4g} {str(f.robust):>7} {f.tracking_rmse:>11.3f} "
                         f"{f.overshoot:>10.3f} {f.beta_jitter:>9.4f}")
        return "\n".join(lines)


def _controller(kp, ki, setpoint, beta0, window):
    from klcontrol.controllers import IncrementalPI

    return IncrementalPI(kp, ki, setpoint, beta0=beta0, filter=window)


def schedule_figures(kp, ki, plant, setpoint, steps: int, *, beta0: float = 150.0, window: int = 5,
                     delay: int = 0, noise_std: float = 0.5, y0: float = 0.5, seed: int = 0) -> list:
    """Simulate DynamicVAE's incremental PI with gains ``(kp, ki)`` (arrays: many loops) over a schedule.

    Parameters
    ----------
    kp, ki : float or array_like of shape (n,)
    plant : FirstOrderPlant
        The fitted plant.
    setpoint : SetPoint
        The schedule C(t) of the run.
    steps : int
        Updates simulated.
    beta0 : float
        Initial β.
    window, delay : int
        Moving-average window and measurement delay.
    noise_std : float
        Standard deviation of the KL measurement noise (nats; minibatch noise).
    y0 : float
        KL of the untrained model.
    seed : int
        Noise seed (each loop draws its own noise from this generator).

    Returns
    -------
    list of ScheduleFigures
        One per gain pair (``robust`` left ``None``).
    """
    from klcontrol.simulate import response_metrics, simulate

    kp = np.atleast_1d(np.asarray(kp, dtype=float))
    ki = np.atleast_1d(np.asarray(ki, dtype=float))
    kp, ki = np.broadcast_arrays(kp, ki)
    tr = simulate(_controller(kp.copy(), ki.copy(), setpoint, beta0, window), plant, int(steps), delay=delay,
                  y0=y0, noise_std=noise_std, seed=seed)
    m = response_metrics(tr)
    jitter = np.std(np.diff(tr.beta, axis=0), axis=0)
    return [ScheduleFigures(float(kp[i]), float(ki[i]), float(m["tracking_rmse"][i]), float(m["overshoot"][i]),
                            float(jitter[i]), float(m["final_kl"][i]), float(m["final_setpoint"][i]))
            for i in range(kp.size)]


def tune_schedule(plant, setpoint, steps: int, *, gprime=None, beta0: float = 150.0, window: int = 5,
                  delay: int = 0, noise_std: float = 0.5, y0: float = 0.5, max_overshoot: float = 1.0,
                  max_jitter: float | None = None, compare: dict | None = None, grid: int = 25,
                  seed: int = 0) -> ScheduleTuneResult:
    """Kp, Ki with the smallest simulated tracking error over a schedule, robustly stable.

    Objective: minimise the RMS of y − C over the simulated run (nonlinear loop on the fitted
    plant, start from β(0), measurement noise), subject to exact robust stability over the g′
    range, an overshoot ≤ ``max_overshoot`` nats and a β jitter ≤ ``max_jitter``.

    Parameters
    ----------
    plant : FirstOrderPlant or fit result
        The fitted plant (``a`` and ``g``).
    setpoint : SetPoint
        The run's schedule (e.g. ``StepRamp.dynamicvae_dsprites().compressed(160)``).
    steps : int
        Length of the run.
    gprime : (float, float), optional
        g′ range for the stability check (default: the fit's ``gprime_range()``).
    beta0, window, delay, noise_std, y0, seed
        As in :func:`schedule_figures`.
    max_overshoot : float
        Largest allowed overshoot (nats).
    max_jitter : float, optional
        Largest allowed β jitter (default: none).
    compare : dict, optional
        Name → (Kp, Ki) reported side by side (default: the paper's).
    grid : int
        Points per axis of the log grid.

    Returns
    -------
    ScheduleTuneResult

    Raises
    ------
    ValueError
        Bad plant or range, ``steps < 2``, or no stable candidate meets the bounds.
    """
    from klcontrol.analysis import stability

    if gprime is None:
        if not hasattr(plant, "gprime_range"):
            raise ValueError("give gprime=(g′min, g′max) for a plant without a fitted g′ range")
        gprime = plant.gprime_range() if callable(plant.gprime_range) else plant.gprime_range
    if getattr(plant, "a", None) is None:
        raise ValueError(f"{type(plant).__name__} has no plant rate a; pass a fitted or FirstOrderPlant plant")
    a, lo, hi = _check_plant(plant.a, gprime)
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer ≥ 2, got {steps!r}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a finite number ≥ 0, got {noise_std!r}")
    max_overshoot = _check_bound("max_overshoot", max_overshoot)
    if max_jitter is not None:
        max_jitter = _check_bound("max_jitter", max_jitter)
    scale = 1.0 / (a * abs(hi))
    KP, KI = np.meshgrid(np.geomspace(1e-3, 4.0 * scale, grid), np.geomspace(1e-5, 0.5 * scale, grid), indexing="ij")
    KP, KI = KP.ravel(), KI.ravel()
    rho = np.zeros(KP.shape)
    for g in _gprime_grid(lo, hi, 9):
        rho = np.maximum(rho, stability.spectral_radius(KP, KI, a, np.full(KP.shape, g), window=window, delay=delay))
    keep = rho < 1
    if not keep.any():
        raise ValueError("no gain pair on the grid is stable over the whole g′ range")
    figs = schedule_figures(KP[keep], KI[keep], plant, setpoint, steps, beta0=beta0, window=window, delay=delay,
                            noise_std=noise_std, y0=y0, seed=seed)
    jit = math.inf if max_jitter is None else max_jitter
    ok = [f for f in figs if f.overshoot <= max_overshoot and f.beta_jitter <= jit and math.isfinite(f.tracking_rmse)]
    if not ok:
        raise ValueError(f"infeasible targets: no stable gains keep the overshoot ≤ {max_overshoot} nats"
                         + ("" if max_jitter is None else f" and the β jitter ≤ {max_jitter}"))
    best = None
    for f in sorted(ok, key=lambda f: f.tracking_rmse):
        if gain_figures(f.kp, f.ki, a, (lo, hi), window, delay).robust:  # exact check on the sampled verdict
            best = f
            break
    if best is None:
        raise ValueError("no candidate passed the exact robust stability check; refine the grid")
    best.robust = True
    compare = {"paper": PAPER_GAINS} if compare is None else dict(compare)
    refs = {}
    for name, (kp, ki) in compare.items():
        (f,) = schedule_figures(kp, ki, plant, setpoint, steps, beta0=beta0, window=window, delay=delay,
                                noise_std=noise_std, y0=y0, seed=seed)
        f.robust = gain_figures(kp, ki, a, (lo, hi), window, delay).robust
        refs[name] = f
    objective = (f"min simulated tracking RMSE over {steps} steps from β0={beta0:g} s.t. robust stability, "
                 f"overshoot ≤ {max_overshoot} nats" + ("" if max_jitter is None else f", β jitter ≤ {max_jitter}"))
    return ScheduleTuneResult(best.kp, best.ki, best, refs, int(steps), float(noise_std), float(beta0), int(window),
                              objective, int(delay))
