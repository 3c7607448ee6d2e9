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
from .loop import SUMMARY_START, LoopState, initial_loop_state, loop_step, measurement_noise, summary_step
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
    final : LoopState, optional
        The loop after the last update: ``simulate(trace.controller, plant, n, start=trace.final)``
        continues the run where it stopped.
    controller : Controller, optional
        A copy of the simulated controller advanced to the end of the run (its state and step count).
    summary : dict, optional
        :func:`response_metrics` computed while the loop ran (``simulate(..., summary=True)``), without
        storing the trajectories.
    """

    step: np.ndarray
    beta: np.ndarray | None
    kl: np.ndarray | None
    setpoint: np.ndarray
    state: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    final: LoopState | None = None
    controller: Controller | None = None
    summary: dict | None = None

    def __post_init__(self):
        if self.state is None:
            self.state = self.kl

    def __len__(self):
        return len(self.step)

    @property
    def n_loops(self) -> int:
        """Number of loops in the trace (1 for a scalar trace)."""
        return 1 if self.setpoint.ndim == 1 else self.setpoint.shape[1]

    def loop(self, i: int) -> "Trace":
        """The trace of loop ``i`` alone (1-D arrays)."""
        if self.setpoint.ndim == 1:
            if i != 0:
                raise IndexError("a scalar trace has only loop 0")
            return self
        col = lambda a: a if a is None or a.ndim == 1 else a[:, i]  # noqa: E731
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
        """:func:`response_metrics` of this trace (the in-run summary when the state was not recorded)."""
        if self.state is None and self.summary is not None and self.meta.get("settle_tol") == tol:
            return dict(self.summary)
        if self.state is None:
            raise ValueError("this trace recorded no state: simulate with record=('kl',) or summary=True "
                             f"(settle_tol={tol})")
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


def _summary(acc, last_y, c_final, steps, scalar):
    """The :func:`response_metrics` dict from the accumulators of :func:`summary_step`."""
    sumsq, _, over, last_out = (np.asarray(a, dtype=float).reshape(-1) for a in acc)
    y, c = np.asarray(last_y, dtype=float).reshape(-1), np.broadcast_to(c_final, sumsq.shape)
    scale = np.maximum(np.abs(c), 1e-12)
    # tolist() builds the Python floats in C: a comprehension of float(v) cost 3 ns per loop-step of a
    # 100 000-loop, 400-step sweep (benchmarks/simulate_floor.py)
    settle = (np.where(last_out < 0, 0, last_out + 1)).astype(np.int64).tolist()
    for i in np.flatnonzero(last_out >= steps - 1).tolist():
        settle[i] = None
    out = {
        "final_kl": y.tolist(),
        "final_setpoint": np.array(c, dtype=float).tolist(),
        "overshoot": over.tolist(),
        "overshoot_rel": (over / scale).tolist(),
        "settling_step": settle,
        "tracking_rmse": np.sqrt(sumsq / steps).tolist(),
    }
    return {k: v[0] for k, v in out.items()} if scalar else out


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(nbytes) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


#: Loops above which the trace's ``meta`` names the controller and plant instead of printing every gain: a repr of
#: 100 000 gain sets is 1.3 MB of text and 3 ns per loop-step of a 400-step sweep, for a record no one reads whole.
REPR_LOOPS = 1000


def _described(obj, shape) -> str:
    """``repr(obj)``, or for a sweep of more than :data:`REPR_LOOPS` loops its class and the loops' shape."""
    if math.prod(shape) > REPR_LOOPS:
        return f"{type(obj).__name__}(… {math.prod(shape)} loops of shape {tuple(shape)}; repr omitted above " \
               f"{REPR_LOOPS} loops)"
    return repr(obj)


def _check_memory(record, noisy, steps, n, dtype):
    """Refuse, before allocating anything, a recording that cannot fit in the memory available."""
    def need(rec, dt):
        arrays = len(set(rec) & {"beta"}) + (len(set(rec) & {"kl", "state"}) if noisy else
                                              int(bool(set(rec) & {"kl", "state"})))
        return arrays * steps * n * np.dtype(dt).itemsize

    size, avail = need(record, dtype), _available_memory()
    if avail is None or size <= avail:
        return
    if need(("kl",), np.float32) <= avail:
        fits = "record=('kl',), dtype=np.float32 would need " + _gb(need(("kl",), np.float32))
    else:
        fits = "record=(), summary=True records nothing (or run fewer steps per call and continue with start=)"
    raise ValueError(f"record={record!r} in {np.dtype(dtype)} for {steps} steps x {n} loops needs {_gb(size)}, "
                     f"more than the {_gb(avail)} of memory available; {fits}")


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
    summary: bool = False,
    settle_tol: float = 0.02,
    start: LoopState | None = None,
    threads: int | None = None,
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
        The series to keep, chosen per signal; the others are ``None`` in the trace (``state``
        is the measured ``kl`` itself when there is no noise).  A large gain sweep that only
        needs the KL saves the memory, and the page faults of first touching it, by recording
        just ``("kl",)``; ``()`` with ``summary=True`` stores no trajectory at all.  A recording
        that cannot fit in the memory available is refused before anything is allocated, with
        its size and a ``record=`` that fits.
    dtype : numpy dtype
        Storage type of the recorded series (``np.float32`` halves the memory);
        the loop itself always computes in float64.
    engine : {"auto", "numpy", "compiled"}
        ``"numpy"`` steps :func:`~klcontrol.loop.loop_step` with NumPy arrays; ``"compiled"`` runs the
        same update traced into a numba kernel (:mod:`klcontrol.compiled`; needs the ``fast`` extra and
        a loop it can trace, else ``ValueError``), many times faster on large sweeps and on every core.
        ``"auto"`` compiles when numba is installed, the loop traces and compiling pays (see
        :func:`_compiled_kernel`); the engines agree to rounding (``tests/test_compiled.py``);
        ``trace.meta["engine"]`` says which one ran.
    summary : bool
        Compute :func:`response_metrics` (tracking RMSE, overshoot, settling step, final KL) while
        the loop runs, into ``trace.summary``: no trajectory needs to be stored for them.
    settle_tol : float
        The settling band of the summary, relative to the final set point.
    start : LoopState, optional
        Continue from ``trace.final`` of an earlier run (pass ``trace.controller`` as the
        controller): the result equals one longer run.
    threads : int, optional
        Threads of the compiled engine (default: numba's, every core); blocks of loops run in parallel.

    Returns
    -------
    Trace
        With ``final`` (the loop after the last update) and ``controller`` (advanced to it).
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    if delay not in (0, 1) or isinstance(delay, bool):
        raise ValueError(f"delay must be 0 or 1, got {delay!r}")
    y0 = float(y0)
    for name, v in (("y0", y0), ("noise_std", noise_std), ("noise_rel", noise_rel), ("settle_tol", settle_tol)):
        if not math.isfinite(float(v)) or (name != "y0" and v < 0):
            raise ValueError(f"{name} must be finite{'' if name == 'y0' else ' and ≥ 0'}, got {v!r}")
    record = (record,) if isinstance(record, str) else tuple(record)
    unknown = sorted(set(record) - set(RECORDABLE))
    if unknown or not (record or summary):
        raise ValueError(f"record must name some of {RECORDABLE} (or be () with summary=True), got {record!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if not isinstance(controller, Controller):
        raise ValueError(f"controller must be a klcontrol Controller, got {type(controller).__name__}")
    if not isinstance(plant, Plant):
        raise ValueError(f"plant must be a klcontrol Plant (e.g. FirstOrderPlant), got {type(plant).__name__}")
    if start is not None and (not isinstance(start, LoopState) or len(start.delayed) != delay):
        raise ValueError(f"start must be the final LoopState of a run with delay={delay} (trace.final)")
    ctrl = controller.copy()
    if start is None and ctrl.steps_taken == 0:
        ctrl.prime(y0)
    rng = np.random.default_rng(seed) if (noise_std or noise_rel) else None
    state = ctrl.state if start is None else dict(start.controller)
    shape = _loops_shape(ctrl, plant, state)
    if any(is_torch(v) for k, v in state.items() for v in (v if k == "filter" else (v,))):
        raise ValueError("simulate() runs on NumPy; this controller holds torch state (load a NumPy state dict)")
    state = {k: (tuple(_full(x, shape) for x in v) if k == "filter" else _full(v, shape)) for k, v in state.items()}
    if start is None:
        x = initial_loop_state(plant, state, np.full(shape, y0), delay, shape)
    else:
        x = LoopState(tuple(_full(v, shape) for v in start.plant), state, tuple(_full(v, shape) for v in start.delayed))
    _check_memory(record, rng is not None, steps, math.prod(shape), dtype)

    full = (steps,) + shape
    betas = np.empty(full, dtype) if "beta" in record else None
    if rng is None:
        # Without noise the measured KL *is* the state: one array serves both.
        kls = states = np.empty(full, dtype) if ("kl" in record or "state" in record) else None
    else:
        kls = np.empty(full, dtype) if "kl" in record else None
        states = np.empty(full, dtype) if "state" in record else None
    cs = _setpoints(ctrl, steps, shape)
    meta = {"delay": delay, "y0": y0, "controller": _described(controller, shape), "plant": _described(plant, shape),
            "record": record}
    if summary:
        meta["settle_tol"] = settle_tol
    t0 = ctrl.steps_taken
    band = settle_tol * np.maximum(np.abs(np.asarray(cs[-1], dtype=float)), 1e-12)
    kernel = _compiled_kernel(engine, plant, ctrl, delay, rng is not None, cs, shape, record, steps)
    if kernel is not None:
        meta["engine"] = "compiled"
        x, last_y, acc = _run_compiled(kernel, plant, ctrl, x, cs, shape, rng, noise_std, noise_rel, progress,
                                       betas, kls, states, steps, band if summary else None, threads)
    else:
        meta["engine"] = "numpy"
        x, last_y, acc = _run_numpy(plant, ctrl, x, cs, shape, rng, noise_std, noise_rel, progress,
                                    betas, kls, states, steps, band if summary else None)
    ctrl._state = {k: (tuple(np.array(f) for f in v) if k == "filter" else np.array(v)) for k, v in
                   x.controller.items()}
    ctrl._t = t0 + steps
    return Trace(step=np.arange(steps), beta=betas, kl=kls, setpoint=cs, state=states, meta=meta, final=x,
                 controller=ctrl,
                 summary=None if acc is None else _summary(acc, last_y, cs[-1], steps, scalar=not shape))


def _run_numpy(plant, ctrl, x, cs, shape, rng, noise_std, noise_rel, progress, betas, kls, states, steps, band):
    """The NumPy engine: :func:`loop_step` once per update on arrays of all loops."""
    # An infinite scalar clamp as a Python float, which the backend's clip skips; every other
    # parameter at the loops' full shape (NumPy broadcasts a 0-d array against 1000 elements about 3×
    # slower than it combines two arrays of equal shape).
    params = {k: (float(v) if np.ndim(v) == 0 and np.isinf(v) else _full(v, shape)) for k, v in ctrl.params.items()}
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
    acc = None if band is None else tuple(np.full(shape, v) for v in SUMMARY_START)
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
        if acc is not None:
            acc = summary_step(acc, last_y, cs[t], band, float(t), NUMPY)
    # y(t) non-finite keeps y(t+1) non-finite, so the last output tells whether
    # any step went bad (the measured KL adds finite noise to y).
    _check_finite(last_y, last_kl, kls, states, steps, t0)
    full = lambda v: np.array(np.broadcast_to(np.asarray(v, dtype=float), shape))  # noqa: E731
    x = LoopState(tuple(full(v) for v in x.plant),
                  {k: (tuple(full(f) for f in v) if k == "filter" else full(v)) for k, v in x.controller.items()},
                  tuple(full(v) for v in x.delayed))
    return x, last_y, acc


#: The engines of :func:`simulate`.
ENGINES = ("auto", "numpy", "compiled")
# Seconds a NumPy step takes, per step and per loop (measured on the benchmark loop: 1.6e-5 s + 1.5e-8 s per
# loop); "auto" compiles when the predicted NumPy run exceeds the cost of loading a cached kernel, or when two
# such runs exceed a first compilation (the kernel then stays on disk for the next call and process).
_NUMPY_STEP_S, _NUMPY_LOOP_S = 1.6e-5, 1.5e-8
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
            if not (2 * est > _COMPILE_PAYS_S or (est > _LOAD_PAYS_S and compiled.is_cached(key, plant, ctrl))
                    or key in compiled._KERNELS):
                return None
        return compiled.kernel_for(plant, ctrl, delay, noisy, shared)
    except compiled.NotCompilable as e:
        if engine == "compiled":
            raise ValueError(f"engine='compiled' cannot run this loop: {e}") from None
        return None


def _run_compiled(kernel, plant, ctrl, x, cs, shape, rng, noise_std, noise_rel, progress, betas, kls, states,
                  steps, band, threads):
    """The compiled engine: the same update as :func:`_run_numpy`, in a numba kernel over blocks of loops."""
    from .compiled import empty_rows, run_kernel

    n = math.prod(shape)
    leaves = {("plant", j): v for j, v in enumerate(x.plant)}
    leaves.update({("ctrl", k): v for k, v in x.controller.items() if k != "filter"})
    leaves.update({("filter", j): v for j, v in enumerate(x.controller["filter"])})
    leaves.update({("delayed", j): v for j, v in enumerate(x.delayed)})
    S = np.empty((len(kernel.state), n))
    for r, tag in enumerate(kernel.state):
        S[r] = np.broadcast_to(np.asarray(leaves[tag], dtype=float), shape).reshape(n)
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
    LAST = np.empty((2, n))
    # An unrecorded series is one scratch row of the recorded dtype (one compiled signature per dtype); a
    # recorded run of one step is one row too, which the kernel writes at row 0 = step 0 all the same.
    dtype = next((a.dtype for a in (betas, kls, states) if a is not None), np.dtype(np.float64))
    rows = lambda a: empty_rows(n, dtype, 1) if a is None else a.reshape(steps, n)  # noqa: E731
    RB = empty_rows(n, dtype) if betas is None else betas.reshape(steps, n)  # β(t) is copied only when recorded
    RY = rows(states if states is not None else kls)
    RK = rows(kls if rng is not None else None)
    ACC = BAND = None
    if band is not None:
        ACC = np.array([np.full(n, v) for v in SUMMARY_START])
        BAND = np.ascontiguousarray(np.broadcast_to(band, shape).reshape(n), dtype=float)
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
    before = None
    if threads is not None:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    try:
        for t0 in range(0, steps, block):
            t1 = min(steps, t0 + block)
            if rng is not None:
                Z = rng.standard_normal((t1 - t0,) + shape).reshape(t1 - t0, n)
            run_kernel(kernel, t0, t1, S, P, C, Z, noise_std, noise_rel, RB, RY, RK, LAST, ACC, BAND)
            if bar is not None:
                bar.update(t1 - t0)
    finally:
        if before is not None:
            numba.set_num_threads(before)
        if bar is not None:
            bar.close()
    _check_finite(LAST[0], LAST[1], kls, states, steps, ctrl.steps_taken)
    rows_of = {tag: S[r].reshape(shape) for r, tag in enumerate(kernel.state)}
    n_plant = sum(1 for tag in kernel.state if tag[0] == "plant")
    n_filter = sum(1 for tag in kernel.state if tag[0] == "filter")
    n_delayed = sum(1 for tag in kernel.state if tag[0] == "delayed")
    ctrl_state = {k: (tuple(rows_of["filter", j].copy() for j in range(n_filter)) if k == "filter"
                      else rows_of["ctrl", k].copy()) for k in x.controller}
    final = LoopState(tuple(rows_of["plant", j].copy() for j in range(n_plant)), ctrl_state,
                      tuple(rows_of["delayed", j].copy() for j in range(n_delayed)))
    acc = None if ACC is None else tuple(a.reshape(shape) for a in ACC)
    return final, LAST[0].reshape(shape), acc
