"""Closed-loop simulation of a controller on a plant model, vectorised over gain sets.

Indexing (docs/design.md): ``beta[t]`` is β(t), the weight of update t; ``state[t]``
is y(t), the KL after update t; ``kl[t]`` is the KL as measured (``y(t)`` plus
optional measurement noise); ``setpoint[t]`` is C(t), used by the controller
when it computes β(t+1) from ``m(t)``, the filtered measurement of
``kl[t − delay]`` (``kl[−1] = y0``).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

import numpy as np

from .backend import NUMPY, is_torch
from .controllers import Controller
from .loop import initial_loop_state, loop_step, measurement_noise
from .plant import Plant

__all__ = ["Trace", "simulate", "response_metrics", "RECORDABLE", "ENGINES"]


@dataclass
class Trace:
    """A closed-loop trace; arrays are time first: shape ``(steps,)`` or ``(steps, n)``.

    Attributes
    ----------
    step, beta, kl, setpoint : ndarray
        Step index, β(t), measured KL after update t, set point C(t).  For
        many loops sharing one schedule, ``setpoint`` is a read-only
        broadcast view of one column.
    state : ndarray
        Noise-free plant output y(t) (equals ``kl`` without noise).
    meta : dict
        Free-form provenance.
    """

    step: np.ndarray
    beta: np.ndarray
    kl: np.ndarray
    setpoint: np.ndarray
    state: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.state is None:
            self.state = self.kl

    def __len__(self):
        return len(self.step)

    @property
    def n_loops(self) -> int:
        """Number of loops in the trace (1 for a scalar trace)."""
        return 1 if self.beta.ndim == 1 else self.beta.shape[1]

    def loop(self, i: int) -> "Trace":
        """The trace of loop ``i`` alone (1-D arrays)."""
        if self.beta.ndim == 1:
            if i != 0:
                raise IndexError("a scalar trace has only loop 0")
            return self
        col = lambda a: a if a.ndim == 1 else a[:, i]  # noqa: E731
        return Trace(self.step, col(self.beta), col(self.kl), col(self.setpoint), col(self.state), dict(self.meta))

    def to_csv(self, path, loop: int | None = None):
        """Write ``step,beta,kl,setpoint`` (one loop; default loop 0) as CSV, atomically."""
        from .fileio import atomic_write

        tr = self.loop(loop or 0)
        with atomic_write(path, newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "beta", "kl", "setpoint"])
            for row in zip(tr.step, tr.beta, tr.kl, tr.setpoint):
                w.writerow([int(row[0])] + [repr(float(v)) for v in row[1:]])

    def metrics(self, tol: float = 0.02) -> dict:
        """:func:`response_metrics` of this trace."""
        return response_metrics(self, tol=tol)


def response_metrics(trace: Trace, tol: float = 0.02) -> dict:
    """Tracking figures of a trace, per loop.

    Parameters
    ----------
    trace : Trace
        Uses the noise-free ``state`` against ``setpoint``.
    tol : float
        Settling band, relative to the final set point.

    Returns
    -------
    dict
        ``final_kl``, ``final_setpoint``, ``overshoot`` (nats: largest excess of
        y over C(t) after y first reaches C), ``overshoot_rel`` (over the final
        set point), ``settling_step`` (first step after which
        ``|y − C| ≤ tol·C_final`` holds to the end; ``None`` if never),
        ``tracking_rmse``; floats for one loop, lists for many.
    """
    y = np.asarray(trace.state, dtype=float)
    c = np.asarray(trace.setpoint, dtype=float)
    if y.ndim == 1:
        y, c = y[:, None], c[:, None]
    c = np.broadcast_to(c, y.shape)
    err = y - c
    n = y.shape[1]
    out = {k: [] for k in ("final_kl", "final_setpoint", "overshoot", "overshoot_rel", "settling_step", "tracking_rmse")}
    for i in range(n):
        e, ci = err[:, i], c[:, i]
        reached = np.flatnonzero(e >= 0)
        ov = float(max(0.0, e[reached[0]:].max())) if len(reached) else 0.0
        band = tol * max(abs(ci[-1]), 1e-12)
        outside = np.flatnonzero(np.abs(e) > band)
        if len(outside) == 0:
            settle = 0
        elif outside[-1] == len(e) - 1:
            settle = None
        else:
            settle = int(trace.step[outside[-1] + 1])
        out["final_kl"].append(float(y[-1, i]))
        out["final_setpoint"].append(float(ci[-1]))
        out["overshoot"].append(ov)
        out["overshoot_rel"].append(ov / max(abs(ci[-1]), 1e-12))
        out["settling_step"].append(settle)
        out["tracking_rmse"].append(float(np.sqrt(np.mean(e**2))))
    if trace.beta.ndim == 1:
        return {k: v[0] for k, v in out.items()}
    return out


def _loops_shape(ctrl, plant, state):
    """The shape of the loops: gains, plant parameters, set point and state may each be per loop."""
    try:
        pshapes = [np.shape(v) for v in plant.parameters().values()]
    except TypeError:
        pshapes = [np.shape(getattr(plant, "a", 0.0))]
    leaves = [x for k, v in state.items() for x in (v if k == "filter" else (v,))]
    c0 = () if ctrl.setpoint is None else np.shape(ctrl.setpoint(ctrl.steps_taken))
    try:
        return np.broadcast_shapes(ctrl.shape, *pshapes, *(np.shape(x) for x in leaves), c0)
    except ValueError:
        raise ValueError(f"the controller ({ctrl.shape or 'one loop'}), its set point ({c0 or 'scalar'}) and the "
                         f"plant ({', '.join(str(s) for s in pshapes)}) disagree on the number of loops") from None


def _full(v, shape):
    return np.array(np.broadcast_to(np.asarray(v, dtype=float), shape))


def _setpoints(ctrl, steps, shape):
    """C(t) for every step of the run, shape ``(steps,) + shape`` (NaN without a set point).

    A set point shared by all loops is returned as a read-only broadcast view of
    one column rather than ``n`` copies of it.
    """
    full = (steps,) + shape
    if ctrl.setpoint is None:
        return np.broadcast_to(np.nan, full)
    t0 = ctrl.steps_taken
    t = np.arange(t0, t0 + steps).reshape((steps,) + (1,) * len(shape))
    try:
        c = np.asarray(ctrl.setpoint(t), dtype=float)
        return c if c.shape == full else np.broadcast_to(c, full)
    except (TypeError, ValueError):
        # A user callable that only takes one integer step.
        out = np.empty(full)
        for i in range(steps):
            out[i] = ctrl.setpoint(t0 + i)
        return out


#: What :func:`simulate` can record.
RECORDABLE = ("beta", "kl", "state")


def simulate(
    controller: Controller,
    plant: Plant,
    steps: int,
    delay: int = 0,
    y0: float = 0.0,
    noise_std: float = 0.0,
    noise_rel: float = 0.0,
    seed: int | None = None,
    progress: bool = False,
    record=RECORDABLE,
    dtype=np.float64,
    engine: str = "auto",
) -> Trace:
    """Run the closed loop for ``steps`` updates.

    The controller is copied (the caller's object is not advanced); if it has
    not stepped yet, its measurement history is primed with ``y0``.  Each update
    is :func:`klcontrol.loop.loop_step`, the loop order used everywhere.

    Parameters
    ----------
    controller : Controller
        Any klcontrol controller; arrays of gains of shape ``(n,)`` give ``n``
        loops simulated at once.
    plant : Plant
        The plant (e.g. :class:`FirstOrderPlant`, whose ``a`` may also be an
        array of shape ``(n,)``).
    steps : int
        Number of updates, ≥ 1.
    delay : {0, 1}
        0: the loop as trained (β(t+1) from y(t)); 1: the paper's Eq. 15.
    y0 : float
        KL before the first update.
    noise_std, noise_rel : float
        Measurement noise: Gaussian with standard deviation
        ``noise_std + noise_rel·|y|`` added to each measured KL.
    seed : int, optional
        Seed of the noise generator.
    progress : bool
        Show a tqdm progress bar.
    record : iterable of {"beta", "kl", "state"}
        The series to keep; the others are ``None`` in the trace (``state``
        is the measured ``kl`` itself when there is no noise).  A large gain
        sweep that only needs the KL saves the memory, and the page faults of
        first touching it, by recording just ``("kl",)``.
    dtype : numpy dtype
        Storage type of the recorded series (``np.float32`` halves the memory);
        the loop itself always computes in float64.
    engine : {"auto", "numpy", "compiled"}
        ``"numpy"`` steps :func:`~klcontrol.loop.loop_step` with NumPy arrays; ``"compiled"`` runs the
        same update traced into a numba kernel (:mod:`klcontrol.compiled`; needs the ``fast`` extra and
        a loop it can trace, else ``ValueError``), several times faster on large sweeps.  ``"auto"``
        compiles when numba is installed, the loop traces and compiling pays: the kernel is already
        loaded or on disk and the NumPy run would take more than about 0.3 s, or the NumPy run would
        take more than about 5 s (a first compilation costs 2–5 s; later processes load it from disk).  The engines agree to rounding
        (``tests/test_compiled.py``); ``trace.meta["engine"]`` says which one ran.

    Returns
    -------
    Trace
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    if delay not in (0, 1) or isinstance(delay, bool):
        raise ValueError(f"delay must be 0 or 1, got {delay!r}")
    y0 = float(y0)
    for name, v in (("y0", y0), ("noise_std", noise_std), ("noise_rel", noise_rel)):
        if not math.isfinite(float(v)) or (name != "y0" and v < 0):
            raise ValueError(f"{name} must be finite{'' if name == 'y0' else ' and ≥ 0'}, got {v!r}")
    record = (record,) if isinstance(record, str) else tuple(record)
    unknown = sorted(set(record) - set(RECORDABLE))
    if unknown or not record:
        raise ValueError(f"record must name some of {RECORDABLE}, got {record!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not isinstance(controller, Controller):
        raise ValueError(f"controller must be a klcontrol Controller, got {type(controller).__name__}")
    if not isinstance(plant, Plant):
        raise ValueError(f"plant must be a klcontrol Plant (e.g. FirstOrderPlant), got {type(plant).__name__}")
    ctrl = controller.copy()
    if ctrl.steps_taken == 0:
        ctrl.prime(y0)
    rng = np.random.default_rng(seed) if (noise_std or noise_rel) else None
    state = ctrl.state
    shape = _loops_shape(ctrl, plant, state)
    if any(is_torch(v) for k, v in state.items() for v in (v if k == "filter" else (v,))):
        raise ValueError("simulate() runs on NumPy; this controller holds torch state (load a NumPy state dict)")
    state = {k: (tuple(_full(x, shape) for x in v) if k == "filter" else _full(v, shape)) for k, v in state.items()}

    full = (steps,) + shape
    betas = np.empty(full, dtype) if "beta" in record else None
    if rng is None:
        # Without noise the measured KL *is* the state: one array serves both.
        kls = states = np.empty(full, dtype) if ("kl" in record or "state" in record) else None
    else:
        kls = np.empty(full, dtype) if "kl" in record else None
        states = np.empty(full, dtype) if "state" in record else None
    cs = _setpoints(ctrl, steps, shape)
    meta = {"delay": delay, "y0": y0, "controller": repr(controller), "plant": repr(plant), "record": record}
    kernel = _compiled_kernel(engine, plant, ctrl, delay, rng is not None, cs, shape, record, steps)
    if kernel is not None:
        meta["engine"] = "compiled"
        _run_compiled(kernel, plant, ctrl, state, cs, shape, y0, delay, rng, noise_std, noise_rel, progress,
                      betas, kls, states, steps)
        return Trace(step=np.arange(steps), beta=betas, kl=kls, setpoint=cs, state=states, meta=meta)
    meta["engine"] = "numpy"
    # An infinite scalar clamp as a Python float, which the backend's clip skips; every other
    # parameter at the loops' full shape (NumPy broadcasts a 0-d array against 1000 elements about 3×
    # slower than it combines two arrays of equal shape).
    params = {k: (float(v) if np.ndim(v) == 0 and np.isinf(v) else _full(v, shape)) for k, v in ctrl.params.items()}
    x = initial_loop_state(plant, state, np.full(shape, y0), delay, shape)
    t0 = ctrl.steps_taken
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="simulate", unit="step", mininterval=0.5)
    if rng is None:
        noise = 0.0
    else:
        def noise(y):
            return measurement_noise(y, rng.standard_normal(shape), noise_std, noise_rel)
    clocked = ctrl.clocked
    for t in it:
        if clocked:  # an open-loop schedule reads the clock: keep the copy's in step with the loop
            ctrl._t = t0 + t
        beta = x.controller["beta"]
        last_y, last_kl, x = loop_step(plant, ctrl, x, cs[t], params, noise, NUMPY)
        if betas is not None:
            betas[t] = beta
        if states is not None:
            states[t] = last_y
        if kls is not None and kls is not states:
            kls[t] = last_kl
    # y(t) non-finite keeps y(t+1) non-finite, so the last output tells whether
    # any step went bad (the measured KL adds finite noise to y).
    _check_finite(last_y, last_kl, kls, states, steps, t0)
    return Trace(step=np.arange(steps), beta=betas, kl=kls, setpoint=cs, state=states, meta=meta)


#: The engines of :func:`simulate`.
ENGINES = ("auto", "numpy", "compiled")
# Seconds a NumPy step takes, per step and per loop (measured on the benchmark loop); "auto" compiles
# when the predicted NumPy run exceeds the cost of loading (cached) or compiling the kernel.
_NUMPY_STEP_S, _NUMPY_LOOP_S = 2e-5, 3e-9
_LOAD_PAYS_S, _COMPILE_PAYS_S = 0.3, 5.0


def _check_finite(last_y, last_kl, kls, states, steps, t0):
    # y(t) non-finite keeps y(t+1) non-finite, so the last output tells whether
    # any step went bad (the measured KL adds finite noise to y).
    if not (np.all(np.isfinite(last_y)) and np.all(np.isfinite(last_kl))):
        probe = kls if kls is not None else states
        where = ""
        if probe is not None:
            where = f" at step {t0 + int(np.argmax((~np.isfinite(probe)).reshape(steps, -1).any(axis=1)))}"
        raise ValueError(f"the plant output became NaN or infinite{where}; check the plant and the clamps")


def _shared_setpoint(cs, shape):
    return not shape or all(st == 0 for st in cs.strides[1:])


def _compiled_kernel(engine, plant, ctrl, delay, noisy, cs, shape, record, steps):
    """The kernel ``engine`` asks for, or ``None`` for NumPy."""
    if engine == "numpy":
        return None
    from . import compiled

    shared = _shared_setpoint(cs, shape)
    try:
        if not compiled.available():
            raise compiled.NotCompilable("numba is not installed: pip install 'klcontrol[fast]'")
        if engine == "auto":
            key = compiled.structure_key(plant, ctrl, delay, noisy, shared)
            est = steps * (_NUMPY_STEP_S + _NUMPY_LOOP_S * math.prod(shape))
            if not (est > _COMPILE_PAYS_S or (est > _LOAD_PAYS_S and compiled.is_cached(key, plant, ctrl))
                    or key in compiled._KERNELS):
                return None
        return compiled.kernel_for(plant, ctrl, delay, noisy, shared)
    except compiled.NotCompilable as e:
        if engine == "compiled":
            raise ValueError(f"engine='compiled' cannot run this loop: {e}") from None
        return None


def _run_compiled(kernel, plant, ctrl, state, cs, shape, y0, delay, rng, noise_std, noise_rel, progress,
                  betas, kls, states, steps):
    from .compiled import empty_rows, run_kernel

    n = math.prod(shape)
    x = initial_loop_state(plant, state, np.full(shape, y0), delay, shape)
    leaves = {("plant", j): v for j, v in enumerate(x.plant)}
    leaves.update({("ctrl", k): v for k, v in x.controller.items() if k != "filter"})
    leaves.update({("filter", j): v for j, v in enumerate(x.controller["filter"])})
    leaves.update({("delayed", j): v for j, v in enumerate(x.delayed)})
    S = np.empty((len(kernel.state), n))
    for r, tag in enumerate(kernel.state):
        S[r] = np.broadcast_to(np.asarray(leaves[tag], dtype=float), shape).reshape(n)
    N = np.empty_like(S)
    pvals = plant.parameters()
    cvals = ctrl.params
    P = np.empty((len(kernel.params), n))
    for r, (owner, name) in enumerate(kernel.params):
        P[r] = np.broadcast_to(np.asarray(pvals[name] if owner == "plant" else cvals[name], dtype=float),
                               shape).reshape(n)
    if _shared_setpoint(cs, shape):
        C = np.ascontiguousarray(cs[(slice(None),) + (0,) * len(shape)], dtype=float)
    else:
        C = np.ascontiguousarray(cs.reshape(steps, n), dtype=float)
    W = np.empty((kernel.n_work, n))
    LAST = np.empty((2, n))
    # Unrecorded series as empty rows of the recorded dtype: one compiled signature per dtype.
    dtype = next(a.dtype for a in (betas, kls, states) if a is not None)
    rows = lambda a: empty_rows(n, dtype) if a is None else a.reshape(steps, n)  # noqa: E731
    RB, RY = rows(betas), rows(states if states is not None else kls)
    RK = rows(kls if rng is not None else None)
    # Noise is drawn in blocks of steps, in the order NumPy's engine draws it (same seed, same samples);
    # a progress bar advances per block.
    block = steps
    if rng is not None:
        block = max(1, min(steps, (1 << 20) // max(n, 1)))
    if progress:
        block = max(1, min(block, -(-steps // 100)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="simulate", unit="step", mininterval=0.5)
    Z = empty_rows(n)
    try:
        for t0 in range(0, steps, block):
            t1 = min(steps, t0 + block)
            if rng is not None:
                Z = rng.standard_normal((t1 - t0,) + shape).reshape(t1 - t0, n)
            run_kernel(kernel, t0, t1, S, N, P, C, Z, noise_std, noise_rel, W, RB, RY, RK, LAST)
            if bar is not None:
                bar.update(t1 - t0)
    finally:
        if bar is not None:
            bar.close()
    _check_finite(LAST[0], LAST[1], kls, states, steps, ctrl.steps_taken)
