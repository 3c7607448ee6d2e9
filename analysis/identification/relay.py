"""A model-free check on the real plant: relay feedback (Åström–Hägglund autotuning) on a ray ``Kp = r·Ki``.

The incremental PI on the ray is ``Δβ(t) = Ki·v(t)`` with ``v(t) = r·(d(t) − d(t−1)) + d(t)`` and ``d = m − C`` (the
filtered KL's excess over the set point; a KL above ``C`` raises β). :class:`RelayProbe` replaces the gain by a
relay, ``Δβ(t) = h·sign(v(t))``: the loop then settles into a limit cycle at the frequency where the ray's loop
has a phase of −180°, the frequency at which that loop turns unstable. By the describing function of an ideal
relay, ``N(A) = 4h/(πA)`` for a sinusoid of amplitude ``A`` at its input, so the critical gain is
``Ki = 4h/(π·A₁)`` with ``A₁`` the first-harmonic amplitude of ``v``, and the critical period is the cycle's.

Accuracy to expect in a discrete loop: the relay switches only at updates, so the phase crossover is found to
within half an update (about ``180°/P`` of phase for a period of ``P`` updates: 4° at P = 45, 7° at P = 26); the
describing function neglects the harmonics the plant passes (small for the low-pass KL, whose response falls
quickly above the ring) and measurement noise adds to ``v``. A few percent from the sampling and 10–20 % in all
on the real plants is what to expect (docs/your_vae.md reports the measured figures).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["RelayProbe", "relay_critical_gain"]


class RelayProbe:
    """A β "controller" that runs the relay experiment on one ray (use it where a controller goes).

    Parameters
    ----------
    ratio : float
        ``r`` of the ray ``Kp = r·Ki`` (0: integral only).
    h : float
        Relay step: β moves by ``±h`` per update.
    setpoint : float
        ``C``, the KL the relay oscillates around (the settled KL at β*).
    beta0 : float
        β* (the first β).
    window : int
        The moving average of the controller whose critical gain is measured.
    beta_min : float
        Lower clamp of β (kept well away by choosing ``h`` small).
    """

    def __init__(self, ratio: float, h: float, setpoint: float, beta0: float, window: int = 5, beta_min: float = 1e-3):
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"the relay step h must be positive, got {h!r}")
        if int(window) < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.ratio, self.h, self.setpoint = float(ratio), float(h), float(setpoint)
        self.window, self.beta_min = int(window), float(beta_min)
        self._beta = float(beta0)
        self._hist: list = []
        self._d_prev = None
        self.v: list = []  # the relay's input, one value per step

    @property
    def beta(self) -> float:
        """β of the next update."""
        return self._beta

    @property
    def steps_taken(self) -> int:
        """Measurements consumed so far."""
        return len(self.v)

    def prime(self, kl) -> None:
        """Fill the moving average with the first KL (the loop starts at rest)."""
        self._hist = [float(kl)] * self.window

    def check(self) -> None:
        """Nothing is deferred."""

    def step(self, kl) -> float:
        """Consume a KL measurement; return the next β."""
        v_kl = float(kl.detach()) if hasattr(kl, "detach") else float(kl)
        if not math.isfinite(v_kl):
            raise ValueError(f"KL measurement is {v_kl!r}; the relay's state is unchanged")
        if not self._hist:
            self.prime(v_kl)
        self._hist = (self._hist + [v_kl])[-self.window:]
        d = sum(self._hist) / self.window - self.setpoint
        v = d + self.ratio * (d - (self._d_prev if self._d_prev is not None else d))
        self._d_prev = d
        self.v.append(v)
        self._beta = max(self.beta_min, self._beta + (self.h if v > 0 else -self.h))
        return self._beta

    def state_dict(self) -> dict:
        """The probe's state (for checkpoints)."""
        return dict(kind="relay_probe", ratio=self.ratio, h=self.h, setpoint=self.setpoint, window=self.window,
                    beta=self._beta, hist=list(self._hist), d_prev=self._d_prev, v=list(self.v))

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`."""
        if sd.get("kind") != "relay_probe":
            raise ValueError("not the state of a RelayProbe")
        self._beta, self._hist, self._d_prev, self.v = float(sd["beta"]), list(sd["hist"]), sd["d_prev"], list(sd["v"])

    def __repr__(self):
        return f"RelayProbe(ratio={self.ratio:g}, h={self.h:g}, setpoint={self.setpoint:g}, window={self.window})"


def relay_critical_gain(beta, kl, ratio: float, h: float, setpoint: float, window: int = 5, skip: float = 0.3) -> dict:
    """Critical gain and period on the ray from a relay run's trace (row ``t``: β(t), y(t)).

    ``v`` is recomputed from the KL as :class:`RelayProbe` formed it; after the first ``skip`` fraction of the
    rows, the period is the mean distance between upward zero crossings of ``v`` and ``A₁`` the amplitude of its
    Fourier component at that period (whole cycles only).

    Returns
    -------
    dict
        ``ki``, ``kp``, ``period``, ``amplitude`` (A₁), ``cycles`` (whole cycles used), ``beta_amplitude``.

    Raises
    ------
    ValueError
        When the trace shows fewer than three whole cycles (no limit cycle: a longer run or a larger ``h``).
    """
    kl = np.asarray(kl, dtype=float)
    beta = np.asarray(beta, dtype=float)
    m = np.convolve(np.concatenate([np.full(window - 1, kl[0]), kl]), np.ones(window) / window, "valid")
    d = m - setpoint
    v = d + ratio * np.diff(np.concatenate([[d[0]], d]))
    start = int(skip * len(v))
    x = v[start:]
    up = np.flatnonzero((x[:-1] <= 0) & (x[1:] > 0))
    if len(up) < 4:
        raise ValueError(f"the relay run shows {max(len(up) - 1, 0)} whole cycles after its transient; need ≥ 3 "
                         "(run longer, or raise the relay step h)")
    a, b = int(up[0]), int(up[-1])
    period = (b - a) / (len(up) - 1)
    seg = x[a:b]
    t = np.arange(len(seg))
    c1 = 2 * np.abs(np.sum(seg * np.exp(-2j * np.pi * t / period))) / len(seg)
    ki = 4 * h / (math.pi * c1)
    bseg = beta[start:][a:b]
    return dict(ki=float(ki), kp=float(ratio * ki), period=float(period), amplitude=float(c1), cycles=len(up) - 1,
                beta_amplitude=float((np.max(bseg) - np.min(bseg)) / 2))
