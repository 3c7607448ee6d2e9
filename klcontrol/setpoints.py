"""Set points ``C(t)``: callables of the training step.

Each set point evaluates on a Python int (returns a float), a NumPy array of
steps (returns an array) or a torch tensor (returns a tensor on its device, no
host sync), so whole schedules can be drawn with ``sp(np.arange(n))``.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import is_torch, ops_for

__all__ = ["SetPoint", "Constant", "LinearRamp", "StepRamp", "Sequence", "as_setpoint"]

_INF = float("inf")


def _finite(name, v):
    arr = np.asarray(v, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return float(v) if arr.ndim == 0 else arr


def _out(v, t):
    """Return a Python float for scalar integer steps."""
    if isinstance(t, (int, np.integer)) and np.ndim(v) == 0:
        return float(v)
    return v


class SetPoint:
    """Base class: ``sp(t) -> C(t)``; supports ``+``, ``*`` by a number and ``shift``."""

    def value(self, t):
        """Set point at step(s) ``t`` (already an int, array or tensor)."""
        raise TypeError("SetPoint subclasses must define value(t)")

    def __call__(self, t):
        if is_torch(t) and not t.is_floating_point():
            # Integer step tensors: divisions would give the default (float32)
            # dtype and clamps to ±inf cannot be cast to int.
            t = t.double()
        return _out(self.value(t), t)

    def __add__(self, other):
        return _Sum(self, as_setpoint(other))

    __radd__ = __add__

    def __mul__(self, k):
        return _Scaled(self, _finite("scale factor", k))

    __rmul__ = __mul__

    def shift(self, steps: int) -> "SetPoint":
        """The same schedule started ``steps`` later (held at its t=0 value before).

        A negative ``steps`` makes it lead: ``sp.shift(-2)(t) == sp(t + 2)``
        (the official ControlVAE/DynamicVAE loops' set-point phase).
        """
        return _Shifted(self, int(steps))

    def compressed(self, factor: float) -> "SetPoint":
        """The same schedule run ``factor`` times faster: ``C'(t) = C(factor·t)``.

        Used to fit a paper's annealing into a shorter training budget
        (``factor`` = paper steps / budget steps); ``factor`` must be > 0.
        """
        f = _finite("compression factor", factor)
        if np.ndim(f) or f <= 0:
            raise ValueError(f"compression factor must be a positive number, got {factor!r}")
        return _Compressed(self, float(f))

    def to_dict(self) -> dict:
        """JSON-able description (for traces' provenance)."""
        return {"kind": type(self).__name__}


class Constant(SetPoint):
    """A constant set point ``C``.

    Parameters
    ----------
    c : float or array
        The set point (nats).
    """

    def __init__(self, c):
        self.c = _finite("set point", c)

    def value(self, t):
        return self.c + 0 * t

    def to_dict(self):
        return {"kind": "Constant", "c": np.asarray(self.c).tolist()}

    def __repr__(self):
        return f"Constant({self.c!r})"


class LinearRamp(SetPoint):
    """Linear ramp from ``start`` to ``stop`` over ``steps`` steps, then held.

    Burgess et al. (dSprites): ``LinearRamp(0, 25, 100_000)``.

    Parameters
    ----------
    start, stop : float
        Values at step ``begin`` and ``begin + steps``.
    steps : int
        Ramp length, ≥ 1.
    begin : int
        First step of the ramp (held at ``start`` before).
    """

    def __init__(self, start: float, stop: float, steps: int, begin: int = 0):
        self.start = _finite("start", start)
        self.stop = _finite("stop", stop)
        if int(steps) < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps!r}")
        self.steps, self.begin = int(steps), int(begin)

    def value(self, t):
        ops = ops_for(t)
        frac = ops.clip((t - self.begin) / self.steps, 0.0, 1.0)
        return self.start + (self.stop - self.start) * frac

    def to_dict(self):
        return {"kind": "LinearRamp", "start": self.start, "stop": self.stop, "steps": self.steps, "begin": self.begin}

    def __repr__(self):
        return f"LinearRamp({self.start}, {self.stop}, {self.steps}, begin={self.begin})"


class StepRamp(SetPoint):
    """DynamicVAE's hybrid step-ramp annealing.

    Period 0 holds ``start``; each later period ``k`` first ramps linearly by
    ``step`` over ``ramp`` steps, then holds for the rest of the period (as the
    official code does); the level never exceeds ``stop``.

    Parameters
    ----------
    start, stop : float
        First and final level (nats), ``stop ≥ start``.
    step : float
        Increase per period, > 0.
    period : int
        Steps per period (paper: 6000).
    ramp : int
        Ramp steps at the start of each period, ``1 ≤ ramp ≤ period`` (paper: 1000).
    """

    def __init__(self, start: float, stop: float, step: float, period: int, ramp: int):
        self.start, self.stop, self.step = _finite("start", start), _finite("stop", stop), _finite("step", step)
        if self.stop < self.start:
            raise ValueError(f"stop ({stop}) must be ≥ start ({start})")
        if self.step <= 0:
            raise ValueError(f"step must be > 0, got {step}")
        self.period, self.ramp = int(period), int(ramp)
        if self.period < 1 or not 1 <= self.ramp <= self.period:
            raise ValueError(f"need period ≥ 1 and 1 ≤ ramp ≤ period, got period={period}, ramp={ramp}")

    @classmethod
    def dynamicvae_dsprites(cls) -> "StepRamp":
        """The paper's dSprites schedule: 0.5 → 20 nats, +0.15 per 6000 steps, 1000-step ramps."""
        from .papers import DYNAMICVAE_DSPRITES_SETPOINT

        return cls(*DYNAMICVAE_DSPRITES_SETPOINT)

    @classmethod
    def controlvae_dsprites(cls) -> "StepRamp":
        """ControlVAE's dSprites schedule (official ``solver_light.py``): 0.5 nats, +0.15 every 5000 steps (jumps), up to 18."""
        from .papers import CONTROLVAE_DSPRITES_SETPOINT

        return cls(*CONTROLVAE_DSPRITES_SETPOINT)

    @property
    def total_steps(self) -> int:
        """First step at which the final level ``stop`` is reached."""
        q = (self.stop - self.start) / self.step
        n = math.ceil(q - 1e-12)  # the period whose ramp reaches stop (period k ramps to start + k·step)
        if n <= 0:
            return 0
        return n * self.period + math.ceil(self.ramp * (q - (n - 1)) - 1e-9)

    def value(self, t):
        ops = ops_for(t)
        k = t // self.period
        r = t - k * self.period
        level = self.start + self.step * (
            ops.clip(k - 1, 0, _INF) + ops.clip(k, 0, 1) * ops.clip(r / self.ramp, 0.0, 1.0)
        )
        return ops.clip(level, -_INF, self.stop)

    def to_dict(self):
        return {"kind": "StepRamp", "start": self.start, "stop": self.stop, "step": self.step,
                "period": self.period, "ramp": self.ramp}

    def __repr__(self):
        return f"StepRamp({self.start}, {self.stop}, {self.step}, {self.period}, {self.ramp})"


class Sequence(SetPoint):
    """Concatenate schedules: ``Sequence([(sp0, n0), (sp1, n1), ..., (spk, None)])``.

    Each schedule runs on its own local clock for its number of steps; the
    last one (length ``None``) runs forever.

    Parameters
    ----------
    parts : list of (SetPoint or float, int or None)
        Schedules and their lengths.
    """

    def __init__(self, parts):
        if not parts:
            raise ValueError("Sequence needs at least one part")
        self.parts, self.starts = [], []
        start = 0
        for i, (sp, n) in enumerate(parts):
            if n is None and i != len(parts) - 1:
                raise ValueError("only the last part of a Sequence may have length None")
            if n is not None and int(n) < 1:
                raise ValueError(f"part {i} length must be ≥ 1, got {n}")
            self.parts.append(as_setpoint(sp))
            self.starts.append(start)
            start += int(n) if n is not None else 0

    def value(self, t):
        ops = ops_for(t)
        out = self.parts[0].value(t)
        for sp, s in zip(self.parts[1:], self.starts[1:]):
            local = ops.clip(t - s, 0, _INF)
            out = ops.where(ops.lt(t, s), out, sp.value(local))
        return out


class _Sum(SetPoint):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def value(self, t):
        return self.a.value(t) + self.b.value(t)


class _Scaled(SetPoint):
    def __init__(self, sp, k):
        self.sp, self.k = sp, k

    def value(self, t):
        return self.k * self.sp.value(t)


class _Shifted(SetPoint):
    def __init__(self, sp, steps):
        self.sp, self.steps = sp, steps

    def value(self, t):
        return self.sp.value(ops_for(t).clip(t - self.steps, 0, _INF))

    def to_dict(self):
        return {"kind": "Shifted", "steps": self.steps, "of": self.sp.to_dict()}

    def __repr__(self):
        return f"{self.sp!r}.shift({self.steps})"


class _Compressed(SetPoint):
    def __init__(self, sp, factor):
        self.sp, self.factor = sp, factor

    def value(self, t):
        return self.sp.value(t * self.factor)

    def to_dict(self):
        return {"kind": "Compressed", "factor": self.factor, "of": self.sp.to_dict()}

    def __repr__(self):
        return f"{self.sp!r}.compressed({self.factor!r})"


def as_setpoint(sp) -> SetPoint:
    """Coerce a number or array into :class:`Constant`; pass a SetPoint through.

    Any other callable ``f(t)`` is wrapped as is.
    """
    if isinstance(sp, SetPoint):
        return sp
    if callable(sp):
        return _Callable(sp)
    return Constant(sp)


class _Callable(SetPoint):
    def __init__(self, f):
        self.f = f

    def value(self, t):
        return self.f(t)
