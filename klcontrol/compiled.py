"""Compiled closed-loop kernels: the engine behind ``simulate(..., engine="compiled")``.

The loop is not written again here.  :func:`kernel_for` runs
:func:`klcontrol.loop.loop_step` once with sympy symbols for the plant's
parameters (:meth:`Plant.parameters`), the controller's parameters and state,
the set point and the measurement noise, which gives the update as formulas;
common subexpressions are shared (``sympy.cse``) and each formula is printed as
one elementwise loop over the gain sets.  numba compiles that source, and LLVM
vectorises each of its short loops (one formula, few arrays: nothing it cannot
prove about aliasing), which is what makes the kernel several times faster than
NumPy, whose per-call overhead dominates arrays of a thousand elements.  The
exponentials use :func:`klcontrol._jit_math.exp`, because a libm call stops
the vectorisation.

Kernels are keyed by the loop's *structure* (controller class, filter,
parameter names, anti-windup mode, delay, plant and gain classes, noise,
shared or per-loop set point), not by its numbers or what is recorded, so one
compilation serves every gain sweep of that loop.  The printed source is
written under ``$KLCONTROL_CACHE/kernels`` and compiled with numba's on-disk
cache: a later process loads the machine code instead of compiling it
(about a second saved).  The file name hashes the structure and the source
of every module the trace runs, so an edited law never meets a stale kernel.

numba is optional (``pip install 'klcontrol[fast]'``); without it, or for a
loop it cannot trace (an open-loop schedule that reads the clock, a plant
that does not list its parameters, a Python-callable gain), ``simulate`` runs
the same loop with NumPy.  ``tests/test_compiled.py`` checks the two engines
against each other for every controller kind.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cache import cache_dir, private_dir, untrusted_reason, write_private

__all__ = ["available", "NotCompilable", "Kernel", "structure_key", "kernel_for", "is_cached", "run_kernel"]


class NotCompilable(ValueError):
    """The loop cannot be traced into a compiled kernel (simulate it with NumPy)."""


@lru_cache(maxsize=1)
def available() -> bool:
    """True if numba is installed (the ``fast`` extra)."""
    return importlib.util.find_spec("numba") is not None


@dataclass(frozen=True)
class Kernel:
    """A compiled loop.

    Attributes
    ----------
    fn : numba dispatcher
        ``fn(t0, t1, S, N, P, C, Z, sd, rel, W, RB, RY, RK, LAST)`` runs updates ``t0 … t1−1`` on the
        state ``S`` in place (``N`` is scratch of the same shape).
    state : tuple of (str, int)
        The loop state rows of ``S``: ``("plant", j)``, ``("ctrl", key)``, ``("filter", j)``, ``("delayed", j)``.
    params : tuple of (str, str)
        The rows of ``P``: ``("plant", name)`` or ``("ctrl", name)``.
    n_work : int
        Rows of the scratch array ``W``.
    path : Path
        The generated source file.
    """

    fn: object
    state: tuple
    params: tuple
    n_work: int
    path: Path


_KERNELS: dict = {}


def structure_key(plant, controller, delay: int, noisy: bool, shared_setpoint: bool) -> tuple:
    """What the compiled update depends on besides the numbers; raises :class:`NotCompilable`.

    Parameters
    ----------
    plant : Plant
    controller : Controller
    delay : {0, 1}
    noisy : bool
        Whether measurement noise is simulated.
    shared_setpoint : bool
        One set point for all loops (a column) rather than one per loop.
    """
    if controller.clocked:
        raise NotCompilable(f"{type(controller).__name__}'s law reads the step clock")
    try:
        pnames = tuple(plant.parameters())
    except TypeError as e:
        raise NotCompilable(str(e)) from None
    g = getattr(plant, "g", None)
    pcls = type(plant)
    return (f"{pcls.__module__}.{pcls.__qualname__}", None if g is None else f"{type(g).__module__}.{type(g).__qualname__}",
            pnames, len(plant.initial_state(0.0)), controller.structure(), int(delay), bool(noisy),
            bool(shared_setpoint))


@lru_cache(maxsize=None)
def _sources_hash(files: tuple) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode())
        try:
            h.update(Path(f).read_bytes())
        except OSError:
            pass
    return h.hexdigest()


@lru_cache(maxsize=1)
def _versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("sympy", "numba", "numpy"):
        try:
            out.append(version(pkg))
        except PackageNotFoundError:
            out.append(None)
    return tuple(out)


def _path(key: tuple, plant, controller) -> Path:
    here = Path(__file__).resolve().parent
    files = {str(p) for p in here.glob("*.py")}
    for obj in (type(controller), type(plant), type(getattr(plant, "g", None))):
        try:
            files.add(str(Path(inspect.getsourcefile(obj)).resolve()))
        except (TypeError, OSError):
            pass
    digest = hashlib.sha256(repr((key, _versions())).encode()
                            + _sources_hash(tuple(sorted(files))).encode()).hexdigest()[:24]
    return cache_dir("kernels") / f"loop_{digest}.py"


def is_cached(key: tuple, plant, controller) -> bool:
    """True if this structure's kernel is loaded in this process or compiled on disk."""
    if key in _KERNELS:
        return True
    path = _path(key, plant, controller)
    return (path.exists() and untrusted_reason(path) is None
            and any(path.parent.joinpath("__pycache__").glob(f"{path.stem}.*.nbi")))


# -- tracing and printing ------------------------------------------------------------------------------------


def _trace(key, plant, controller, delay, noisy, shared_setpoint):
    """The source of the kernel: the update traced as sympy formulas, one loop per formula."""
    import sympy as sp

    from .backend import _sympy_ops
    from .loop import LoopState, loop_step, measurement_noise

    ops = _sympy_ops()
    names = {}  # symbol → code that reads it inside the loop over i

    def sym(code):
        s = sp.Symbol(f"v{len(names)}", real=True)
        names[s] = code
        return s

    prow, pparams, cparams = [], {}, {}
    for name in plant.parameters():
        pparams[name] = sym(f"P{len(prow)}[i]")
        prow.append(("plant", name))
    splant = plant.with_parameters(pparams)
    for name in controller.params:
        cparams[name] = sym(f"P{len(prow)}[i]")
        prow.append(("ctrl", name))

    srow = []

    def state(tag):
        srow.append(tag)
        return sym(f"S{len(srow) - 1}[i]")

    n_plant = len(plant.initial_state(0.0))
    xp = tuple(state(("plant", j)) for j in range(n_plant))
    cstate = controller.state
    xc = {}
    for k, v in cstate.items():
        if k == "filter":
            xc[k] = tuple(state(("filter", j)) for j in range(len(v)))
        else:
            xc[k] = state(("ctrl", k))
    xd = tuple(state(("delayed", j)) for j in range(int(delay)))
    c = sym("ct" if shared_setpoint else "crow[i]")
    if noisy:
        z, sd, rel = sym("zrow[i]"), sym("sd"), sym("rel")

        def noise(y):
            return measurement_noise(y, z, sd, rel)
    else:
        noise = 0.0
    x = LoopState(xp, xc, xd)
    try:
        y, kl, xn = loop_step(splant, controller, x, c, cparams, noise, ops)
        flat = list(xn.plant)
        for k in cstate:
            flat += list(xn.controller[k]) if k == "filter" else [xn.controller[k]]
        flat += list(xn.delayed)
        new = [sp.sympify(v) for v in flat]
        y, kl = sp.sympify(y), sp.sympify(kl)
    except (TypeError, ValueError, AttributeError) as e:
        raise NotCompilable(f"the loop does not trace with symbols ({type(e).__name__}: {e})") from None
    if len(new) != len(srow):
        raise NotCompilable("the loop's state changed size in one update")
    outs = [y, kl] + new
    bad = set().union(*(e.free_symbols for e in outs)) - set(names)
    if bad:
        raise NotCompilable(f"the update depends on values the engine does not know: {sorted(map(str, bad))}")
    repl, reduced = sp.cse(outs, symbols=sp.numbered_symbols("w"), optimizations=None)
    # Every exponential gets a loop of its own: LLVM vectorises `w = exp(x)` but not, say,
    # `1/(1 + exp(−x))` in one loop (measured 3.5× slower, the inlined exp's selects and the division).
    fresh = sp.numbered_symbols("e")
    stmts = []

    def split(e):
        def own_row(x):
            s = next(fresh)
            stmts.append((s, x))
            return s

        if isinstance(e, sp.exp):
            return sp.exp(split(e.args[0]))
        return e.replace(lambda x: isinstance(x, sp.exp), own_row)

    for s, e in repl:
        e = split(e)
        stmts.append((s, e))
    reduced = [split(e) for e in reduced]
    # Formulas of the parameters alone (e.g. 1/(1 + a)) are computed once, before the first update.
    params_only = {v for v, code in names.items() if code.startswith("P")}
    hoisted, body = [], []
    work, printer = {}, _printer(names)
    for s, e in stmts:
        work[s] = f"W{len(work)}[i]"
        printer.names[s] = work[s]
        invariant = e.free_symbols <= params_only
        if invariant:
            params_only.add(s)
        (hoisted if invariant else body).append((work[s], printer.doprint(e)))
    y_code, kl_code = printer.doprint(reduced[0]), printer.doprint(reduced[1])
    # y and kl are kept in scratch rows when recorded or needed for the final check.
    yw, klw = f"W{len(work)}[i]", f"W{len(work) + 1}[i]"
    body.append((yw, y_code))
    body.append((klw, kl_code))
    n_work = len(work) + 2
    new_code = [printer.doprint(e) for e in reduced[2:]]
    return _source(key, hoisted, body, new_code, srow, prow, n_work, yw, klw, shared_setpoint, noisy,
                   beta_row=srow.index(("ctrl", "beta")))


def _printer(names):
    from sympy.printing.pycode import PythonCodePrinter

    class _Printer(PythonCodePrinter):
        def __init__(self):
            super().__init__({"fully_qualified_modules": True, "inline": True, "allow_unknown_functions": False})
            self.names = dict(names)

        def _print_Symbol(self, expr):
            try:
                return self.names[expr]
            except KeyError:
                raise NotCompilable(f"unknown symbol {expr} in the traced update") from None

        def _print_Float(self, expr):
            return repr(float(expr))

        def _print_exp(self, expr):
            return f"_exp({self._print(expr.args[0])})"

        def _print_sign(self, expr):
            return f"_sign({self._print(expr.args[0])})"

        def _print_Infinity(self, expr):
            return "math.inf"

        def _print_NegativeInfinity(self, expr):
            return "(-math.inf)"

        def _print_Max(self, expr):
            return self._minmax("max", expr.args)

        def _print_Min(self, expr):
            return self._minmax("min", expr.args)

        def _minmax(self, f, args):
            out = self._print(args[0])
            for a in args[1:]:
                out = f"{f}({out}, {self._print(a)})"
            return out

        def emptyPrinter(self, expr):
            raise NotCompilable(f"cannot compile {type(expr).__name__} ({expr})")

    return _Printer()


def _source(key, hoisted, body, new_code, srow, prow, n_work, yw, klw, shared, noisy, beta_row):
    ind = " " * 12
    lines = [
        '"""klcontrol compiled loop kernel (generated by klcontrol.compiled; do not edit).',
        "",
        f"Structure: {key!r}",
        '"""',
        "import math",
        "",
        "from numba import njit",
        "",
        "from klcontrol._jit_math import exp as _exp, sign as _sign",
        "",
        f"STATE_ROWS = {tuple(srow)!r}",
        f"PARAM_ROWS = {tuple(prow)!r}",
        f"N_WORK = {n_work}",
        "",
        "",
        '@njit(cache=True, fastmath={"contract"})',
        "def kernel(t0, t1, S, N, P, C, Z, sd, rel, W, RB, RY, RK, LAST):",
        "    n = S.shape[1]",
    ]
    for target, code in hoisted:
        r = lambda c: re.sub(r"([PW])(\d+)\[i\]", r"\1[\2, i]", c)  # noqa: E731  (rows, outside the loop)
        lines += ["    for i in range(n):", f"        {r(target)} = {r(code)}"]
    lines += ["    for t in range(t0, t1):"]
    lines.append("        ct = C[t]" if shared else "        crow = C[t]")
    if noisy:
        lines.append("        zrow = Z[t - t0]")
    lines += [f"        S{j} = S[{j}]" for j in range(len(srow))]
    lines += [f"        N{j} = N[{j}]" for j in range(len(srow))]
    lines += [f"        P{j} = P[{j}]" for j in range(len(prow))]
    lines += [f"        W{j} = W[{j}]" for j in range(n_work)]
    # What is recorded is chosen at run time: an output of 0 rows is not written.
    lines += ["        if RB.shape[0]:", "            for i in range(n):", f"{ind}    RB[t, i] = S{beta_row}[i]"]
    for target, code in body:
        lines += ["        for i in range(n):", f"{ind}{target} = {code}"]
    # Without noise the measured KL is the state: simulate records both in one array (RY).
    lines += ["        if RY.shape[0]:", "            for i in range(n):", f"{ind}    RY[t, i] = {yw}"]
    if noisy:
        lines += ["        if RK.shape[0]:", "            for i in range(n):", f"{ind}    RK[t, i] = {klw}"]
    for j, code in enumerate(new_code):
        lines += ["        for i in range(n):", f"{ind}N{j}[i] = {code}"]
    lines += [
        "        S, N = N, S",
        "    if (t1 - t0) % 2 == 1:  # the state is in the caller's N: hand it back in S",
        "        N[:, :] = S",
        "    for i in range(n):",
        f"        LAST[0, i] = W[{n_work - 2}, i]",
        f"        LAST[1, i] = W[{n_work - 1}, i]",
        "",
    ]
    return "\n".join(lines)


def kernel_for(plant, controller, delay: int = 0, noisy: bool = False, shared_setpoint: bool = True) -> Kernel:
    """The compiled kernel of this loop structure: from memory, from the disk cache, or traced and compiled.

    Raises
    ------
    NotCompilable
        If numba is missing or the loop does not trace.
    """
    if not available():
        raise NotCompilable("numba is not installed: pip install 'klcontrol[fast]'")
    key = structure_key(plant, controller, delay, noisy, shared_setpoint)
    k = _KERNELS.get(key)
    if k is not None:
        return k
    path = _path(key, plant, controller)
    # Runs nothing from a cache others could write (klcontrol.cache): the kernel file, numba's index and
    # machine code beside it are trusted only in a private folder; otherwise the kernel is compiled in memory.
    trusted = private_dir("kernels") is not None and untrusted_reason(path) is None and \
        untrusted_reason(path.parent / "__pycache__") is None
    if not trusted:
        k = _memory_kernel(key, plant, controller, delay, noisy, shared_setpoint)
        _KERNELS[key] = k
        return k
    # The name hashes the structure and the source of everything the trace runs, so an existing file is
    # this trace's output: load it without tracing again (sympy costs more than the numba cache load).
    # Written once and never rewritten: numba's disk cache is keyed by the file's modification time.
    if not path.exists():
        src = _trace(key, plant, controller, delay, noisy, shared_setpoint)
        src = f"# sha256 {hashlib.sha256(src.encode()).hexdigest()}\n{src}"
        try:
            write_private(path, src)  # atomic: a concurrent process never imports half a file
        except OSError:  # a cache that cannot be written: compile in memory
            k = _memory_kernel(key, plant, controller, delay, noisy, shared_setpoint)
            _KERNELS[key] = k
            return k
    # The first line holds the hash of the rest: a file changed since it was written is never executed.
    head, _, body = path.read_text().partition("\n")
    if head != f"# sha256 {hashlib.sha256(body.encode()).hexdigest()}":
        raise NotCompilable(f"the compiled kernel {path} was changed after klcontrol wrote it; delete it to rebuild")
    name = f"klcontrol_kernel_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba's cache finds the module of a kernel by name
    try:
        spec.loader.exec_module(mod)
        k = Kernel(mod.kernel, tuple(mod.STATE_ROWS), tuple(mod.PARAM_ROWS), int(mod.N_WORK), path)
    except Exception as e:  # e.g. another numba that cannot load it: say where
        sys.modules.pop(name, None)
        raise NotCompilable(f"cannot load the compiled kernel {path} ({type(e).__name__}: {e}); "
                            "delete it to rebuild") from None
    _KERNELS[key] = k
    return k


def _memory_kernel(key, plant, controller, delay, noisy, shared_setpoint) -> Kernel:
    """Trace and compile without the disk cache (numba's ``cache=False``): nothing is read from or written to disk."""
    src = _trace(key, plant, controller, delay, noisy, shared_setpoint).replace("cache=True", "cache=False")
    name = f"klcontrol_kernel_mem_{abs(hash(key)):x}"
    mod = types.ModuleType(name)
    mod.__file__ = f"<{name}>"
    sys.modules[name] = mod
    try:
        exec(compile(src, f"<{name}>", "exec"), mod.__dict__)
        return Kernel(mod.kernel, tuple(mod.STATE_ROWS), tuple(mod.PARAM_ROWS), int(mod.N_WORK), None)
    except Exception as e:
        sys.modules.pop(name, None)
        raise NotCompilable(f"the loop's kernel did not compile ({type(e).__name__}: {e})") from None


def run_kernel(kernel: Kernel, t0: int, t1: int, S, N, P, C, Z, sd, rel, W, RB, RY, RK, LAST):
    """Run updates ``t0 … t1−1``, advancing the state ``S`` in place (see :class:`Kernel`)."""
    kernel.fn(t0, t1, S, N, P, C, Z, float(sd), float(rel), W, RB, RY, RK, LAST)


def empty_rows(n: int, dtype=np.float64):
    """A placeholder for an output the kernel does not write (numba needs an array of the right rank)."""
    return np.empty((0, n), dtype)
