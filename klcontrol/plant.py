"""Plant models of the KL response to β.

The first-order model of DynamicVAE (Eq. 14), with Ts = 1 step::

    y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t)),   a > 0, g decreasing,

where ``y(t)`` is the KL after update ``t`` and ``β(t)`` the weight used in
that update.  At a constant β the KL settles at ``g(β)`` with time constant
``≈ 1/a`` steps.
"""
from __future__ import annotations

import numpy as np

from .backend import is_sympy

__all__ = ["Gain", "ExpGain", "FirstOrderPlant", "register_gain", "gain_from_dict"]

_GAINS: dict[str, type] = {}


def register_gain(cls):
    """Class decorator: make a :class:`Gain` subclass loadable by :func:`gain_from_dict`."""
    _GAINS[cls.kind] = cls
    return cls


def gain_from_dict(d: dict) -> "Gain":
    """Rebuild a steady-state gain from its :meth:`Gain.to_dict`."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _GAINS:
        raise ValueError(f"unknown gain kind {kind!r}; known: {sorted(_GAINS)}")
    return _GAINS[kind].from_dict(d)


class Gain:
    """Steady-state map ``g(β)``: the KL the model settles at under a constant β."""

    kind = "gain"

    def __call__(self, beta):
        """``g(β)``, vectorised (and sympy-friendly where the model allows)."""
        raise TypeError("Gain subclasses define __call__")

    def derivative(self, beta):
        """``g′(β)``, vectorised."""
        raise TypeError("Gain subclasses define derivative")

    def inverse(self, y):
        """``β`` with ``g(β) = y`` (the equilibrium β for set point ``y``)."""
        raise TypeError("Gain subclasses define inverse")

    def to_dict(self) -> dict:
        """JSON-able description."""
        raise TypeError("Gain subclasses define to_dict")


@register_gain
class ExpGain(Gain):
    """``g(β) = A·exp(−kβ)`` (the papers' fit: MNIST A = 26.38, k = 0.0476).

    Parameters
    ----------
    A : float or array
        KL at β = 0 (nats), > 0.
    k : float or array
        Decay rate, > 0.
    """

    kind = "exp"

    def __init__(self, A, k):
        self.A = _positive("A", A)
        self.k = _positive("k", k)

    def __call__(self, beta):
        if is_sympy(beta):
            import sympy

            return self.A * sympy.exp(-self.k * beta)
        return self.A * np.exp(-self.k * np.asarray(beta, dtype=float))

    def derivative(self, beta):
        return -self.k * self(beta)

    def inverse(self, y):
        y = np.asarray(y, dtype=float)
        if np.any(y <= 0):
            raise ValueError("ExpGain.inverse needs y > 0")
        return np.log(self.A / y) / self.k

    def to_dict(self):
        return {"kind": self.kind, "A": np.asarray(self.A).tolist(), "k": np.asarray(self.k).tolist()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(d["A"], d["k"])

    def __repr__(self):
        return f"ExpGain(A={self.A!r}, k={self.k!r})"


class _CallableGain(Gain):
    """Wrap a user's ``g(β)``; derivative by central differences if none given."""

    kind = "callable"

    def __init__(self, f, fprime=None):
        self.f, self.fprime = f, fprime

    def __call__(self, beta):
        return self.f(beta)

    def derivative(self, beta):
        if self.fprime is not None:
            return self.fprime(beta)
        beta = np.asarray(beta, dtype=float)
        h = 1e-5 * np.maximum(1.0, np.abs(beta))
        return (np.asarray(self.f(beta + h)) - np.asarray(self.f(beta - h))) / (2 * h)

    def inverse(self, y):
        from scipy.optimize import brentq

        y = float(y)
        lo, hi = 0.0, 1.0
        while float(self.f(hi)) > y and hi < 1e9:
            hi *= 2
        return brentq(lambda b: float(self.f(b)) - y, lo, hi)

    def to_dict(self):
        raise ValueError("a plant with a Python-callable g cannot be saved; use ExpGain or a fitted gain")


def _positive(name, v):
    arr = np.asarray(v, dtype=float)
    if arr.ndim > 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0 (scalar or 1-D), got {v!r}")
    return float(arr) if arr.ndim == 0 else arr


class FirstOrderPlant:
    """First-order discrete KL plant ``y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t))``.

    Parameters
    ----------
    a : float or array
        Rate, > 0 (time constant ≈ 1/a steps; paper: 1/2500 dSprites, 1/5000 MNIST).
    g : Gain or callable
        Steady-state KL as a function of β, decreasing.
    """

    def __init__(self, a, g):
        self.a = _positive("a", a)
        if isinstance(g, Gain):
            self.g = g
        elif callable(g):
            self.g = _CallableGain(g)
        else:
            raise ValueError(f"g must be a Gain or a callable g(beta), got {g!r}")

    def step(self, y_prev, beta):
        """KL after one update with weight ``beta`` from KL ``y_prev``."""
        a = self.a
        return y_prev / (1 + a) + a / (1 + a) * self.g(beta)

    def equilibrium(self, setpoint):
        """``(β*, y*)`` with ``g(β*) = y* = setpoint``."""
        return self.g.inverse(setpoint), setpoint

    def gprime_at(self, setpoint):
        """``g′(β*)`` at the equilibrium for ``setpoint``."""
        return self.g.derivative(self.g.inverse(setpoint))

    @property
    def time_constant(self):
        """Steps for 63.2 % of a step response: ``1/ln(1 + a)`` (≈ 1/a for small a)."""
        a = np.asarray(self.a, dtype=float)
        return 1.0 / np.log1p(a)

    def to_dict(self) -> dict:
        """JSON-able description (requires a serialisable gain)."""
        return {"kind": "first_order", "a": np.asarray(self.a).tolist(), "g": self.g.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FirstOrderPlant":
        """Rebuild from :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("kind") != "first_order" or "a" not in d or "g" not in d:
            raise ValueError("not a first-order plant description (need kind='first_order', a, g)")
        return cls(d["a"], gain_from_dict(d["g"]))

    def __repr__(self):
        return f"FirstOrderPlant(a={self.a!r}, g={self.g!r})"

