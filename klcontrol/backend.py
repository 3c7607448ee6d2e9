"""Array backends for the control laws.

Every law in :mod:`klcontrol.laws` is written once against the small interface
below, so the same function runs on Python floats, NumPy arrays, torch tensors
(on any device, without host syncs) and sympy expressions (for the symbolic
stability analysis).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Ops", "NumpyOps", "SympyOps", "TorchOps", "ops_for", "NUMPY", "SYMPY"]  # noqa: F822 (SYMPY: module __getattr__)


class Ops(ABC):
    """Interface of a backend: the few primitives the laws may use."""

    name = "abstract"

    @abstractmethod
    def sigmoid(self, x):
        """Logistic function 1/(1+exp(-x))."""

    @abstractmethod
    def clip(self, x, lo, hi):
        """Clamp ``x`` into ``[lo, hi]`` (bounds may be infinite)."""

    @abstractmethod
    def where(self, cond, a, b):
        """Elementwise ``a if cond else b``."""

    @abstractmethod
    def gt(self, x, y):
        """Elementwise ``x > y``."""

    @abstractmethod
    def lt(self, x, y):
        """Elementwise ``x < y``."""

    @abstractmethod
    def and_(self, p, q):
        """Elementwise logical and."""

    @abstractmethod
    def or_(self, p, q):
        """Elementwise logical or."""

    @abstractmethod
    def sign(self, x):
        """Elementwise sign (−1, 0, 1)."""

    @abstractmethod
    def exp(self, x):
        """Elementwise exponential."""

    @abstractmethod
    def log(self, x):
        """Elementwise natural logarithm."""


# A 0-d array operand costs NumPy less per call than a Python float (no scalar
# conversion), which matters for the small arrays of a vectorised simulation.
_HALF = np.array(0.5)


_PY_NUMBERS = (int, float)


class NumpyOps(Ops):
    """NumPy backend; also used for plain Python floats."""

    name = "numpy"

    def sigmoid(self, x):
        # σ(x) = (1 + tanh(x/2))/2 never overflows and costs two ufunc calls
        # fewer than the exp/where form (the per-step cost of vectorised
        # simulation); its absolute error is at most 2.2e-16 (one ulp of 1).
        # In place on one fresh temporary: the same formula, no further allocations.
        t = np.multiply(x, _HALF, dtype=float)
        if type(t) is not np.ndarray:  # a scalar
            return 0.5 * np.tanh(t) + 0.5
        np.tanh(t, out=t)
        t *= _HALF
        t += _HALF
        return t

    def clip(self, x, lo, hi):
        if (type(x) in _PY_NUMBERS and type(lo) in _PY_NUMBERS and type(hi) in _PY_NUMBERS
                and lo == lo and hi == hi):  # a NaN bound takes NumPy's path (it returns NaN)
            # Python numbers (a set point evaluated at one step): no ufunc calls; x first, so NaN propagates
            # as in np.maximum/np.minimum.
            return min(max(x, lo), hi)
        # An infinite bound given as a Python float (simulate passes scalar
        # parameters so) clips nothing: skip its ufunc call.
        if not (type(lo) is float and lo == -math.inf):
            x = np.maximum(x, lo)
        if not (type(hi) is float and hi == math.inf):
            x = np.minimum(x, hi)
        return x

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def gt(self, x, y):
        return np.greater(x, y)

    def lt(self, x, y):
        return np.less(x, y)

    def and_(self, p, q):
        return np.logical_and(p, q)

    def or_(self, p, q):
        return np.logical_or(p, q)

    def sign(self, x):
        return np.sign(x)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        return np.log(x)


class TorchOps(Ops):
    """Torch backend: pure tensor ops, no host synchronisation."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def clip(self, x, lo, hi):
        t = self.torch
        lo = lo if t.is_tensor(lo) else t.as_tensor(lo, dtype=x.dtype, device=x.device)
        hi = hi if t.is_tensor(hi) else t.as_tensor(hi, dtype=x.dtype, device=x.device)
        return t.minimum(t.maximum(x, lo), hi)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def gt(self, x, y):
        return self.torch.gt(x, y)

    def lt(self, x, y):
        return self.torch.lt(x, y)

    def and_(self, p, q):
        return self.torch.logical_and(p, q)

    def or_(self, p, q):
        return self.torch.logical_or(p, q)

    def sign(self, x):
        return self.torch.sign(x)

    def exp(self, x):
        return self.torch.exp(x) if self.torch.is_tensor(x) else np.exp(x)  # a float parameter stays a float

    def log(self, x):
        return self.torch.log(x) if self.torch.is_tensor(x) else np.log(x)


class SympyOps(Ops):
    """Sympy backend for symbolic analysis.

    Infinite clamp bounds vanish from the expression, so a law evaluated with
    ``beta_min=-oo, beta_max=oo`` gives its smooth interior form, which is what
    the linearisation needs.
    """

    name = "sympy"

    def __init__(self):
        import sympy

        self.sp = sympy

    def sigmoid(self, x):
        return 1 / (1 + self.sp.exp(-x))

    def _is_inf(self, v, sign):
        return v == sign * self.sp.oo or (isinstance(v, float) and math.isinf(v) and (v > 0) == (sign > 0))

    def clip(self, x, lo, hi):
        sp = self.sp
        if not self._is_inf(lo, -1):
            x = sp.Max(lo, x)
        if not self._is_inf(hi, 1):
            x = sp.Min(x, hi)
        return x

    def where(self, cond, a, b):
        sp = self.sp
        if cond is sp.true or cond is True:
            return a
        if cond is sp.false or cond is False:
            return b
        return sp.Piecewise((a, cond), (b, True))

    def gt(self, x, y):
        if self._is_inf(y, 1) or self._is_inf(x, -1):
            return self.sp.false
        return self.sp.Gt(x, y)

    def lt(self, x, y):
        if self._is_inf(y, -1) or self._is_inf(x, 1):
            return self.sp.false
        return self.sp.Lt(x, y)

    def and_(self, p, q):
        return self.sp.And(p, q)

    def or_(self, p, q):
        return self.sp.Or(p, q)

    def sign(self, x):
        return self.sp.sign(x)

    def exp(self, x):
        return self.sp.exp(x)

    def log(self, x):
        return self.sp.log(x)


NUMPY = NumpyOps()
_TORCH: TorchOps | None = None
_SYMPY: SympyOps | None = None


def _torch_ops() -> TorchOps:
    global _TORCH
    if _TORCH is None:
        _TORCH = TorchOps()
    return _TORCH


def _sympy_ops() -> SympyOps:
    global _SYMPY
    if _SYMPY is None:
        _SYMPY = SympyOps()
    return _SYMPY


def __getattr__(name):  # lazy module attribute so `import klcontrol` never imports sympy
    if name == "SYMPY":
        return _sympy_ops()
    raise AttributeError(name)


def is_torch(x: Any) -> bool:
    """True if ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def is_sympy(x: Any) -> bool:
    """True if ``x`` is a sympy object (without importing sympy)."""
    return type(x).__module__.startswith("sympy")


def ops_for(*xs: Any) -> Ops:
    """Pick the backend matching the arguments: torch > sympy > NumPy."""
    if any(is_torch(x) for x in xs):
        return _torch_ops()
    if any(is_sympy(x) for x in xs):
        return _sympy_ops()
    return NUMPY
