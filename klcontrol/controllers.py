"""β controllers: one object drives one loop or many (arrays of gains).

Protocol, modelled on ``torch.optim.lr_scheduler``::

    beta = controller.step(kl)      # consume one KL measurement, return the next β
    controller.beta                 # current β
    sd = controller.state_dict(); controller.load_state_dict(sd)

``step`` accepts a Python float, a NumPy array (one measurement per loop) or a
torch tensor.  Floats and arrays are checked: a NaN or infinite KL raises
``ValueError`` and leaves the state unchanged.  Tensors are never inspected on
the host: a non-finite KL masks the update of its own loop (that loop's state
unchanged, via ``torch.where``; the other loops of a batch of gain sets are
updated) and raises a device-side flag per loop that :meth:`Controller.check`
turns into the same ``ValueError`` when the caller chooses to synchronise.
A masked step does not count in :attr:`Controller.steps_taken`; the set-point
clock (the ``t`` of ``C(t)``, ``state_dict()["t"]``) counts every accepted
``step`` call, masked or not, because the schedule follows training time.
A set point that evaluates to NaN or infinity is refused the same way: a
float/array ``C(t)`` raises in ``step`` (state unchanged), a tensor ``C(t)``
masks the loops where it is not finite and is reported by ``check()``.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from . import laws
from .backend import NUMPY, is_torch, ops_for
from .filters import Filter, as_filter
from .setpoints import SetPoint, as_setpoint

__all__ = [
    "Controller",
    "FixedBeta",
    "ScheduledBeta",
    "CapacityRamp",
    "PositionalPI",
    "IncrementalPI",
    "GECO",
    "PIDLagrangian",
    "AdaptivePI",
    "MEASURES",
    "beta_norm",
    "beta_from_norm",
]


def beta_norm(beta, latent_dim: int, input_dim: int):
    """Higgins et al.'s normalised weight ``β_norm = β·M/N``.

    Parameters
    ----------
    beta : float or array
        Unnormalised β.
    latent_dim : int
        Number of latents ``M``.
    input_dim : int
        Number of input pixels ``N`` (64·64 = 4096 for dSprites).

    Returns
    -------
    float or array
    """
    _check_dims(latent_dim, input_dim)
    return beta * latent_dim / input_dim


def beta_from_norm(beta_normalised, latent_dim: int, input_dim: int):
    """Inverse of :func:`beta_norm`: ``β = β_norm·N/M``."""
    _check_dims(latent_dim, input_dim)
    return beta_normalised * input_dim / latent_dim


def _check_dims(latent_dim, input_dim):
    if int(latent_dim) < 1 or int(input_dim) < 1:
        raise ValueError(f"latent_dim and input_dim must be ≥ 1, got {latent_dim}, {input_dim}")


_KEEP = object()

#: What a controller's ``step`` may consume (:attr:`Controller.measures`): the KL or the reconstruction loss.
MEASURES = ("kl", "recon")

#: Calls by which the official ControlVAE and DynamicVAE loops' set point leads
#: klcontrol's ``C(t)``: they raise C (iteration counter from 1) before calling
#: the PID, so their call t sees ``C(t + 2)``.
OFFICIAL_SETPOINT_LEAD = 2


def _param(name, value, allow_inf=False):
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a 1-D array of numbers, got {value!r}") from None
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array (one value per loop), got shape {arr.shape}")
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if np.any(bad):
        raise ValueError(f"{name} must be {'a number (not NaN)' if allow_inf else 'finite'}, got {value!r}")
    return arr


def _count(name, v) -> int:
    """A non-negative whole number (int, NumPy int or 0-d integer tensor), else ``ValueError``."""
    if is_torch(v) and v.ndim == 0 and not (v.is_floating_point() or v.is_complex()) and str(v.dtype) != "torch.bool":
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"state dict {name} must be a non-negative integer, got {v!r}")
    return int(v)


def _shown(v) -> str:
    """A scalar or an array of values, short, for a message."""
    a = np.asarray(v, dtype=float)
    if a.ndim == 0:
        return f"{float(a):g}"
    return "[" + ", ".join(f"{x:g}" for x in a.ravel()[:4]) + (", …]" if a.size > 4 else "]")


def _state_value(name, v):
    """A state entry as a finite float array, or a finite floating tensor (cloned), else ``ValueError``."""
    if is_torch(v):
        if not v.is_floating_point():
            raise ValueError(f"state dict entry {name} must be a floating tensor, got dtype {v.dtype}")
        out = v.detach().clone()
        finite = bool(out.isfinite().all())
    else:
        try:
            out = np.array(v, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"state dict entry {name} must be a number or a list of numbers, got {v!r}") from None
        finite = bool(np.all(np.isfinite(out)))
    if not finite:
        raise ValueError(f"state dict entry {name} must be finite, got {v!r}")
    return out


class Controller:
    """Base class of β controllers.

    Subclasses declare their parameters and implement ``_initial`` and
    ``_law``; validation, filtering, backends, masking and state handling live
    here once.

    Parameters
    ----------
    setpoint : float, array, SetPoint, callable or None
        Target KL ``C(t)`` (nats) as a function of the step.
    filter : Filter, int or None
        Measurement filter (an int is a moving-average window).
    y0 : float
        Measurement assumed before the first step (fills the filter window).
    """

    kind = "controller"
    #: The loss term ``step`` consumes: ``"kl"`` (nats, every KL controller) or ``"recon"`` (GECO).
    #: A trainer passes ``controller.step(losses[controller.measures])``.
    measures = "kl"
    #: Parameters that may be ±inf (clamps); every other parameter must be finite.
    _inf_ok = ("beta_min", "beta_max")
    #: True if the law reads the step clock (:attr:`steps_taken`) rather than only its state, the
    #: measurement and the set point (an open-loop schedule): the simulator then keeps the clock, and the
    #: compiled engine (:mod:`klcontrol.compiled`) refuses it.
    clocked = False
    #: Attributes besides the parameters and the filter that change the law's formula (e.g. an
    #: anti-windup mode); part of :meth:`structure`.
    _structural: tuple = ()

    def __init__(self, setpoint=None, filter=None, y0: float = 0.0, **params):
        self.setpoint: SetPoint | None = None if setpoint is None else as_setpoint(setpoint)
        self.filter: Filter = as_filter(filter)
        y0 = float(y0)
        if not math.isfinite(y0):
            raise ValueError(f"y0 must be finite, got {y0!r}")
        self.y0 = y0
        self._params = params
        sizes = {a.shape[0] for a in params.values() if a.ndim == 1}
        if len(sizes) > 1:
            raise ValueError(f"array parameters must have the same length, got lengths {sorted(sizes)}")
        self.shape = (sizes.pop(),) if sizes else ()
        if "beta_min" in params and np.any(params["beta_min"] > params["beta_max"]):
            raise ValueError(f"beta_min must be ≤ beta_max, got {params['beta_min']} > {params['beta_max']}")
        self._t = 0
        self._bad = None
        self._skipped = None
        self._state = self._initial_state(y0)

    # -- subclass hooks -----------------------------------------------------------
    def _initial(self, y0, c0) -> dict:
        """Law state before the first step; must contain ``beta``."""
        return {"beta": self._broadcast(0.0)}

    def _law(self, state: dict, m, c, p: dict, ops) -> dict:
        """New law state (with ``beta``) from the filtered measurement ``m``."""
        return dict(state)

    def _equilibrium(self, beta_star, y_star, p: dict, ops) -> dict:
        """Law state (with ``beta``) at rest at ``β*`` with the measurement at ``y* = C``."""
        raise TypeError(f"{type(self).__name__} has no equilibrium with a fixed set point")

    # -- what the loop needs (klcontrol.loop, simulate, analysis) -----------------
    def advance(self, state: dict, y, c, params: dict, ops=NUMPY) -> dict:
        """The controller's part of one loop update, as a pure function: filter, then law.

        Parameters
        ----------
        state : dict
            Law state and ``"filter"`` history (:attr:`state`).
        y : float, array, tensor or symbol
            The raw KL measurement this update consumes.
        c : float, array, tensor or symbol
            Set point ``C(t)``.
        params : dict
            Parameters (:attr:`params`, or symbols for the analysis).
        ops : Ops
            Backend.

        Returns
        -------
        dict
            The new state; ``["beta"]`` is the β of the next update.
        """
        m, fstate = self.filter.apply(state["filter"], y, ops)
        new = self._law(state, m, c, params, ops)
        new["filter"] = tuple(fstate)
        return new

    def equilibrium_state(self, beta_star, y_star, params: dict, ops=NUMPY) -> dict:
        """The state at rest at ``β*`` with every measurement equal to ``y* = C``.

        Used by the stability analysis to linearise :meth:`advance` (sympy symbols welcome).
        """
        st = self._equilibrium(beta_star, y_star, params, ops)
        st["filter"] = tuple(self.filter.initial_state(y_star))
        return st

    def structure(self) -> tuple:
        """What the formula of :meth:`advance` depends on, besides the values of parameters and state.

        Two controllers with equal structures run the same update with other numbers: the compiled
        engine reuses one kernel for both.  A subclass whose law reads an attribute other than its
        parameters and filter lists it in ``_structural``.

        Returns
        -------
        tuple
            Class, filter, parameter names, state entries, structural attributes.
        """
        cls = type(self)
        state = tuple((k, len(v)) if k == "filter" else (k, None) for k, v in self._state.items())
        return (f"{cls.__module__}.{cls.__qualname__}", repr(self.filter), tuple(self._params), state,
                tuple((a, getattr(self, a)) for a in self._structural))

    @property
    def state(self) -> dict:
        """The current law and filter state (a shallow copy of the live dict)."""
        return dict(self._state)

    @property
    def params(self) -> dict:
        """The parameters as the law receives them (read-only views)."""
        out = {}
        for k, v in self._params.items():
            v = v.view()
            v.flags.writeable = False
            out[k] = v
        return out

    # -- helpers --------------------------------------------------------------------
    def _broadcast(self, v):
        return np.broadcast_to(np.asarray(v, dtype=float), self.shape).copy() if self.shape else np.asarray(
            v, dtype=float
        )

    def _initial_state(self, y0):
        # Unchecked: a set point that is NaN at 0 is refused by the first step (construction never raises for it).
        c0 = self.setpoint(0) if self.setpoint is not None else math.nan
        try:
            np.broadcast_shapes(self.shape, np.shape(c0))
        except ValueError:
            raise ValueError(f"the set point C(0) has shape {np.shape(c0)}, the gains drive {self.shape[0]} "
                             "loops") from None
        y = self._broadcast(y0)
        st = {k: self._broadcast(v) for k, v in self._initial(y, c0).items()}
        st["filter"] = tuple(self._broadcast(v) for v in self.filter.initial_state(y))
        return st

    def _setpoint_at(self, t):
        """``C(t)``, refusing a float/array value that is NaN or infinite (tensors are masked in the step)."""
        if self.setpoint is None:
            return math.nan
        c = self.setpoint(t)
        if type(c) is float:  # the common case (an int step): no array round trip
            if not math.isfinite(c):
                raise ValueError(f"set point C({t}) is NaN or infinite ({c!r}); controller state unchanged")
            return c
        if not is_torch(c):
            try:
                arr = np.asarray(c, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(f"set point C({t}) must be a number or array, got {c!r}") from None
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"set point C({t}) is NaN or infinite ({c!r}); controller state unchanged")
        return c

    def _setpoint_now(self):
        return self._setpoint_at(self._t)

    @property
    def steps_taken(self):
        """Number of measurements accepted so far.

        A float/array KL that is NaN or infinite raises and is not counted; a
        tensor KL that is masked (non-finite) is not counted either.  After
        torch steps reading this synchronises with the device; it is an int
        when every loop accepted the same number of measurements, otherwise an
        int array with one count per loop.
        """
        if self._skipped is None:
            return self._t
        sk = self._skipped.cpu().numpy() if is_torch(self._skipped) else self._skipped
        n = self._t - np.asarray(sk, dtype=np.int64)
        if n.ndim == 0 or np.all(n == n.flat[0]):
            return int(n.flat[0])
        return n

    @property
    def beta(self):
        """Current β (float for a single loop, array or tensor otherwise)."""
        b = self._state["beta"]
        if is_torch(b):
            return b.clone()  # the state tensor is updated in place by the next step
        return float(b) if np.ndim(b) == 0 else b.copy()

    @property
    def gains(self) -> dict:
        """The controller's parameters (copies)."""
        return {k: v.copy() for k, v in self._params.items()}

    def check(self):
        """Synchronise and raise ``ValueError`` if a non-finite tensor KL (or set point) was masked.

        Call this when flushing a trace, not every step: it waits for the device.
        The flags are cleared afterwards.
        """
        if self._bad is not None and bool(self._bad.any()):
            loops = self._bad.reshape(-1).nonzero().reshape(-1).tolist() if self._bad.ndim else []
            self._bad.zero_()
            where = f" in loop(s) {loops[:10]}" if loops and self._bad.numel() > 1 else ""
            raise ValueError(
                f"a KL measurement (or set point) was NaN or infinite{where}; the controller skipped that "
                "update there (its state is the last good one)"
            )

    def prime(self, y0: float):
        """Set the measurement history before step 0 (e.g. the initial model's KL).

        Raises
        ------
        ValueError
            If the controller has already consumed measurements.
        """
        if self._t:
            raise ValueError("prime() is only allowed before the first step()")
        y0 = float(y0)
        if not math.isfinite(y0):
            raise ValueError(f"y0 must be finite, got {y0!r}")
        self.y0 = y0
        self._state = self._initial_state(y0)

    def reset(self):
        """Return to the state before the first step."""
        self._t = 0
        self._bad = None
        self._skipped = None
        self._state = self._initial_state(self.y0)

    # -- stepping -------------------------------------------------------------------
    def step(self, kl):
        """Consume one KL measurement and return the next β.

        Parameters
        ----------
        kl : float, array of shape () or (n,), or torch tensor
            The KL measured after the last update (nats).

        Returns
        -------
        float, ndarray or tensor
            β for the next update.

        Raises
        ------
        ValueError
            If a float/array KL is NaN, infinite or of the wrong shape, or the
            set point C(t) is NaN or infinite; the controller state is unchanged.
        """
        if is_torch(kl):
            return self._step_torch(kl)
        if type(kl) is float and not self.shape and not is_torch(self._state["beta"]):
            return self._step_scalar(kl)
        try:
            y = np.asarray(kl, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"KL measurement must be a number or array, got {kl!r}") from None
        self._check_shape(y.shape)
        if not np.all(np.isfinite(y)):
            bad = np.flatnonzero(~np.isfinite(y)).tolist() if y.ndim else []
            where = f" at loop indices {bad[:10]}" if bad else ""
            raise ValueError(f"KL measurement is NaN or infinite{where} ({kl!r}); controller state unchanged")
        state = self._state
        if any(is_torch(v) for v in self._flat(state)):
            raise ValueError("this controller runs on torch tensors; pass the KL as a tensor")
        new = self.advance(state, y, self._setpoint_now(), self._params, NUMPY)
        self._store(new, np.broadcast_shapes(self.shape, y.shape))
        return self.beta

    def _store(self, new: dict, shape: tuple):
        """Accept a NumPy step's new state as owned float arrays of ``shape`` and count the step."""
        fstate = new.pop("filter")
        if shape == ():  # one loop (a trainer's): owned 0-d arrays, without broadcast_to's cost
            new = {k: np.array(v, dtype=float) for k, v in new.items()}
            new["filter"] = tuple(np.array(v, dtype=float) for v in fstate)
        else:
            new = {k: np.broadcast_to(np.asarray(v, dtype=float), shape).copy() for k, v in new.items()}
            new["filter"] = tuple(np.broadcast_to(np.asarray(v, dtype=float), shape).copy() for v in fstate)
        self._state = new
        self._t += 1

    def _step_scalar(self, kl: float):
        # One loop fed a Python float (a trainer on a CPU): the same checks and law as step(), without the
        # array broadcasting; in a training process each step runs with cold caches, so every call counts.
        if not math.isfinite(kl):
            raise ValueError(f"KL measurement is NaN or infinite ({kl!r}); controller state unchanged")
        c = self._setpoint_now()
        c = float(c) if type(c) is not float and np.ndim(c) == 0 else c
        self._store(self.advance(self._state, kl, c, self._params, NUMPY), ())
        return float(self._state["beta"])

    def _check_shape(self, shape):
        if len(shape) > 1:
            raise ValueError(f"KL measurement must be a scalar or 1-D (one per loop), got shape {shape}")
        try:
            out = np.broadcast_shapes(self.shape, shape, np.shape(self._state["beta"]))
        except ValueError:
            raise ValueError(
                f"KL measurement of shape {shape} does not match the controller's {len(np.atleast_1d(self._state['beta']))} loops"
            ) from None
        return out

    @staticmethod
    def _flat(state):
        for k, v in state.items():
            if k == "filter":
                yield from v
            else:
                yield v

    def _step_torch(self, kl):
        import torch

        ops = ops_for(kl)
        kl = kl.detach()  # the controller state must never join the autograd graph
        if not torch.is_floating_point(kl):
            kl = kl.to(torch.get_default_dtype())
        self._check_shape(tuple(kl.shape))
        self._to_torch(kl.device, kl.dtype, tuple(kl.shape))
        p = self._torch_params
        state = self._state
        c = self._setpoint_now()  # raises for a non-finite float/array set point, before any change
        # One flag per loop: a non-finite KL (or tensor set point) masks only its own loop.
        finite = torch.isfinite(kl)
        ok = finite.expand(state["beta"].shape)
        if is_torch(c):
            ok = ok & torch.isfinite(c).expand(state["beta"].shape)
            c = torch.where(ok, c, torch.zeros_like(c))
        safe = torch.where(finite, kl, 0.0)
        new = self.advance(state, safe, c, p, ops)
        fstate = new.pop("filter")
        # Build every masked value before the first in-place copy: the filter
        # history shifts by one (new[i+1] is old[i]), so copying as we go would
        # overwrite old[i] before it is moved.
        masked = {k: torch.where(ok, v, state[k]) for k, v in new.items()}
        masked_f = [torch.where(ok, v, old) for old, v in zip(state["filter"], fstate)]
        for k, v in masked.items():
            state[k].copy_(v)
        for old, v in zip(state["filter"], masked_f):
            old.copy_(v)
        self._bad.logical_or_(~ok)
        self._skipped.add_((~ok).to(self._skipped.dtype))
        self._t += 1
        return state["beta"].clone()

    def _to_torch(self, device, dtype, kl_shape):
        import torch

        st = self._state
        if is_torch(st["beta"]) and st["beta"].device == device:
            return
        shape = torch.broadcast_shapes(self.shape, kl_shape, tuple(np.shape(st["beta"])))

        def conv(v):
            if is_torch(v):
                return v.to(device=device, dtype=dtype).expand(shape).clone()
            return torch.as_tensor(np.broadcast_to(v, shape).copy(), dtype=dtype, device=device)

        self._state = {k: (tuple(conv(x) for x in v) if k == "filter" else conv(v)) for k, v in st.items()}
        self._torch_params = {
            k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in self._params.items()
        }
        self._device_flags(device, shape)

    def _device_flags(self, device, shape):
        """Per-loop masked flags and masked-step counts on ``device`` (counts carried over)."""
        import torch

        if self._bad is None or self._bad.device != device or tuple(self._bad.shape) != tuple(shape):
            self._bad = torch.zeros(shape, dtype=torch.bool, device=device)
        old = self._skipped
        self._skipped = torch.zeros(shape, dtype=torch.int64, device=device)
        if old is not None:
            self._skipped += torch.as_tensor(np.asarray(old.cpu() if is_torch(old) else old), device=device)

    # -- persistence ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """State for checkpoints: set-point clock, law and filter state, parameters.

        NumPy state is stored as plain lists/floats (safe for JSON and for
        ``torch.load(weights_only=True)``); torch state as cloned tensors.
        ``t`` is the set-point clock (every accepted ``step`` call); ``skipped``
        counts the masked tensor steps per loop (``steps_taken = t − skipped``).
        """

        def enc(v):
            return v.detach().clone() if is_torch(v) else np.asarray(v).tolist()

        return {
            "kind": self.kind,
            "t": self._t,
            "y0": self.y0,
            "state": {k: ([enc(x) for x in v] if k == "filter" else enc(v)) for k, v in self._state.items()},
            "params": {k: v.tolist() for k, v in self._params.items()},
            "skipped": 0 if self._skipped is None else enc(self._skipped),
        }

    def _check_params(self, params: dict) -> dict:
        """Validate parameters as the constructor does: finite (clamps may be ±inf), β_min ≤ β_max."""
        out = {k: _param(k, v, allow_inf=k in self._inf_ok) for k, v in params.items()}
        if "beta_min" in out and "beta_max" in out and np.any(out["beta_min"] > out["beta_max"]):
            raise ValueError(f"beta_min must be ≤ beta_max, got {out['beta_min']} > {out['beta_max']}")
        return out

    def _state_limits(self, params: dict) -> dict:
        """State entry → (low, high) it must lie in under ``params``: the β output within the clamps, a sigmoid
        output (``p_prev``) within [0, 1], and any β within float32's range. Entries that may legitimately leave them (official unclamped states) are
        not listed."""
        lim = {}
        if "beta" in self._state:
            # Beyond float32's range β·KL is infinite in any float32 model: no controller output lies there.
            big = float(np.finfo(np.float32).max)
            lo, hi = params.get("beta_min", -big), params.get("beta_max", big)
            lim["beta"] = (np.maximum(lo, -big), np.minimum(hi, big))
        if "p_prev" in self._state:
            lim["p_prev"] = (0.0, 1.0)
        return lim

    def load_state_dict(self, state_dict: dict):
        """Restore a state from :meth:`state_dict`; validates everything before changing anything.

        Raises
        ------
        ValueError
            If the dict is not a state dict of this kind of controller, or its
            parameters fail the constructor's checks (finite gains, β_min ≤
            β_max), its state entries are not finite numbers of one shape that
            fits this controller's loops, its filter history has another
            length, its β lies outside this controller's clamps (or ``p_prev``
            outside [0, 1]), or ``t`` is not a non-negative integer.  The
            controller is unchanged.
        """
        sd = state_dict
        if not isinstance(sd, dict) or sd.get("kind") != self.kind:
            raise ValueError(f"state dict is for {sd.get('kind') if isinstance(sd, dict) else sd!r}, not {self.kind}")
        missing = {"t", "state", "params"} - set(sd)
        if missing:
            raise ValueError(f"state dict lacks {sorted(missing)}")
        t = _count("t", sd["t"])
        y0 = sd.get("y0", self.y0)
        if isinstance(y0, bool) or not isinstance(y0, (int, float, np.integer, np.floating)) or not math.isfinite(y0):
            raise ValueError(f"state dict y0 must be a finite number, got {y0!r}")
        cur = self._state
        state = sd["state"]
        if not isinstance(state, dict) or set(state) != set(cur):
            raise ValueError(f"state dict has entries {sorted(state) if isinstance(state, dict) else state!r}, "
                             f"expected {sorted(cur)}")
        if not isinstance(state["filter"], (list, tuple)) or len(state["filter"]) != len(cur["filter"]):
            n = len(state["filter"]) if isinstance(state["filter"], (list, tuple)) else state["filter"]
            raise ValueError(
                f"state dict has a filter history of {n!r} samples, this controller's filter needs {len(cur['filter'])}"
            )
        if not isinstance(sd["params"], dict):
            raise ValueError(f"state dict params must be a dict, got {sd['params']!r}")
        params = self._check_params(sd["params"])
        if set(params) != set(self._params) or any(params[k].shape != self._params[k].shape for k in params):
            raise ValueError("state dict parameters do not match this controller's parameters or shapes")
        entries = [(k, v) for k, v in state.items() if k != "filter"]
        entries += [(f"filter[{i}]", v) for i, v in enumerate(state["filter"])]
        torch_kinds = {is_torch(v) for _, v in entries}
        if len(torch_kinds) > 1:
            raise ValueError("state dict mixes torch tensors and plain numbers")
        dec = {name: _state_value(name, v) for name, v in entries}
        shapes = {tuple(v.shape) for v in dec.values()}
        if len(shapes) > 1:
            raise ValueError(f"state dict entries have different shapes {sorted(shapes)}")
        shape = shapes.pop()
        try:
            fits = np.broadcast_shapes(self.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits or len(shape) > 1:
            raise ValueError(f"state dict entries have shape {shape}, this controller drives "
                             f"{self.shape[0] if self.shape else 1} loop(s)")
        skipped = sd.get("skipped", 0)
        skipped = skipped.detach().cpu().numpy() if is_torch(skipped) else skipped
        try:
            sk = np.asarray(skipped)
            if sk.dtype == bool or sk.dtype == object or sk.size == 0 or np.any(sk != np.round(sk)):
                raise TypeError
            sk = np.broadcast_to(sk.astype(np.int64), shape)
        except (TypeError, ValueError):
            raise ValueError(f"state dict skipped must be whole counts per loop, got {skipped!r}") from None
        if np.any(sk < 0) or np.any(sk > t):
            raise ValueError(f"state dict skipped must be between 0 and t={t}, got {skipped!r}")
        for own in (self._params, params):  # this controller's clamps and those the dict would install
            for name, (lo, hi) in self._state_limits(own).items():
                v = dec[name]
                v = v.detach().cpu().double().numpy() if is_torch(v) else v
                # A float32 tensor state rounds a clamp by one ulp of float32: allow that much.
                slack_lo = 1e-6 * np.maximum(1.0, np.abs(np.where(np.isfinite(lo), lo, 0.0)))
                slack_hi = 1e-6 * np.maximum(1.0, np.abs(np.where(np.isfinite(hi), hi, 0.0)))
                if np.any(v < lo - slack_lo) or np.any(v > hi + slack_hi):
                    raise ValueError(f"state dict {name} = {_shown(v)} is outside [{_shown(lo)}, {_shown(hi)}], "
                                     "the range this controller can output (its clamps); refused, the controller "
                                     "is unchanged")
        # Everything is valid: only now change the controller.
        new = {k: (tuple(dec[f"filter[{i}]"] for i in range(len(state["filter"]))) if k == "filter" else dec[k])
               for k in cur}  # this controller's key order, whatever the dict's
        self._params = params
        self._torch_params = None
        self._state = new
        self._t = t
        self.y0 = float(y0)
        self._bad = None
        self._skipped = None
        b = new["beta"]
        if is_torch(b):
            import torch

            self._torch_params = {
                k: torch.as_tensor(v, dtype=b.dtype, device=b.device) for k, v in self._params.items()
            }
            self._device_flags(b.device, tuple(b.shape))
            self._skipped += torch.as_tensor(np.array(sk), device=b.device)
        elif np.any(sk):
            self._skipped = sk.copy()

    def copy(self) -> "Controller":
        """An independent deep copy (same parameters and state)."""
        return copy.deepcopy(self)

    def replace(self, *, setpoint=_KEEP, **params) -> "Controller":
        """A fresh controller like this one, with some parameters or the set point changed.

        Parameters
        ----------
        setpoint : SetPoint, float or callable, optional
            New target schedule (default: keep this one).
        **params
            New values of parameters this controller has (e.g. ``kp``, ``ki``,
            ``beta0``); shapes must match the current ones.

        Returns
        -------
        Controller
            A copy in its initial state (nothing is carried over from steps taken).

        Raises
        ------
        ValueError
            For a parameter this controller does not have, a value of another
            shape or a non-finite gain, or ``beta_min > beta_max``.
        """
        unknown = sorted(set(params) - set(self._params))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter {', '.join(unknown)}; "
                             f"it has {', '.join(self._params)}")
        new_params = dict(self._params)
        for k, v in params.items():
            arr = _param(k, v, allow_inf=k in self._inf_ok)
            if arr.shape != self._params[k].shape:
                raise ValueError(f"{k} must have shape {self._params[k].shape} like the current value, got {arr.shape}")
            new_params[k] = arr
        new_params = self._check_params(new_params)
        if setpoint is not _KEEP and setpoint is None and self.setpoint is not None:
            raise ValueError(f"{type(self).__name__} needs a setpoint")
        new = copy.deepcopy(self)
        new._params = new_params
        if setpoint is not _KEEP:
            new.setpoint = None if setpoint is None else as_setpoint(setpoint)
        new._t = 0
        new._bad = None
        new._skipped = None
        new._torch_params = None
        new._state = new._initial_state(new.y0)
        return new

    def __repr__(self):
        ps = ", ".join(f"{k}={v.tolist()!r}" for k, v in self._params.items())
        aw = getattr(self, "anti_windup", None)
        mode = f", anti_windup={aw!r}" if aw == "official" else ""  # defaults stay out: reprs of old runs unchanged
        return f"{type(self).__name__}({ps}, setpoint={self.setpoint!r}, filter={self.filter!r}{mode})"


class FixedBeta(Controller):
    """A constant β (β-VAE_H): ignores the measurement.

    Parameters
    ----------
    beta : float or array
        The weight (Higgins et al. dSprites: β = 4).
    """

    kind = "fixed"

    def __init__(self, beta, setpoint=None, filter=None, y0: float = 0.0):
        super().__init__(setpoint, filter, y0, beta=_param("beta", beta))

    @classmethod
    def from_norm(cls, beta_normalised, latent_dim: int, input_dim: int, **kw) -> "FixedBeta":
        """Build from Higgins' normalised ``β_norm`` (see :func:`beta_norm`)."""
        return cls(beta_from_norm(beta_normalised, latent_dim, input_dim), **kw)

    def _initial(self, y0, c0):
        return {"beta": self._params["beta"]}

    def _state_limits(self, params):
        return {"beta": (params["beta"], params["beta"])}  # the law's output is β itself, always

    def _law(self, state, m, c, p, ops):
        return {"beta": laws.fixed_beta(p["beta"] + 0 * m, m, c, ops)}

    def _equilibrium(self, beta_star, y_star, p, ops):
        return {"beta": p["beta"]}


class ScheduledBeta(Controller):
    """An open-loop β schedule: ``β(t) = schedule(t)``, whatever the measurement.

    The excitation of an identification experiment (steps, PRBS) as a
    controller, so the trainer and the simulator run it like any other.

    Parameters
    ----------
    schedule : SetPoint, float or callable
        β as a function of the update index (e.g. a :class:`~klcontrol.setpoints.Sequence`
        of :class:`~klcontrol.setpoints.Constant` levels).
    setpoint : optional
        Recorded in traces only (the law ignores it).
    """

    kind = "scheduled"
    clocked = True

    def __init__(self, schedule, setpoint=None, filter=None, y0: float = 0.0):
        self.schedule = as_setpoint(schedule)
        if np.ndim(self.schedule(0)) != 0:
            raise ValueError("ScheduledBeta drives one loop: its schedule must return a scalar β")
        super().__init__(setpoint, filter, y0)

    def _initial(self, y0, c0):
        return {"beta": self.schedule(0)}

    def _law(self, state, m, c, p, ops):
        # step() is called with the count of steps taken so far and returns β of the next update.
        return {"beta": self.schedule(self._t + 1) + 0 * m}

    @classmethod
    def cyclical_dsprites(cls, steps: int | None = None, **kw) -> "ScheduledBeta":
        """Fu et al.'s schedule (M = 4 cycles, R = 0.5, β from 0 to 1) over ``steps`` (default: the paper budget)."""
        from .papers import CYCLICAL_CYCLES, CYCLICAL_DSPRITES_STEPS, CYCLICAL_RANGE, CYCLICAL_RATIO
        from .setpoints import Cyclical

        sched = Cyclical(CYCLICAL_DSPRITES_STEPS if steps is None else steps, CYCLICAL_CYCLES, CYCLICAL_RATIO,
                         *CYCLICAL_RANGE)
        return cls(sched, **kw)

    def __repr__(self):
        return f"ScheduledBeta(schedule={self.schedule!r}, setpoint={self.setpoint!r})"


class CapacityRamp(Controller):
    """Burgess et al.'s capacity objective ``γ|KL − C(t)|`` as the relay ``β = γ·sign(KL − C)``.

    Parameters
    ----------
    gamma : float or array
        Relay amplitude (dSprites: 1000).
    setpoint : SetPoint or float
        Capacity schedule (dSprites: ``LinearRamp(0, 25, 100_000)``).
    beta_min, beta_max : float or array
        Optional clamps on β (default: none).
    """

    kind = "capacity"

    def __init__(self, gamma, setpoint, beta_min=-math.inf, beta_max=math.inf, filter=None, y0: float = 0.0):
        if setpoint is None:
            raise ValueError("CapacityRamp needs a setpoint (the capacity schedule C(t))")
        super().__init__(
            setpoint,
            filter,
            y0,
            gamma=_param("gamma", gamma),
            beta_min=_param("beta_min", beta_min, allow_inf=True),
            beta_max=_param("beta_max", beta_max, allow_inf=True),
        )

    @classmethod
    def burgess_dsprites(cls, **kw) -> "CapacityRamp":
        """The paper's dSprites setting: γ = 1000, C from 0 to 25 nats over 100 000 steps."""
        from .papers import BURGESS_DSPRITES_CAPACITY, BURGESS_GAMMA
        from .setpoints import LinearRamp

        return cls(BURGESS_GAMMA, LinearRamp(*BURGESS_DSPRITES_CAPACITY), **kw)

    def _beta(self, m, c, p, ops):
        return ops.clip(laws.capacity_relay(m, c, p["gamma"], ops), p["beta_min"], p["beta_max"])

    def _initial(self, y0, c0):
        return {"beta": self._beta(y0, c0, self._params, NUMPY)}

    def _law(self, state, m, c, p, ops):
        return {"beta": self._beta(m, c, p, ops)}


class PositionalPI(Controller):
    """ControlVAE's positional PI: ``β = Kp·σ(m − C) − Ki·Σ(C − m) + β_min``.

    Parameters
    ----------
    kp, ki : float or array
        Gains (positive ``ki`` is negative feedback).
    setpoint : SetPoint or float
        Target KL.
    beta_min, beta_max : float or array
        Clamps (``beta_min`` is also the offset of the law).
    beta0 : float, optional
        β before the first measurement; default: the law at ``y0`` with a zero integral.
    filter : Filter or int, optional
        Measurement filter.
    y0 : float
        Measurement assumed before step 0.
    anti_windup : {"conditional", "official"}
        ``"conditional"`` (default): the integral is not advanced on a step
        where advancing it would push β further past a clamp
        (:func:`klcontrol.laws.positional_pi`).  ``"official"``: the official
        ``P_PID.py``: the integral is frozen whenever the previous unclamped β
        is below ``beta_min``, in either direction
        (:func:`klcontrol.laws.positional_pi_official`); it can lock for good.
    """

    kind = "positional_pi"
    _structural = ("anti_windup",)
    _inf_ok = ("beta_max",)

    def __init__(self, kp, ki, setpoint, beta_min=0.0, beta_max=math.inf, beta0=None, filter=None, y0: float = 0.0,
                 anti_windup: str = "conditional"):
        if setpoint is None:
            raise ValueError("PositionalPI needs a setpoint")
        if anti_windup not in laws.POSITIONAL_ANTI_WINDUP_MODES:
            raise ValueError(f"anti_windup must be one of {laws.POSITIONAL_ANTI_WINDUP_MODES}, got {anti_windup!r}")
        self.anti_windup = anti_windup
        self._beta0 = None if beta0 is None else _param("beta0", beta0)
        super().__init__(
            setpoint,
            filter,
            y0,
            kp=_param("kp", kp),
            ki=_param("ki", ki),
            beta_min=_param("beta_min", beta_min),
            beta_max=_param("beta_max", beta_max, allow_inf=True),
        )

    def _initial(self, y0, c0):
        p = self._params
        if self._beta0 is not None:
            beta = NUMPY.clip(self._beta0, p["beta_min"], p["beta_max"])
        else:
            beta, _ = laws.positional_pi(0.0, y0, c0, p["kp"], 0.0 * p["ki"], p["beta_min"], p["beta_max"], NUMPY)
        if self.anti_windup == "official":
            # The previous unclamped β: only "is it below β_min?" matters, and the
            # official start (1 = β_min) and this β (≥ β_min) both answer no.
            raw = beta if self._beta0 is None else self._beta0
            return {"beta": beta, "integral": 0.0, "raw": raw}
        return {"beta": beta, "integral": 0.0}

    def _law(self, state, m, c, p, ops):
        if self.anti_windup == "official":
            beta, (integral, raw) = laws.positional_pi_official(
                (state["integral"], state["raw"]), m, c, p["kp"], p["ki"], p["beta_min"], p["beta_max"], ops
            )
            return {"beta": beta, "integral": integral, "raw": raw}
        beta, integral = laws.positional_pi(
            state["integral"], m, c, p["kp"], p["ki"], p["beta_min"], p["beta_max"], ops
        )
        return {"beta": beta, "integral": integral}

    def _equilibrium(self, beta_star, y_star, p, ops):
        # At m = C the law reads β* = Kp·σ(0) − Ki·I* + β_min.
        st = {"beta": beta_star, "integral": (p["kp"] * ops.sigmoid(0 * y_star) + p["beta_min"] - beta_star) / p["ki"]}
        if self.anti_windup == "official":
            st["raw"] = beta_star
        return st

    @classmethod
    def controlvae_dsprites(cls, official: bool = False, **kw) -> "PositionalPI":
        """ControlVAE's dSprites setting (official code; the paper gives no other): Kp 0.01, Ki 0.001, β_min 1.

        Set point 0.5 nats raised by 0.15 every 5000 steps up to 18
        (:meth:`StepRamp.controlvae_dsprites`), no filter.

        ``official=False`` (the ``controlvae`` trainer preset): conditional
        integration, and C(t) = ``StepRamp.controlvae_dsprites()(t)`` at the
        controller's t-th call.  ``official=True`` reproduces the loop of
        ``solver_light.py`` with ``P_PID.py`` call for call when the
        controller is stepped already with update 0's KL (the official code
        uses the PID output for update 0): its anti-windup, and its set-point
        phase (C is raised before the PID call, so call t sees
        ``StepRamp.controlvae_dsprites()(t + 2)``: the jump lands on call
        5000k − 1).
        """
        from .papers import CONTROLVAE_BETA_MIN, CONTROLVAE_GAINS
        from .setpoints import StepRamp

        kp, ki = CONTROLVAE_GAINS
        args = dict(kp=kp, ki=ki, setpoint=StepRamp.controlvae_dsprites(), beta_min=CONTROLVAE_BETA_MIN)
        if official:
            args.update(setpoint=StepRamp.controlvae_dsprites().shift(-OFFICIAL_SETPOINT_LEAD),
                        anti_windup="official")
        args.update(kw)
        return cls(**args)


class IncrementalPI(Controller):
    """DynamicVAE's incremental PI (Eq. 10, feedback sign as in the official code).

    ``β(t+1) = clip(β(t) + Kp[σ(m(t) − C) − σ(m(t−1) − C)] − Ki·(C − m(t)), β_min, β_max)``.

    Parameters
    ----------
    kp, ki : float or array
        Gains (paper: 0.01, 0.005; positive ``ki`` is negative feedback).
    setpoint : SetPoint or float
        Target KL (paper: :meth:`StepRamp.dynamicvae_dsprites`).
    beta0 : float or array
        Initial β (paper dSprites: 150).
    beta_min, beta_max : float or array
        Clamps.
    anti_windup : {"clamp", "official"}
        ``"clamp"`` (default) keeps the clamped β as state; ``"official"``
        reproduces the official code: unclamped state, I-term frozen while that
        state is below ``beta_min`` (use ``beta_min=0.1``), previous error
        initialised to 0, only the output clamped.
    filter : Filter or int, optional
        Measurement filter (paper: window 5).
    y0 : float
        Measurement assumed before step 0.
    """

    kind = "incremental_pi"
    _structural = ("anti_windup",)

    def __init__(
        self,
        kp,
        ki,
        setpoint,
        beta0=1.0,
        beta_min=0.0,
        beta_max=math.inf,
        anti_windup: str = "clamp",
        filter=None,
        y0: float = 0.0,
    ):
        if setpoint is None:
            raise ValueError("IncrementalPI needs a setpoint")
        if anti_windup not in laws.ANTI_WINDUP_MODES:
            raise ValueError(f"anti_windup must be one of {laws.ANTI_WINDUP_MODES}, got {anti_windup!r}")
        self.anti_windup = anti_windup
        super().__init__(
            setpoint,
            filter,
            y0,
            kp=_param("kp", kp),
            ki=_param("ki", ki),
            beta0=_param("beta0", beta0),
            beta_min=_param("beta_min", beta_min, allow_inf=True),
            beta_max=_param("beta_max", beta_max, allow_inf=True),
        )

    @classmethod
    def dynamicvae_dsprites(cls, official: bool = False, **kw) -> "IncrementalPI":
        """DynamicVAE's dSprites setting: Kp 0.01, Ki 0.005, window 5, step-ramp to 20 nats.

        ``official=False`` (the paper, Appendix A; the ``dynamicvae`` trainer
        preset): β0 = 150, clamped-state saturation, C(t) =
        ``StepRamp.dynamicvae_dsprites()(t)`` at the controller's t-th call.

        ``official=True`` (the official 2D-sprites code, ``I_PID.py`` with
        ``solver_dynamic.py`` and ``run_dynamic.sh``; the
        ``dynamicvae-official`` trainer preset): β0 = 50 (``W_k1 = 50``),
        β_min 0.1 with the official anti-windup, a zero-filled KL window
        (``y0 = 0``, do not prime), and the official set-point phase: C is
        raised before the PID call, so call t sees
        ``StepRamp.dynamicvae_dsprites()(t + 2)``.  Stepped already with
        update 0's KL (the official loop uses the PID output for update 0),
        it gives the official β call for call.
        """
        from .papers import (
            DYNAMICVAE_BETA0,
            DYNAMICVAE_GAINS,
            DYNAMICVAE_OFFICIAL_BETA0,
            DYNAMICVAE_OFFICIAL_BETA_MIN,
            DYNAMICVAE_WINDOW,
        )
        from .setpoints import StepRamp

        kp, ki = DYNAMICVAE_GAINS
        args = dict(kp=kp, ki=ki, setpoint=StepRamp.dynamicvae_dsprites(), beta0=DYNAMICVAE_BETA0,
                    filter=DYNAMICVAE_WINDOW)
        if official:
            args.update(beta0=DYNAMICVAE_OFFICIAL_BETA0, beta_min=DYNAMICVAE_OFFICIAL_BETA_MIN,
                        anti_windup="official", y0=0.0,
                        setpoint=StepRamp.dynamicvae_dsprites().shift(-OFFICIAL_SETPOINT_LEAD))
        args.update(kw)
        return cls(**args)

    def _initial(self, y0, c0):
        p = self._params
        p_prev = 0.5 if self.anti_windup == "official" else NUMPY.sigmoid(y0 - c0)
        beta = NUMPY.clip(p["beta0"], p["beta_min"], p["beta_max"])
        state_beta = p["beta0"] if self.anti_windup == "official" else beta
        return {"beta": beta, "integrator": state_beta, "p_prev": p_prev}

    def _law(self, state, m, c, p, ops):
        beta, (integ, p_now) = laws.incremental_pi(
            (state["integrator"], state["p_prev"]), m, c, p["kp"], p["ki"], p["beta_min"], p["beta_max"],
            ops, mode=self.anti_windup,
        )
        return {"beta": beta, "integrator": integ, "p_prev": p_now}

    def _equilibrium(self, beta_star, y_star, p, ops):
        return {"beta": beta_star, "integrator": beta_star, "p_prev": ops.sigmoid(0 * y_star)}


class GECO(Controller):
    """GECO (Rezende & Viola 2018, Alg. 1): a multiplier on the reconstruction constraint ``recon ≤ κ``.

    ``C_ma ← α·C_ma + (1 − α)·(recon − κ)``, ``β ← clip(β·exp(−η·C_ma), β_min, β_max)``
    (:func:`klcontrol.laws.geco`): β = 1/λ for the loss ``recon + β·KL``.
    It measures the reconstruction loss (:attr:`measures` = ``"recon"``):
    ``step(recon)``; its set point is the tolerance κ (nats of reconstruction).

    Stepped on ``r_0, r_1, …`` after ``prime(r_0)`` it returns Alg. 1's
    ``1/λ_0, 1/λ_1, …`` (the prime is Alg. 1's ``C_ma⁰ = C⁰``).

    Parameters
    ----------
    kappa : float, SetPoint or callable
        Tolerance κ on the reconstruction loss (nats).
    eta : float or array
        Multiplier rate η (per nat).
    alpha : float or array
        Moving-average weight α, in [0, 1) (paper: 0.99).
    beta0 : float or array
        Initial β = 1/λ_init (paper: λ_init = 1).
    beta_min, beta_max : float or array
        Finite clamps, ``0 < β_min ≤ β_max``.
    filter : Filter or int, optional
        Extra measurement filter (Alg. 1 has none besides its moving average).
    y0 : float
        Reconstruction assumed before step 0 (prime it with the first measurement).
    """

    kind = "geco"
    measures = "recon"
    _inf_ok = ()

    def __init__(self, kappa, eta, alpha=0.99, beta0=1.0, beta_min=1e-3, beta_max=1e3, filter=None, y0: float = 0.0):
        if kappa is None:
            raise ValueError("GECO needs a tolerance kappa (the reconstruction set point)")
        super().__init__(kappa, filter, y0, eta=_param("eta", eta), alpha=_param("alpha", alpha),
                         beta0=_param("beta0", beta0), beta_min=_param("beta_min", beta_min),
                         beta_max=_param("beta_max", beta_max))
        self._params = self._check_params(self._params)

    def _check_params(self, params):
        out = super()._check_params(params)
        if np.any(out["beta_min"] <= 0):
            raise ValueError(f"beta_min must be > 0 (β = 1/λ), got {out['beta_min']}")
        if np.any(out["alpha"] < 0) or np.any(out["alpha"] >= 1):
            raise ValueError(f"alpha must be in [0, 1), got {out['alpha']}")
        return out

    def _initial(self, y0, c0):
        p = self._params
        return {"beta": NUMPY.clip(p["beta0"], p["beta_min"], p["beta_max"]), "c_ma": y0 - c0}

    def _law(self, state, m, c, p, ops):
        beta, (_, c_ma) = laws.geco((state["beta"], state["c_ma"]), m, c, p["eta"], p["alpha"], p["beta_min"],
                                    p["beta_max"], ops)
        return {"beta": beta, "c_ma": c_ma}

    def _equilibrium(self, beta_star, y_star, p, ops):
        return {"beta": beta_star, "c_ma": 0 * y_star}

    @classmethod
    def dsprites(cls, **kw) -> "GECO":
        """klcontrol's dSprites choice (the paper has none): κ, η, β clamps of :mod:`klcontrol.papers`, α = 0.99."""
        from .papers import GECO_ALPHA, GECO_BETA_RANGE, GECO_DSPRITES_ETA, GECO_DSPRITES_KAPPA, GECO_LAMBDA0

        args = dict(kappa=GECO_DSPRITES_KAPPA, eta=GECO_DSPRITES_ETA, alpha=GECO_ALPHA, beta0=1 / GECO_LAMBDA0,
                    beta_min=GECO_BETA_RANGE[0], beta_max=GECO_BETA_RANGE[1])
        args.update(kw)
        return cls(**args)


class PIDLagrangian(Controller):
    """PID Lagrange multiplier (Stooke, Achiam & Abbeel 2020, Alg. 2) on the KL constraint ``KL ≤ C(t)``.

    ``Δ = m − C``, ``I ← (I + Δ)⁺``, ``∂ = (s − s_prev)⁺`` with the smoothed
    KL ``s``, ``β = λ = clip(Kp·Δ + Ki·I + Kd·∂, β_min, β_max)``
    (:func:`klcontrol.laws.pid_lagrangian`).  Applied to the KL, not the
    reconstruction: then λ multiplies the KL, so β = λ needs no inversion,
    Alg. 2's ``λ ≥ 0`` is ``β ≥ 0``, and the constraint is the KL set point
    every other klcontrol controller tracks.  (On ``recon ≤ κ``, β = 1/λ
    would be infinite whenever Alg. 2's λ is 0.)

    Parameters
    ----------
    kp, ki, kd : float or array
        Gains (per nat).
    setpoint : SetPoint or float
        The limit C(t) of the KL.
    alpha_d : float or array
        Smoothing of the KL for the D-term, in [0, 1) (0: Alg. 2's raw difference).
    beta_min, beta_max : float or array
        Clamps, ``0 ≤ β_min`` (Alg. 2: 0 and ∞).
    filter : Filter or int, optional
        Measurement filter.
    y0 : float
        Measurement assumed before step 0 (Alg. 2's ``J_prev = 0`` is ``y0 = 0``).
    """

    kind = "pid_lagrangian"
    _inf_ok = ("beta_max",)

    def __init__(self, kp, ki, setpoint, kd=0.0, alpha_d=0.0, beta_min=0.0, beta_max=math.inf, filter=None,
                 y0: float = 0.0):
        if setpoint is None:
            raise ValueError("PIDLagrangian needs a setpoint (the KL limit C(t))")
        super().__init__(setpoint, filter, y0, kp=_param("kp", kp), ki=_param("ki", ki), kd=_param("kd", kd),
                         alpha_d=_param("alpha_d", alpha_d), beta_min=_param("beta_min", beta_min),
                         beta_max=_param("beta_max", beta_max, allow_inf=True))
        self._params = self._check_params(self._params)

    def _check_params(self, params):
        out = super()._check_params(params)
        if np.any(out["beta_min"] < 0):
            raise ValueError(f"beta_min must be ≥ 0 (λ ≥ 0), got {out['beta_min']}")
        if np.any(out["alpha_d"] < 0) or np.any(out["alpha_d"] >= 1):
            raise ValueError(f"alpha_d must be in [0, 1), got {out['alpha_d']}")
        return out

    def _initial(self, y0, c0):
        p = self._params
        return {"beta": NUMPY.clip(0 * y0, p["beta_min"], p["beta_max"]), "integral": 0 * y0, "s_prev": y0}

    def _law(self, state, m, c, p, ops):
        beta, (integral, s) = laws.pid_lagrangian((state["integral"], state["s_prev"]), m, c, p["kp"], p["ki"],
                                                  p["kd"], p["alpha_d"], p["beta_min"], p["beta_max"], ops)
        return {"beta": beta, "integral": integral, "s_prev": s}

    def _equilibrium(self, beta_star, y_star, p, ops):
        # At m = C: Δ = 0, ∂ = 0, so β* = Ki·I*.
        return {"beta": beta_star, "integral": beta_star / p["ki"], "s_prev": y_star}

    @classmethod
    def dsprites(cls, **kw) -> "PIDLagrangian":
        """klcontrol's dSprites choice (the paper has none): gains of :mod:`klcontrol.papers`, DynamicVAE's set point."""
        from .papers import DYNAMICVAE_WINDOW, PID_LAGRANGIAN_DSPRITES_GAINS
        from .setpoints import StepRamp

        kp, ki, kd = PID_LAGRANGIAN_DSPRITES_GAINS
        args = dict(kp=kp, ki=ki, kd=kd, setpoint=StepRamp.dynamicvae_dsprites(), filter=DYNAMICVAE_WINDOW)
        args.update(kw)
        return cls(**args)


class AdaptivePI(Controller):
    """An incremental PI that identifies the plant online and re-designs its gains as it goes.

    Each step (:func:`klcontrol.laws.rls_first_order`) updates a recursive-least-squares estimate, with
    forgetting, of the first-order model ``y(t) = φ·y(t−1) + b·β(t) + d``, i.e. of
    ``â = 1/φ − 1`` and ``ĝ′ = b/(1 − φ)``.  When the estimate is trusted the gains are read from the gain
    table :mod:`klcontrol.adaptive_table` (designed offline with the exact analysis,
    :mod:`klcontrol.analysis.tuning.adaptive`): ``Kp = kp_n(â)/|ĝ′|``, ``Ki = ki_n(â)/|ĝ′|``, which by construction keep
    the linearised loop stable for any true slope within a factor ``G_FACTOR`` (2) of ``ĝ′`` and any ``a`` in
    the bin of ``â``.  Otherwise the fixed gains ``kp0, ki0`` are used.  Trusted means: at least ``n_min``
    updates, ``â`` inside the table and within ``a_factor`` of ``a_prior``, ``ĝ′`` negative with ``g_min ≤ |ĝ′| ≤ g_max``, and the standard errors
    of ``b`` (``√(P₂₂·s²)``) and of ``φ`` (``√(P₁₁·s²)``) below ``rel_tol·|b|`` and ``rel_tol·(1 − φ)``.  The law is DynamicVAE's incremental PI with clamped state
    (:func:`klcontrol.laws.incremental_pi`), whose velocity form makes a gain change bumpless.

    Parameters
    ----------
    setpoint : SetPoint or float
        Target KL.
    kp0, ki0 : float or array
        Fallback gains (default: DynamicVAE's 0.01, 0.005).
    beta0, beta_min, beta_max : float or array
        Initial β and clamps.
    forget : float or array
        RLS forgetting factor λ in (0, 1] (memory ≈ 1/(1 − λ) updates).
    p0 : float or array
        Initial RLS covariance (times the identity).
    p_max : float or array
        Trace of P above which forgetting pauses.
    rel_tol : float or array
        Largest trusted relative standard error of ``b``.
    n_min : float or array
        Updates before the estimate may be trusted.
    g_min, g_max : float or array
        Trusted range of ``|ĝ′|``.
    a_prior, g_prior : float or array
        Initial estimate (default: DynamicVAE's dSprites a = 1/2500 and g′ = −1); ``a`` is usually known
        from an offline fit (:mod:`klcontrol.analysis.identification.first_order`), the slope is what drifts.
    a_factor : float or array
        ``â`` is trusted only within this factor of ``a_prior``.
    filter : Filter or int, optional
        Measurement filter (the model is identified on the filtered KL; default none).
    y0 : float
        Measurement assumed before step 0.
    """

    kind = "adaptive_pi"
    _inf_ok = ("beta_min", "beta_max")

    def __init__(self, setpoint, kp0=0.01, ki0=0.005, beta0=1.0, beta_min=0.0, beta_max=math.inf, forget=0.995,
                 p0=100.0, p_max=1e6, rel_tol=0.3, n_min=20, g_min=0.01, g_max=10.0, a_prior=1 / 2500,
                 g_prior=-1.0, a_factor=4.0, filter=None, y0: float = 0.0):
        if setpoint is None:
            raise ValueError("AdaptivePI needs a setpoint")
        names = dict(kp0=kp0, ki0=ki0, beta0=beta0, forget=forget, p0=p0, p_max=p_max, rel_tol=rel_tol,
                     n_min=n_min, g_min=g_min, g_max=g_max, a_prior=a_prior, g_prior=g_prior, a_factor=a_factor)
        params = {k: _param(k, v) for k, v in names.items()}
        params["beta_min"] = _param("beta_min", beta_min, allow_inf=True)
        params["beta_max"] = _param("beta_max", beta_max, allow_inf=True)
        self._validate(params)
        super().__init__(setpoint, filter, y0, **params)

    @staticmethod
    def _validate(p):
        if np.any(p["a_factor"] < 1):
            raise ValueError(f"a_factor must be ≥ 1, got {p['a_factor']}")
        for k in ("p0", "p_max", "rel_tol", "g_min", "a_prior"):
            if np.any(p[k] <= 0):
                raise ValueError(f"{k} must be > 0, got {p[k]}")
        if np.any(p["forget"] <= 0) or np.any(p["forget"] > 1):
            raise ValueError(f"forget must be in (0, 1], got {p['forget']}")
        if np.any(p["g_max"] < p["g_min"]):
            raise ValueError(f"g_max must be ≥ g_min, got {p['g_max']} < {p['g_min']}")
        if np.any(p["n_min"] < 0):
            raise ValueError(f"n_min must be ≥ 0, got {p['n_min']}")

    def _check_params(self, params):
        out = super()._check_params(params)
        self._validate(out)
        return out

    def _initial(self, y0, c0):
        p = self._params
        phi = 1 / (1 + p["a_prior"])
        beta = NUMPY.clip(p["beta0"], p["beta_min"], p["beta_max"])
        b = (1 - phi) * p["g_prior"]
        z = 0 * p["p0"]
        return {"beta": beta, "p_prev": NUMPY.sigmoid(y0 - c0), "phi": phi, "b": b, "d": y0 - phi * y0 - b * beta,
                "p11": p["p0"], "p12": z, "p13": z, "p22": p["p0"], "p23": z, "p33": p["p0"], "s2": 0 * y0,
                "y_prev": y0, "n": 0 * y0, "kp": p["kp0"], "ki": p["ki0"], "adapted": 0 * y0}

    def design(self, phi, b, s2, p11, p22, n, p, ops=NUMPY):
        """The gains ``(kp, ki, trusted)`` the law uses for an estimate (pure; any backend).

        Parameters
        ----------
        phi, b : float, array or tensor
            The RLS estimate of the differenced model.
        s2, p11, p22 : float, array or tensor
            Noise variance and the covariance entries of ``φ`` and ``b``.
        n : float, array or tensor
            Updates so far.
        p : dict
            Parameters (:attr:`params`).
        ops : Ops
            Backend.

        Returns
        -------
        kp, ki, trusted
        """
        from .adaptive_table import A_EDGES, KI_N, KP_N

        lo, hi = 1 / (1 + A_EDGES[-1]), 1 / (1 + A_EDGES[0])
        phi_c = ops.clip(phi, lo, hi)
        a_hat = 1 / phi_c - 1
        gp = b / (1 - phi_c)
        big_g = ops.clip(-gp, p["g_min"], p["g_max"])
        trusted = ops.and_(ops.and_(ops.gt(phi, lo), ops.lt(phi, hi)),
                           ops.and_(ops.and_(ops.gt(-gp, p["g_min"]), ops.lt(-gp, p["g_max"])),
                                    ops.and_(ops.lt(p22 * s2, (p["rel_tol"] * b) ** 2), ops.gt(n, p["n_min"]))))
        # a ≈ 1 − φ: its relative standard error, √(P₁₁·s²)/(1 − φ), must be below rel_tol too, and â within
        # a_factor of the prior: in closed loop y(t−1) and β(t) are nearly collinear, and a wrong φ can fit
        # tightly (seen in the drifting-plant simulation: â ≈ 1 for a true 0.05).
        trusted = ops.and_(trusted, ops.and_(ops.lt(p11 * s2, (p["rel_tol"] * (1 - phi_c)) ** 2),
                                             ops.and_(ops.gt(a_hat * p["a_factor"], p["a_prior"]),
                                                      ops.lt(a_hat, p["a_prior"] * p["a_factor"]))))
        kp = ops.where(trusted, laws.table_lookup(a_hat, A_EDGES, KP_N, ops) / big_g, p["kp0"] + 0 * phi)
        ki = ops.where(trusted, laws.table_lookup(a_hat, A_EDGES, KI_N, ops) / big_g, p["ki0"] + 0 * phi)
        return kp, ki, trusted

    def _law(self, state, m, c, p, ops):
        keys = ("phi", "b", "d", "p11", "p12", "p13", "p22", "p23", "p33", "s2", "y_prev")
        est = laws.rls_first_order(tuple(state[k] for k in keys), m, state["beta"], p["forget"], p["p_max"], ops)
        new = dict(zip(keys, est))
        new["n"] = state["n"] + 1
        kp, ki, trusted = self.design(new["phi"], new["b"], new["s2"], new["p11"], new["p22"], new["n"], p, ops)
        beta, (_, p_now) = laws.incremental_pi((state["beta"], state["p_prev"]), m, c, kp, ki, p["beta_min"],
                                               p["beta_max"], ops, mode="clamp")
        new.update(beta=beta, p_prev=p_now, kp=kp, ki=ki, adapted=ops.where(trusted, 1 + 0 * m, 0 * m))
        return new

    @classmethod
    def dynamicvae_dsprites(cls, **kw) -> "AdaptivePI":
        """DynamicVAE's dSprites loop with adaptive gains (the ``adaptive`` trainer preset).

        Set point, β(0) = 150, window 5 and fallback gains are DynamicVAE's
        (:meth:`IncrementalPI.dynamicvae_dsprites`); the prior is the paper's dSprites plant
        (a = 1/2500, ``a_factor`` 4 admits the batch-16 plant's a ≈ 8.3e-4 of ``cpu/fit.json`` (:mod:`klcontrol.data`)).
        """
        from .papers import DYNAMICVAE_BETA0, DYNAMICVAE_GAINS, DYNAMICVAE_WINDOW
        from .setpoints import StepRamp

        kp, ki = DYNAMICVAE_GAINS
        args = dict(setpoint=StepRamp.dynamicvae_dsprites(), kp0=kp, ki0=ki, beta0=DYNAMICVAE_BETA0,
                    filter=DYNAMICVAE_WINDOW)
        args.update(kw)
        return cls(**args)

    def estimate(self):
        """The current plant estimate ``(a, g′)`` from the RLS state (floats or arrays; synchronises on tensors)."""
        st = {k: (v.detach().cpu().numpy() if is_torch(v) else np.asarray(v)) for k, v in self._state.items()
              if k != "filter"}
        phi = st["phi"]
        with np.errstate(divide="ignore", invalid="ignore"):
            a, gp = 1 / phi - 1, st["b"] / (1 - phi)
        return (float(a), float(gp)) if np.ndim(a) == 0 else (a, gp)
