"""Plant models of the KL response to β.

Every plant follows one protocol (:class:`Plant`), and its update is written
once, in its :meth:`Plant.step`, which the simulator, the identification, the
symbolic stability analysis (with sympy symbols) and the tuners all call::

    y, state = plant.step(state, beta, ops)     # update t with weight β(t) → KL y(t)

The first-order model of DynamicVAE (Eq. 14), with Ts = 1 step::

    y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t)),   a > 0, g decreasing,

where ``y(t)`` is the KL after update ``t`` and ``β(t)`` the weight used in
that update.  At a constant β the KL settles at ``g(β)`` with time constant
``≈ 1/a`` steps.  See docs/design.md ("Plants").
"""
from __future__ import annotations

import numpy as np

from .backend import NUMPY, Ops, is_sympy

__all__ = [
    "Gain",
    "ExpGain",
    "LinearGain",
    "Plant",
    "FirstOrderPlant",
    "register_gain",
    "gain_from_dict",
    "register_plant",
    "plant_from_dict",
]

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

    def parameters(self) -> dict:
        """The numbers ``__call__`` reads, by name (see :meth:`Plant.parameters`)."""
        raise TypeError(f"{type(self).__name__} does not list its parameters")

    def with_parameters(self, values: dict) -> "Gain":
        """The same gain with these parameter values (e.g. sympy symbols), unvalidated."""
        raise TypeError(f"{type(self).__name__} does not list its parameters")


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
        if type(beta) is np.ndarray:  # the simulation's hot path: no type probing
            return self.A * np.exp(-self.k * beta)
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

    def parameters(self):
        return {"A": self.A, "k": self.k}

    def with_parameters(self, values):
        new = object.__new__(ExpGain)
        new.A, new.k = values["A"], values["k"]
        return new

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(d["A"], d["k"])

    def __repr__(self):
        return f"ExpGain(A={_num(self.A)}, k={_num(self.k)})"


@register_gain
class LinearGain(Gain):
    """``g(β) = y* + g′·(β − β*)``: the tangent of a gain at an operating point.

    The stability analysis linearises every plant through this gain (with
    sympy symbols), so the plant's own :meth:`Plant.step` builds the loop.

    Parameters
    ----------
    y_star : float
        KL at the operating point (nats).
    slope : float
        ``g′(β*)``, < 0 for a decreasing gain.
    beta_star : float
        β at the operating point.
    """

    kind = "linear"

    def __init__(self, y_star, slope, beta_star):
        self.y_star, self.slope, self.beta_star = y_star, slope, beta_star

    def __call__(self, beta):
        return self.y_star + self.slope * (beta - self.beta_star)

    def derivative(self, beta):
        return self.slope + 0 * beta

    def inverse(self, y):
        return self.beta_star + (y - self.y_star) / self.slope

    def to_dict(self):
        return {"kind": self.kind, "y_star": float(self.y_star), "slope": float(self.slope),
                "beta_star": float(self.beta_star)}

    def parameters(self):
        return {"y_star": self.y_star, "slope": self.slope, "beta_star": self.beta_star}

    def with_parameters(self, values):
        return LinearGain(values["y_star"], values["slope"], values["beta_star"])

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(float(d["y_star"]), float(d["slope"]), float(d["beta_star"]))

    def __repr__(self):
        return f"LinearGain(y_star={self.y_star!r}, slope={self.slope!r}, beta_star={self.beta_star!r})"


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
    if is_sympy(v):  # the symbolic analysis builds plants of symbols
        return v
    arr = np.asarray(v, dtype=float)
    if arr.ndim > 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0 (scalar or 1-D), got {v!r}")
    # A scalar as np.float64 (a float subclass): NumPy multiplies an array by it about twice as fast as by a
    # Python float (no weak-scalar promotion), which is most of a vectorised simulation step.
    return np.float64(arr) if arr.ndim == 0 else arr


def _num(v):
    """``repr`` of a parameter: a plain float for scalars (not ``np.float64(…)``), the array otherwise."""
    return repr(float(v)) if isinstance(v, float) else repr(v)


_PLANTS: dict[str, type] = {}
_FITS: dict[str, type] = {}


def register_plant(cls):
    """Class decorator: make a :class:`Plant` subclass loadable by :func:`plant_from_dict`, by its ``kind``.

    A subclass of the class registered for its kind is that kind's *fit* (e.g.
    :class:`klcontrol.analysis.identification.first_order.PlantFit`): it saves the plant's description plus a
    ``"fit"`` entry (the data behind it), and :func:`plant_from_dict` loads the descriptions with that entry as
    the fit, the others as the plant.
    """
    plant = _PLANTS.get(cls.kind)
    if plant is not None and plant is not cls and issubclass(cls, plant):
        _FITS[cls.kind] = cls
    else:
        _PLANTS[cls.kind] = cls
    return cls


def plant_from_dict(d: dict) -> "Plant":
    """Rebuild any registered plant or fit from its ``to_dict()`` (dispatched by ``kind``).

    A description with a ``"fit"`` entry loads as its kind's registered fit class (see
    :func:`register_plant`) once that class's module is imported;
    :func:`klcontrol.analysis.identification.fits.load_fit` imports every fit kind and reads the file.

    Raises
    ------
    ValueError
        If the description names no registered plant kind.
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _PLANTS:
        raise ValueError(f"unknown plant kind {kind!r}; known: {sorted(_PLANTS)}")
    cls = _FITS.get(kind, _PLANTS[kind]) if "fit" in d else _PLANTS[kind]
    return cls.from_dict(d)


class Plant:
    """Protocol of KL plants: a state, one update, an equilibrium, a linearisation.

    Subclasses implement :meth:`initial_state`, :meth:`step`, :meth:`equilibrium`
    and :meth:`linearize` (and ``to_dict``/``from_dict`` to be saved); the
    simulator, the identification and the stability analysis use nothing else.
    """

    kind = "plant"

    def initial_state(self, y0, shape=()) -> tuple:
        """State at rest with output ``y0`` (broadcast to ``shape``)."""
        raise TypeError(f"{type(self).__name__} does not define initial_state")

    def step(self, state: tuple, beta, ops: Ops = NUMPY):
        """One update with weight ``beta``: returns ``(y, new_state)``, ``y`` the KL after it."""
        raise TypeError(f"{type(self).__name__} does not define step")

    def equilibrium(self, setpoint):
        """``(β*, y*)``: the constant β whose steady KL is ``setpoint``."""
        raise TypeError(f"{type(self).__name__} does not define equilibrium")

    def linearize(self, setpoint):
        """Small-signal model at the equilibrium for ``setpoint``.

        Returns
        -------
        (A, B, C, D) : ndarrays
            ``x(t+1) = A x(t) + B u(t)``, ``y(t) − y* = C x(t) + D u(t)`` with
            ``u(t) = β(t) − β*``: ``y(t)`` is the KL after the update that used
            ``β(t)``, so ``D`` is the direct feedthrough of that update.
        """
        raise TypeError(f"{type(self).__name__} does not define linearize")

    def to_dict(self) -> dict:
        """JSON-able description."""
        raise TypeError(f"{type(self).__name__} cannot be saved")

    def parameters(self) -> dict:
        """The numbers :meth:`step` reads, by name (scalars or arrays of one value per loop).

        With :meth:`with_parameters` this lets the compiled engine (:mod:`klcontrol.compiled`) trace
        :meth:`step` on symbols once and run it for any values.  A plant that does not define them is
        simulated with NumPy only.
        """
        raise TypeError(f"{type(self).__name__} does not list its parameters (simulated with NumPy only)")

    def with_parameters(self, values: dict) -> "Plant":
        """The same plant with these parameter values (e.g. sympy symbols), unvalidated.

        Parameters
        ----------
        values : dict
            One value for every name of :meth:`parameters`.
        """
        raise TypeError(f"{type(self).__name__} does not list its parameters (simulated with NumPy only)")


@register_plant
class FirstOrderPlant(Plant):
    """First-order discrete KL plant ``y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t))``.

    Parameters
    ----------
    a : float or array
        Rate, > 0 (time constant ≈ 1/a steps; paper: 1/2500 dSprites, 1/5000 MNIST).
    g : Gain or callable
        Steady-state KL as a function of β, decreasing.
    """

    kind = "first_order"

    def __init__(self, a, g):
        self.a = _positive("a", a)
        if isinstance(g, Gain):
            self.g = g
        elif callable(g):
            self.g = _CallableGain(g)
        else:
            raise ValueError(f"g must be a Gain or a callable g(beta), got {g!r}")

    def initial_state(self, y0, shape=()) -> tuple:
        """``(y(−1),)`` = ``(y0,)``, broadcast to ``shape``."""
        return (np.full(shape, y0, dtype=float) if shape else y0,)

    def step(self, state, beta, ops: Ops = NUMPY):
        """``y(t)`` from ``state = (y(t−1),)`` and ``β(t)``; the new state is ``(y(t),)``.

        The model's formula, written once: every other place calls this.
        """
        (y_prev,) = state
        a = self.a
        y = y_prev / (1 + a) + a / (1 + a) * self.g(beta)
        return y, (y,)

    def parameters(self) -> dict:
        """``a`` and the gain's parameters (as ``g.<name>``)."""
        return {"a": self.a, **{f"g.{k}": v for k, v in self.g.parameters().items()}}

    def with_parameters(self, values: dict) -> "FirstOrderPlant":
        new = object.__new__(FirstOrderPlant)
        new.a = values["a"]
        new.g = self.g.with_parameters({k[2:]: v for k, v in values.items() if k.startswith("g.")})
        return new

    def equilibrium(self, setpoint):
        """``(β*, y*)`` with ``g(β*) = y* = setpoint``."""
        return self.g.inverse(setpoint), setpoint

    def gprime_at(self, setpoint):
        """``g′(β*)`` at the equilibrium for ``setpoint``."""
        return self.g.derivative(self.g.inverse(setpoint))

    def linearize(self, setpoint):
        """``(A, B, C, D)`` at the equilibrium for ``setpoint`` (scalar ``a`` and set point).

        Derived by stepping this plant with the tangent gain (:class:`LinearGain`),
        so the formula is not restated: ``A = C = 1/(1+a)``, ``B = D = a·g′/(1+a)``.
        """
        a = float(np.asarray(self.a))
        bstar, _ = self.equilibrium(float(setpoint))
        # The tangent map in deviation variables (y*, β* moved to 0) is linear:
        # unit probes give its matrices exactly, without cancellation.
        tangent = FirstOrderPlant(a, LinearGain(0.0, float(self.g.derivative(bstar)), 0.0))
        yx, (xx,) = tangent.step((1.0,), 0.0)
        yu, (xu,) = tangent.step((0.0,), 1.0)
        A, B, C, D = (np.array([[v]], dtype=float) for v in (xx, xu, yx, yu))
        return A, B, C, D

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
        return f"FirstOrderPlant(a={_num(self.a)}, g={self.g!r})"
