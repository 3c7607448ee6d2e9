"""Generated NumPy code for the stability polynomials, shipped and cached on disk.

Deriving the polynomials takes sympy seconds; evaluating them must not.  For
every loop configuration ``(window, delay)`` this module prints the
coefficients of :func:`~klcontrol.analysis.stability.symbolic.bilinear_coefficients` and
:func:`~klcontrol.analysis.stability.symbolic.shifted_coefficients` as plain Python
arithmetic (works on floats and NumPy arrays).

The code is keyed by what it depends on: the window and the delay.  Every
controller kind of :data:`klcontrol.registry.LINEAR_KINDS` linearises to the
same polynomial inside its clamps (``tests/test_stability.py`` proves it for
``T ≤ 8`` and both delays), so the code is derived once, from the first kind,
and :func:`coefficient_functions` maps any linearisable controller to it.
Identical function bodies are printed once and aliased in ``TABLE``.

The code for ``T = 1 … 8`` and both delays ships in
:mod:`klcontrol.analysis.stability._generated`; other windows are generated on first use
and cached under ``$KLCONTROL_CACHE`` (default ``~/.cache/klcontrol``), so only
the first process ever pays for sympy.

Every generated module records :func:`source_hash`: a hash of every input of
the generator, i.e. the source files of the modules the derivation imports and
runs (:data:`GENERATOR_INPUTS`: the klcontrol laws, controllers, filters,
plant, loop, registry, backend and what they import; the symbolic derivation
and its configuration; and this module, whose printer writes the code).  A
mismatch (someone changed a law or the printer) makes the loader ignore stale
code and derive afresh.  The sympy version is deliberately *not* hashed: the
derivation is exact, so another sympy prints the same polynomials (perhaps
with terms in another order); hashing it would make a sympy upgrade silently
invalidate the shipped code for every user, and checking it would import
sympy in processes that only evaluate.

Regenerate the shipped module with ``python -m klcontrol.analysis.stability.codegen``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path

from klcontrol.analysis.stability.config import check_config
from klcontrol.cache import private_dir, untrusted_reason, write_private
from klcontrol.registry import LINEAR_KINDS

__all__ = [
    "SHIPPED_WINDOWS",
    "GENERATOR_INPUTS",
    "source_hash",
    "module_source",
    "coefficient_functions",
    "write_shipped",
]

#: Windows whose code ships in :mod:`klcontrol.analysis.stability._generated`.
SHIPPED_WINDOWS = tuple(range(1, 9))
_SHIPPED = Path(__file__).with_name("_generated.py")

#: Modules the generated code depends on: every klcontrol module a derivation imports
#: (``tests/test_stability.py`` checks this list against ``sys.modules``). Names, not paths, so the hash is
#: the same from a clone, an editable install and a wheel.
GENERATOR_INPUTS = (
    "klcontrol",
    "klcontrol.cache",
    "klcontrol.backend",
    "klcontrol.controllers",
    "klcontrol.filters",
    "klcontrol.laws",
    "klcontrol.loop",
    "klcontrol.papers",
    "klcontrol.plant",
    "klcontrol.registry",
    "klcontrol.setpoints",
    "klcontrol.simulate",
    "klcontrol.analysis",
    "klcontrol.analysis.stability.config",
    "klcontrol.analysis.stability.symbolic",
    "klcontrol.analysis.stability.codegen",
)


@lru_cache(maxsize=None)
def source_hash() -> str:
    """Hash of every input of the generator (:data:`GENERATOR_INPUTS`), sympy excluded (see the module doc)."""
    h = hashlib.sha256()
    for name in GENERATOR_INPUTS:
        h.update(name.encode() + b"\0")
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return h.hexdigest()[:16]


def _name(window, delay):
    return f"T{window}_d{delay}"


def _body(args, exprs, nested=False):
    """Body lines of ``def _(args): return tuple(exprs)`` with common subexpressions shared."""
    import sympy as sp

    flat = [e for group in exprs for e in group] if nested else list(exprs)
    subs, reduced = sp.cse([sp.sympify(e) for e in flat], symbols=sp.numbered_symbols("x"))
    lines = [f"({', '.join(args)}):"]
    for s, e in subs:
        lines.append(f"    {s} = {sp.pycode(e)}")
    body = [sp.pycode(e) for e in reduced]
    if nested:
        out, i = [], 0
        for group in exprs:
            out.append("(" + "".join(f"{body[i + j]}, " for j in range(len(group))) + ")")
            i += len(group)
        body = out
    lines.append("    return (" + "".join(f"{b}, " for b in body) + ")")
    return "\n".join(lines) + "\n"


def _config_bodies(window, delay, progress=None):
    """Bodies ``(w, z, ws, l, af)`` of one configuration (see :func:`module_source`)."""
    import sympy as sp

    from klcontrol.analysis.stability import symbolic as ss

    say = progress or (lambda msg: None)
    controller = LINEAR_KINDS[0]  # every linear kind gives this polynomial (see the module doc)
    say(f"T={window}, delay {delay}: linearising the loop, characteristic polynomial")
    ss.characteristic_polynomial(window, delay, controller)
    say(f"T={window}, delay {delay}: bilinear and shifted coefficients")
    dom, we, ze, le = ss._coefficient_elements(window, delay, controller)
    kp, ki, a, gp = (ss.SYMBOLS[k] for k in ("kp", "ki", "a", "gprime"))
    sym = {kp: sp.Symbol("kp"), ki: sp.Symbol("ki"), a: sp.Symbol("a"), gp: sp.Symbol("gp")}
    gpi = dom.symbols.index(gp)

    def expr(e):
        return ss._tidy(dom, e).xreplace(sym)

    split = []
    for e in we:
        by_gp = _parts(dom, e, (gpi,))
        top = max((k[0] for k in by_gp), default=0)
        split.append(tuple(by_gp.get((j,), dom.zero) for j in range(top + 1)) if top else (e,))
    affine = []
    for es in (we, ze, le):
        parts = [_parts(dom, e, (0, 1)) for e in es]  # by the exponents of (K_p, K_i)
        if any(set(pt) - {(0, 0), (1, 0), (0, 1)} for pt in parts):
            raise RuntimeError("a coefficient is not affine in (Kp, Ki)")
        affine += [tuple(pt.get(m, dom.zero) for pt in parts) for m in ((0, 0), (1, 0), (0, 1))]
    say(f"T={window}, delay {delay}: printing code")
    if len(we) > DIRECT_DEGREE:
        # Long windows: print the polynomials monomial by monomial (common subexpression elimination on
        # hundreds of coefficients costs minutes; the monomials are the shared subexpressions anyway).
        def body(args, items, nested=False):
            return _poly_body(args, items, dom, nested)
    else:
        def body(args, items, nested=False):
            conv = [tuple(expr(e) for e in g) for g in items] if nested else [expr(e) for e in items]
            return _body(args, conv, nested)
    return (
        body(("kp", "ki", "a", "gp"), we),
        body(("kp", "ki", "a", "gp"), ze),
        body(("kp", "ki", "a"), split, nested=True),
        body(("kp", "ki", "a", "gp"), le),
        body(("a", "gp"), affine, nested=True),
    )


#: Above this many coefficients the code is printed monomial by monomial (:func:`_poly_body`), not through
#: sympy's common subexpression elimination.
DIRECT_DEGREE = 24


def _poly_body(args, items, dom, nested=False):
    """Body lines of ``def _(args): return tuple(items)`` for ring elements: each monomial of the parameters
    computed once (``m0 = a*gp``), each coefficient a sum of rational multiples of them (floats, as ``pycode``
    prints ``1/4``)."""
    names = [str(g) for g in dom.symbols]
    printed = dict(zip(names, ("kp", "ki", "a", "gp")))
    lines = [f"({', '.join(args)}):"]
    monos = {}

    def mono(m):
        if m not in monos:
            monos[m] = f"m{len(monos)}"
            factors = [printed[n] + (f"**{e}" if e > 1 else "") for n, e in zip(names, m) if e]
            lines.append(f"    {monos[m]} = {'*'.join(factors)}")
        return monos[m]

    def poly(elem):
        terms = []
        for m, c in sorted(dom.convert(elem).items()):
            c = float(_fraction(c))
            terms.append(repr(c) if not any(m) else f"{c!r}*{mono(m)}")
        return " + ".join(terms) or "0"

    groups = [list(g) for g in items] if nested else [[e] for e in items]
    body = [[poly(e) for e in g] for g in groups]
    if nested:
        out = ["(" + "".join(f"{b}, " for b in g) + ")" for g in body]
    else:
        out = [g[0] for g in body]
    lines.append("    return (" + "".join(f"{b}, " for b in out) + ")")
    return "\n".join(lines) + "\n"


def _fraction(c):
    """A ring coefficient (sympy's ``QQ`` element) as an exact ``fractions.Fraction``."""
    from fractions import Fraction

    return Fraction(int(c.numerator), int(c.denominator))


def _parts(dom, elem, index):
    """``elem`` (a ring element) grouped by the exponents of the generators at ``index``, those removed.

    The affine split ``c0 + kp·ckp + ki·cki`` is what the compiled map kernels
    (:mod:`klcontrol.analysis.stability.kernels`) evaluate: per map, the three vectors are computed once and each
    point costs two multiply-adds per coefficient.
    """
    out = {}
    for mono, c in dom.convert(elem).items():
        key = tuple(mono[i] for i in index)
        rest = tuple(0 if i in index else m for i, m in enumerate(mono))
        out.setdefault(key, {})[rest] = c
    return {k: dom.ring.from_dict(v) for k, v in out.items()}


def module_source(configs, progress=None) -> str:
    """Python source of a module holding the coefficient code of ``configs``.

    Parameters
    ----------
    configs : iterable of (window, delay)
    progress : callable, optional
        Called with a short message at each stage of a derivation.

    Returns
    -------
    str
        Defines ``SOURCE_HASH`` and ``TABLE[(window, delay)] = (w, z, ws, l, af)``:
        ``w(kp, ki, a, gp)``, ``z(kp, ki, a, gp)`` and ``l(kp, ki, a, gp)``
        return the bilinear, shifted (``z = λ − 1``) and plain (``λ``)
        coefficients (highest power first); ``ws(kp, ki, a)`` returns, per
        bilinear coefficient, its coefficients in ascending powers of g′;
        ``af(a, gp)`` returns nine tuples, ``(c0, ckp, cki)`` of ``w``, then of
        ``z``, then of ``l``: each coefficient is ``c0 + kp·ckp + ki·cki``.
        A body shared by several entries is defined once.
    """
    configs = [tuple(c) for c in configs]
    parts = [
        '"""Generated by klcontrol.analysis.stability.codegen from the klcontrol laws; regenerate, do not edit."""\n',
        "# flake8: noqa\n",
        f"SOURCE_HASH = {source_hash()!r}\n\n",
    ]
    defined = {}  # body -> function name
    table = []
    for t, d in configs:
        names = []
        for kind, body in zip(("w", "z", "ws", "l", "af"), _config_bodies(t, d, progress)):
            if body not in defined:
                defined[body] = f"{kind}_{_name(t, d)}"
                parts.append(f"def {defined[body]}{body}")
            names.append(defined[body])
        parts.append("\n")
        table.append(((t, d), names))
    parts.append("TABLE = {\n")
    for (t, d), names in table:
        parts.append(f"    ({t}, {d}): ({', '.join(names)}),\n")
    parts.append("}\n")
    return "".join(parts)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod



@lru_cache(maxsize=None)
def _shipped():
    try:
        from klcontrol.analysis.stability import _generated as mod
    except ImportError:
        return None
    return mod if mod.SOURCE_HASH == source_hash() else None


def coefficient_functions(controller: str, window: int, delay: int, progress=None):
    """``(w, z, ws, l, af)`` coefficient functions of one configuration (see :func:`module_source`).

    ``controller`` is any kind of :data:`~klcontrol.registry.LINEAR_KINDS`;
    they share one linearisation, so the code is looked up by ``(window,
    delay)``: in the shipped module, then the disk cache; derived with sympy
    (and the cache written) only when both miss or are stale.

    Parameters
    ----------
    controller : str
        A linearisable controller kind.
    window, delay : int
        Loop configuration.
    progress : callable, optional
        Called with a short message at each stage when a derivation runs.

    Returns
    -------
    tuple of callables
    """
    window, delay, _ = check_config(window, delay, controller)
    return _functions(window, delay, progress)


@lru_cache(maxsize=None)
def _functions(window: int, delay: int, progress=None):
    key = (window, delay)
    mod = _shipped()
    if mod is not None and key in mod.TABLE:
        return mod.TABLE[key]
    d = private_dir("stability")  # None: a shared or unusable cache (warned about); the code stays in memory
    path = None if d is None else d / f"{_name(*key)}_{source_hash()}.py"
    if path is not None and path.exists() and untrusted_reason(path) is None:
        try:
            return _load(path, f"_klcontrol_stability_{path.stem}").TABLE[key]
        except Exception:  # a truncated or foreign file: regenerate below
            pass
    src = module_source([key], progress)
    if path is not None and untrusted_reason(path) is None:
        try:
            write_private(path, src)  # atomic: concurrent processes never read half a file
            return _load(path, f"_klcontrol_stability_{path.stem}").TABLE[key]
        except OSError:
            pass
    # Our own derivation's source, never read back from disk.
    mod = types.ModuleType("_klcontrol_stability_mem")
    exec(compile(src, "<stability generated>", "exec"), mod.__dict__)
    return mod.TABLE[key]


coefficient_functions.cache_clear = _functions.cache_clear  # tests reset the in-process cache


def write_shipped(path: Path = _SHIPPED) -> Path:
    """(Re)write the shipped module for ``T = 1 … 8`` and both delays."""
    from klcontrol.fileio import write_text

    configs = [(t, d) for t in SHIPPED_WINDOWS for d in (0, 1)]
    write_text(path, module_source(configs))  # atomic: an interrupted regeneration leaves the old module whole
    return path


if __name__ == "__main__":
    print(write_shipped(Path(sys.argv[1]) if len(sys.argv) > 1 else _SHIPPED))
