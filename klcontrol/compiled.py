"""Compiled closed-loop kernels: the engine behind ``simulate(..., engine="compiled")``.

The loop is not written again here.  :func:`kernel_for` runs
:func:`klcontrol.loop.loop_step` once with sympy symbols for the plant's
parameters (:meth:`Plant.parameters`), the controller's parameters and state,
the set point and the measurement noise, which gives the update as formulas;
common subexpressions are shared (``sympy.cse``), formulas of the parameters
alone are lifted out of the time loop, and the update is printed as one fused
loop over a block of :data:`BLOCK` loops.  Each block keeps its state,
parameters and lifted formulas in one array at constant offsets (from a
64-byte boundary), which lets LLVM vectorise the whole update (and keeps the
block in cache for the run); a moving average's history is a ring, not
copies; blocks run in parallel.  The
exponentials use :func:`klcontrol._jit_math.exp`, because a libm call stops
the vectorisation.  The summary figures of :func:`klcontrol.loop.summary_step`
are traced the same way into a second kernel of the same file.

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
import os
import sys
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cache import cache_dir, private_dir, untrusted_reason, write_private

__all__ = ["available", "NotCompilable", "Kernel", "structure_key", "kernel_for", "is_cached", "run_kernel",
           "wide_vectors", "BLOCK"]


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
        ``fn(t0, t1, S, P, C, Z, sd, rel, RB, RY, RK, LAST, ACC, BAND)`` runs updates ``t0 … t1−1`` on the
        state ``S`` (rows × loops) in place, over blocks of :data:`BLOCK` loops on every thread numba has.
    summary_fn : numba dispatcher
        The same, also advancing the summary accumulators ``ACC`` (:func:`klcontrol.loop.summary_step`).
    state : tuple of (str, int)
        The loop state rows of ``S``: ``("plant", j)``, ``("ctrl", key)``, ``("filter", j)``, ``("delayed", j)``.
    params : tuple of (str, str)
        The rows of ``P``: ``("plant", name)`` or ``("ctrl", name)``.
    path : Path
        The generated source file.
    """

    fn: object
    summary_fn: object
    state: tuple
    params: tuple
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

#: Loops per block: the state, parameters and scratch of one block of loops stay in the L1/L2 cache for
#: the whole run, and block offsets are constants of the generated code (which LLVM needs to vectorise).
BLOCK = 512
#: Longest shift register kept as a ring (its update unrolled once per phase); longer ones are copied.
_MAX_RING = 16


def _trace(key, plant, controller, delay, noisy, shared_setpoint):
    """The source of the kernel: the update (and the summary figures) traced as sympy formulas, fused."""
    import sympy as sp

    from .backend import _sympy_ops
    from .loop import LoopState, loop_step, measurement_noise, summary_step

    ops = _sympy_ops()
    names = {}  # symbol → local variable name inside the loop over the block's loops

    def sym(code):
        s = sp.Symbol(f"v{len(names)}", real=True)
        names[s] = code
        return s

    prow, pparams, cparams = [], {}, {}
    for name in plant.parameters():
        pparams[name] = sym(f"p{len(prow)}")
        prow.append(("plant", name))
    splant = plant.with_parameters(pparams)
    for name in controller.params:
        cparams[name] = sym(f"p{len(prow)}")
        prow.append(("ctrl", name))

    srow = []

    def state(tag):
        srow.append(tag)
        return sym(f"s{len(srow) - 1}")

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
    c = sym("c")
    if noisy:
        z, sd, rel = sym("z"), sym("sd"), sym("rel")

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
    # The summary figures (klcontrol.loop.summary_step), traced from the same function NumPy runs.
    acc = tuple(sym(f"a{j}") for j in range(4))
    ys = sp.Symbol("y_out", real=True)
    summary = [sp.sympify(v) for v in summary_step(acc, ys, c, sym("band"), sym("tf"), ops)]
    outs = [y, kl] + new
    bad = set().union(*(e.free_symbols for e in outs)) - set(names)
    if bad:
        raise NotCompilable(f"the update depends on values the engine does not know: {sorted(map(str, bad))}")
    # Formulas of the parameters alone (e.g. 1/(1 + a)) are computed once per block, before the first update.
    params_only = {v for v, code in names.items() if code.startswith("p")}
    lifted = []
    outs = _lift(outs, params_only, lifted)
    repl, reduced = sp.cse(outs, symbols=sp.numbered_symbols("w"), optimizations=None)
    printer = _printer(names)
    hoisted = []
    for j, (h, e) in enumerate(lifted):
        printer.names[h] = f"h{j}"
        hoisted.append(printer.doprint(e))
    body = []
    for s, e in repl:
        printer.names[s] = str(s)
        body.append((str(s), printer.doprint(e)))
    codes = [printer.doprint(e) for e in reduced]
    printer.names[ys] = "y"
    sum_code = [printer.doprint(e) for e in summary]
    # A new state row that is an old one (a moving average's history) is a copy: the longest chain of them
    # becomes a ring, so that nothing is copied.
    copy_of = {}
    for j, e in enumerate(reduced[2:]):
        if isinstance(e, sp.Symbol) and names.get(e, "").startswith("s"):
            copy_of[j] = int(names[e][1:])
    ring = _longest_chain(copy_of, len(srow))
    return _source(key, hoisted, body, codes, sum_code, srow, prow, copy_of, ring, shared_setpoint, noisy,
                   beta_row=srow.index(("ctrl", "beta")))


def _lift(exprs, params_only, hoisted):
    """``exprs`` with every formula of the parameters alone replaced by a symbol defined in ``hoisted``.

    Products are regrouped first (``w·a·A/(1 + a)`` → ``w·h`` with ``h = a·A/(1 + a)``), and a sum whose terms
    share a factor (a moving average's ``x/5 + y/5 + …``) keeps it outside: fewer operations per update.
    """
    import sympy as sp

    seen = {}

    def only_params(e):  # a number-valued formula of the parameters (not a condition, not a constant)
        return isinstance(e, sp.Expr) and not e.is_Atom and not e.is_number and e.free_symbols <= params_only

    def name(e):
        if e not in seen:
            h = sp.Symbol(f"hoisted{len(seen)}", real=True)
            seen[e] = h
            hoisted.append((h, e))
            params_only.add(h)
        return seen[e]

    def lift(e):
        if e.is_Atom:
            return e
        if only_params(e):
            return name(e)
        if isinstance(e, sp.Mul):
            fixed = [a for a in e.args if a.free_symbols <= params_only]
            if len(fixed) >= 2 and not all(a.is_Number for a in fixed):
                rest = [lift(a) for a in e.args if a not in fixed]
                return sp.Mul(name(sp.Mul(*fixed)), *rest)
        if isinstance(e, sp.Add):
            groups = {}
            for a in e.args:
                q, r = a.as_coeff_Mul()
                groups.setdefault(q, []).append(r)
            q, terms = max(groups.items(), key=lambda kv: len(kv[1]))
            if len(terms) >= 3 and q.is_Rational and abs(q) != 1:
                rest = [lift(a) for a in e.args if a.as_coeff_Mul()[0] != q]
                inner = sp.Add(*[lift(r) for r in terms])
                return sp.Add(sp.Mul(q, sp.UnevaluatedExpr(inner), evaluate=False), *rest)
        args = [lift(a) for a in e.args]
        try:
            return e.func(*args)
        except (TypeError, ValueError):  # Max/Min of a grouped sum, which sympy cannot compare: as it is
            return e.func(*args, evaluate=False)

    return [lift(e) for e in exprs]


def _longest_chain(copy_of: dict, n: int) -> tuple:
    """The longest chain ``r0 ← computed, r1 ← r0, r2 ← r1, …`` among the state rows (empty if none ≥ 2)."""
    copied_by = {}
    for j, k in copy_of.items():
        copied_by.setdefault(k, []).append(j)
    best = ()
    for r0 in range(n):
        if r0 in copy_of:
            continue
        chain = [r0]
        while len(copied_by.get(chain[-1], ())) == 1 and len(chain) < _MAX_RING:
            nxt = copied_by[chain[-1]][0]
            if nxt in chain:
                break
            chain.append(nxt)
        if len(chain) >= 2 and len(chain) > len(best):
            best = tuple(chain)
    return best


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

        def _print_UnevaluatedExpr(self, expr):
            return f"({self._print(expr.args[0])})"

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


def _source(key, hoisted, body, codes, sum_code, srow, prow, copy_of, ring, shared, noisy, beta_row):
    """One fused loop per phase of the ring over a block of loops; every row of a block at a constant offset."""
    B, ns, npar, nh = BLOCK, len(srow), len(prow), len(hoisted)
    # Rows of a block's scratch X: state, parameters, hoisted formulas, summary, band.
    o_par, o_h = ns, ns + npar
    o_acc = o_h + nh
    o_band = o_acc + 4
    nx = o_band + 1
    L = len(ring)

    def slot(r, ph):  # the X row of logical state row r at ring phase ph
        if r in ring:
            return ring[(ring.index(r) - ph) % L]
        return r

    def step_loop(ph, stats, ind):
        i2 = ind + "    "
        out = [f"{ind}for i in range(nb):"]
        out += [f"{i2}s{r} = X[{slot(r, ph) * B} + i]" for r in range(ns)]
        out += [f"{i2}p{r} = X[{(o_par + r) * B} + i]" for r in range(npar)]
        out += [f"{i2}h{r} = X[{(o_h + r) * B} + i]" for r in range(nh)]
        out.append(f"{i2}c = {'ct' if shared else 'crow[i]'}")
        if noisy:
            out.append(f"{i2}z = zrow[i]")
        out += [f"{i2}{t} = {code}" for t, code in body]
        out += [f"{i2}y = {codes[0]}", f"{i2}kl = {codes[1]}", f"{i2}oy[i] = y"]
        if noisy:
            out.append(f"{i2}ok[i] = kl")
        if stats:
            out += [f"{i2}a{j} = X[{(o_acc + j) * B} + i]" for j in range(4)]
            out.append(f"{i2}band = X[{o_band * B} + i]")
            out += [f"{i2}n{j} = {code}" for j, code in enumerate(sum_code)]
            out += [f"{i2}X[{(o_acc + j) * B} + i] = n{j}" for j in range(4)]
        # New values into temporaries first: a later row's formula may read an earlier row's old value.
        stores = []
        for j in range(ns):
            if j in ring[1:]:
                continue  # the ring's phase moves instead
            code = f"s{copy_of[j]}" if j in copy_of else codes[2 + j]
            out.append(f"{i2}u{j} = {code}")
            stores.append(f"{i2}X[{slot(j, ph + 1) * B} + i] = u{j}")
        return out + stores

    lines = [
        '"""klcontrol compiled loop kernel (generated by klcontrol.compiled; do not edit).',
        "",
        f"Structure: {key!r}",
        '"""',
        "import math",
        "",
        "import numpy as np",
        "from numba import njit, prange",
        "",
        "from klcontrol._jit_math import exp as _exp, sign as _sign",
        "",
        f"STATE_ROWS = {tuple(srow)!r}",
        f"PARAM_ROWS = {tuple(prow)!r}",
        f"RING = {tuple(ring)!r}",
        f"BLOCK = {B}",
        "",
    ]
    for stats in (False, True):
        name = "kernel_summary" if stats else "kernel"
        lines += [
            "",
            # error_model="numpy": a division is not checked for zero (which would stop vectorisation);
            # "contract" lets LLVM fuse a·b + c, the only reassociation the engines' agreement allows.
            '@njit(cache=True, parallel=True, error_model="numpy", fastmath={"contract"})',
            f"def {name}(t0, t1, S, P, C, Z, sd, rel, RB, RY, RK, LAST, ACC, BAND):",
            "    n = S.shape[1]",
            "    rb, ry, rk = RB.shape[0] > 0, RY.shape[0] > 1, RK.shape[0] > 1",
            f"    for blk in prange((n + {B - 1}) // {B}):",
            f"        b0 = blk * {B}",
            f"        nb = min(n, b0 + {B}) - b0",
            # The scratch at a 64-byte boundary (numba aligns arrays to 32 bytes): a 512-bit load or store of a row
            # then never spans two cache lines, which cost 10 % in every other process, depending on the heap.
            f"        Xa = np.empty({nx * B + 8})",
            "        xo = (64 - np.intp(Xa.ctypes.data) % 64) % 64 // 8",
            f"        X = Xa[xo:xo + {nx * B}]",
            "        for i in range(nb):",
        ]
        lines += [f"            X[{r * B} + i] = S[{r}, b0 + i]" for r in range(ns)]
        lines += [f"            X[{(o_par + r) * B} + i] = P[{r}, b0 + i]" for r in range(npar)]
        if stats:
            lines += [f"            X[{(o_acc + j) * B} + i] = ACC[{j}, b0 + i]" for j in range(4)]
            lines.append(f"            X[{o_band * B} + i] = BAND[b0 + i]")
        if hoisted:
            lines.append("        for i in range(nb):")
            lines += [f"            p{r} = X[{(o_par + r) * B} + i]" for r in range(npar)]
            for j, code in enumerate(hoisted):
                lines += [f"            h{j} = {code}", f"            X[{(o_h + j) * B} + i] = h{j}"]
        lines += [
            "        for t in range(t0, t1):",
            "            ct = C[t]" if shared else "            crow = C[t, b0:b0 + nb]",
        ]
        if stats:
            lines.append("            tf = float(t)")
        if noisy:
            lines.append("            zrow = Z[t - t0, b0:b0 + nb]")
        # An output not recorded is a single row (index 0) the kernel overwrites: no branch in the loop.
        lines += [
            "            oy = RY[t if ry else 0, b0:b0 + nb]",
            "            ok = RK[t if rk else 0, b0:b0 + nb]",
            # β(t) is state, not in a ring: copied out in a loop of its own, only when it is recorded.
            "            if rb:",
            "                ob = RB[t, b0:b0 + nb]",
            "                for i in range(nb):",
            f"                    ob[i] = X[{beta_row * B} + i]",
        ]
        if L:
            lines.append(f"            ph = (t - t0) % {L}")
            for ph in range(L):
                lines.append(f"            {'if' if ph == 0 else 'elif'} ph == {ph}:" if ph < L - 1 else
                             "            else:")
                lines += step_loop(ph, stats, " " * 16)
        else:
            lines += step_loop(0, stats, " " * 12)
        lines += [f"        ph = (t1 - t0) % {max(L, 1)}", "        for i in range(nb):"]
        for r in range(ns):
            if r in ring:
                k = ring.index(r)
                lines.append(f"            S[{r}, b0 + i] = X[RING[({k} - ph) % {L}] * {B} + i]")
            else:
                lines.append(f"            S[{r}, b0 + i] = X[{r * B} + i]")
        # The last outputs, for the finiteness check, from where the last update wrote them.
        lines += ["            LAST[0, b0 + i] = RY[t1 - 1 if ry else 0, b0 + i]",
                  "            LAST[1, b0 + i] = RK[t1 - 1 if rk else 0, b0 + i]" if noisy else
                  "            LAST[1, b0 + i] = RY[t1 - 1 if ry else 0, b0 + i]"]
        if stats:
            lines += [f"            ACC[{j}, b0 + i] = X[{(o_acc + j) * B} + i]" for j in range(4)]
    lines.append("")
    return "\n".join(lines)


def wide_vectors() -> bool:
    """Let numba use 512-bit vectors on a CPU with AVX-512 (its default target prefers 256 bits).

    The kernel's loop is throughput-bound arithmetic (two exponentials, a division per loop and update):
    eight lanes instead of four take 1.3× less time on the benchmark loop.  Done only before numba
    compiles anything in this process, and never over a user's own ``NUMBA_CPU_NAME`` or
    ``NUMBA_CPU_FEATURES``; returns whether 512-bit vectors are allowed.  It sets ``NUMBA_CPU_FEATURES`` for
    the process (the user's own numba code then gets 512-bit vectors too, same results): ``KLCONTROL_WIDE_VECTORS=0``
    turns it off.
    """
    if os.environ.get("KLCONTROL_WIDE_VECTORS", "1") == "0":
        return False
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return "-prefer-256-bit" in os.environ.get("NUMBA_CPU_FEATURES", "")
    numba = sys.modules.get("numba")
    if numba is not None and "_toplevel_target_context" in vars(numba.core.registry.cpu_target):
        return False  # numba has compiled already: its target machine is fixed
    try:
        from llvmlite import binding as ll

        features = ll.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return False
    if not features.get("avx512f"):
        return False
    flat = features.flatten() + ",-prefer-256-bit"
    os.environ["NUMBA_CPU_FEATURES"] = flat
    if numba is not None:
        numba.config.CPU_FEATURES = flat
    return True


def kernel_for(plant, controller, delay: int = 0, noisy: bool = False, shared_setpoint: bool = True) -> Kernel:
    """The compiled kernel of this loop structure: from memory, from the disk cache, or traced and compiled.

    Raises
    ------
    NotCompilable
        If numba is missing or the loop does not trace.
    """
    if not available():
        raise NotCompilable("numba is not installed: pip install 'klcontrol[fast]'")
    wide_vectors()
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
        k = Kernel(mod.kernel, mod.kernel_summary, tuple(mod.STATE_ROWS), tuple(mod.PARAM_ROWS), path)
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
        return Kernel(mod.kernel, mod.kernel_summary, tuple(mod.STATE_ROWS), tuple(mod.PARAM_ROWS), None)
    except Exception as e:
        sys.modules.pop(name, None)
        raise NotCompilable(f"the loop's kernel did not compile ({type(e).__name__}: {e})") from None


def run_kernel(kernel: Kernel, t0: int, t1: int, S, P, C, Z, sd, rel, RB, RY, RK, LAST, ACC=None, BAND=None):
    """Run updates ``t0 … t1−1``, advancing the state ``S`` (and the summary ``ACC``, if given) in place.

    See :class:`Kernel`; ``RB`` of no rows is not recorded; ``RY``/``RK`` of one row are scratch the kernel
    overwrites (row 0), which is also right for a recorded run of one step.
    """
    if ACC is None:
        kernel.fn(t0, t1, S, P, C, Z, float(sd), float(rel), RB, RY, RK, LAST, empty_rows(S.shape[1]),
                  np.empty(0))
    else:
        kernel.summary_fn(t0, t1, S, P, C, Z, float(sd), float(rel), RB, RY, RK, LAST, ACC, BAND)


def empty_rows(n: int, dtype=np.float64, rows: int = 0):
    """A placeholder for an output the kernel does not keep (numba needs an array of the right rank)."""
    return np.empty((rows, n), dtype)
