"""A model-free check on the real plant: relay feedback (Åström–Hägglund autotuning) on a ray ``Kp = r·Ki``.

The incremental PI on the ray is ``Δβ(t) = Ki·v(t)`` with ``v(t) = r·(d(t) − d(t−1)) + d(t)`` and ``d = m − C`` (the
filtered KL's excess over the set point; a KL above ``C`` raises β). :class:`RelayProbe` replaces the gain by a
relay, ``Δβ(t) = h·sign(v(t))``: the loop then settles into a limit cycle at the frequency where the ray's loop
has a phase of −180°, the frequency at which that loop turns unstable. By the describing function of an ideal
relay, ``N(A) = 4h/(πA)`` for a sinusoid of amplitude ``A`` at its input, so the critical gain is
``Ki = 4h/(π·A₁)`` with ``A₁`` the first-harmonic amplitude of ``v``, and the critical period is the cycle's.

Accuracy to expect in a discrete loop: the relay switches only at updates, so the phase crossover is found to
within half an update (about ``180°/P`` of phase for a period of ``P`` updates: 4° at P = 45, 7° at P = 26); the
describing function neglects the harmonics the plant passes, and the KL's noise switches a small relay early
(chattering), which moves the cycle off the crossover. So :func:`relay_critical_gain` times the cycle on β (a
clean triangle) and measures the plant's response there as a lock-in amplifier, and the relay step should make
the KL's swing several times its noise: ``h`` = 4 % of β* per update by default (``klcontrol identify
--relay-h``). Measured: on a simulated plant with the dSprites ring within 10 % (``tests/test_relay.py``); on three
MNIST networks 0.179–0.192 against an observed bracket of 0.15–0.2 each (docs/your_vae.md). The proportional
ray (a relay on β itself) was tried and is off by 3× on the dSprites model (its direct feedthrough passes the
square wave's harmonics), and rays with ``r > 0`` through ``v`` by up to 30 %: only the integral ray is offered.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["RelayProbe", "relay_critical_gain", "relay_from_file", "RELAY_TOLERANCE"]

#: Relative accuracy taken for a relay's critical gain: its interval is ``ki·(1 ± RELAY_TOLERANCE)``. The cycle is
#: timed to within half an update (4° of phase at a period of 45) and the KL's noise moves it further; chosen after
#: the MNIST relays of identifications 0-2 were seen (docs/identification.md, "Relay feedback").
RELAY_TOLERANCE = 0.15


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
    """Critical gain and period on the integral ray from a relay run's trace (row ``t``: β(t), y(t)).

    The relay's output β is a clean triangle wave even when the KL is noisy, so the cycle is timed on β (the
    turns from rising to falling, after the first ``skip`` fraction of the rows), and the plant's response at
    that frequency is measured like a lock-in amplifier: ``P(ω₀) = Y₁/B₁``, the first Fourier coefficients of the
    KL and of β over whole cycles (noise averages out). The critical gain is ``Ki = 1/|K₁(ω₀)·P(ω₀)|`` with ``K₁``
    the controller at ``Ki = 1`` (:func:`klcontrol.analysis.stability.critical.controller_response`, the moving
    average included); for a clean relay this is the describing-function estimate ``4h/(π·A₁)``. The phase of
    ``K₁P`` (0° at an exact phase crossover) is returned as a check: the limit cycle's frequency is off the
    crossover by the relay's sampling and by noise that switches it early.

    Returns
    -------
    dict
        ``ki``, ``kp``, ``period``, ``loop_phase_deg``, ``cycles``, ``beta_amplitude``, ``kl_amplitude``,
        ``ki_describing_function`` (``4h/(π·A₁)`` on the filtered KL, for comparison).

    Raises
    ------
    ValueError
        When the trace shows fewer than three whole cycles (no limit cycle: a longer run or a larger ``h``).
    """
    from klcontrol.analysis.stability.critical import controller_response

    kl = np.asarray(kl, dtype=float)
    beta = np.asarray(beta, dtype=float)
    start = int(skip * len(beta))
    seg_b = beta[start:]
    db = np.diff(seg_b)
    # A maximum of β is where the relay switched down. Noise can flip it back and forth near the top (chattering):
    # only maxima in the upper half of the swing count, and a run of them closer than a few updates is one turn.
    cand = np.flatnonzero((db[:-1] > 0) & (db[1:] < 0)) + 1
    cand = cand[seg_b[cand] > np.median(seg_b)]
    turns = [int(c) for i, c in enumerate(cand) if i == 0 or c - cand[i - 1] > 4]
    if len(turns) < 4:
        raise ValueError(f"the relay run shows {max(len(turns) - 1, 0)} whole cycles after its transient; need ≥ 3 "
                         "(run longer, or raise the relay step h)")
    a, b = start + int(turns[0]), start + int(turns[-1])
    period = (b - a) / (len(turns) - 1)
    t = np.arange(b - a)
    ph = np.exp(-2j * np.pi * t / period)
    b1 = 2 * np.sum((beta[a:b] - beta[a:b].mean()) * ph) / len(t)
    y1 = 2 * np.sum((kl[a:b] - kl[a:b].mean()) * ph) / len(t)
    k1 = controller_response([1.0 / period], float(ratio), 1.0, window)[0]
    loop = k1 * y1 / b1
    m = np.convolve(np.concatenate([np.full(window - 1, kl[0]), kl]), np.ones(window) / window, "valid")
    d = m[a:b] - setpoint
    v = d + ratio * np.diff(np.concatenate([[d[0]], d]))
    a1 = 2 * abs(np.sum(v * ph)) / len(t)
    return dict(ki=float(1 / abs(loop)), kp=float(ratio / abs(loop)), period=float(period),
                loop_phase_deg=float(np.degrees(np.angle(loop))), cycles=len(turns) - 1,
                beta_amplitude=float(abs(b1)), kl_amplitude=float(abs(y1)),
                ki_describing_function=float(4 * h / (math.pi * a1)))


def relay_from_file(path) -> dict:
    """:func:`relay_critical_gain` of a relay run written by ``klcontrol identify``.

    ``path`` is the run's exported trace (``relay_*.csv.gz``, its settings in the ``.config.json`` beside it) or
    its run directory (``trace.csv`` and ``config.json``). Returns the estimate with ``ratio`` and ``trace``.

    Raises
    ------
    ValueError
        When the file or its settings are missing or malformed, or no limit cycle shows.
    """
    import json
    import os

    from klcontrol.analysis.identification.traces import aligned, read_trace

    path = str(path)
    if os.path.isdir(path):
        trace, cfg = os.path.join(path, "trace.csv"), os.path.join(path, "config.json")
    else:
        trace = path
        cfg = path[:-len(".csv.gz")] + ".config.json" if path.endswith(".csv.gz") else os.path.splitext(path)[0] + ".config.json"
    try:
        with open(cfg, encoding="utf-8") as fh:
            exc = json.load(fh)["excitation"]
        ratio, h, sp, w = float(exc["ratio"]), float(exc["h"]), float(exc["setpoint"]), int(exc["window"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a relay run of klcontrol identify (its settings {cfg}: {e})") from None
    if exc.get("kind") != "relay":
        raise ValueError(f"{path}: not a relay run (kind {exc.get('kind')!r} in {cfg})")
    tr = aligned(read_trace(trace), where=trace)
    try:
        r = relay_critical_gain(tr.beta, tr.kl, ratio, h, sp, w)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return dict(r, ratio=ratio, trace=path)

