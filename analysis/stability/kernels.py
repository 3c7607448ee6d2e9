"""Compiled (numba) stability maps: one pass per point, every core.

A map asks the same question at many ``(Kp, Ki)``; the characteristic polynomial's coefficients are affine in the
gains (``c = c0 + Kp·ckp + Ki·cki``, printed exactly by :mod:`klcontrol.analysis.stability.codegen` as ``af``), so
the vectors ``c0, ckp, cki`` are computed once per plant and each point costs two multiply-adds per coefficient
and the test itself, in registers and L1, with no temporary arrays:

* :func:`stable_map`: the Routh–Hurwitz test of the bilinear-mapped polynomial, the same test and order of
  operations as :func:`klcontrol.analysis.stability.numeric.is_stable_first_order`'s NumPy path (the first column
  entries, one division per row, stopping at the first that is not positive);
* :func:`radius_map`: the spectral radius as in :func:`~klcontrol.analysis.stability.numeric.spectral_radius_first_order`:
  the two roots nearest λ = 1 by Newton's method in ``z = λ − 1``, divided out of ``p(λ)``, and a Schur–Cohn test
  that the others lie inside their circle; where one does not, the largest modulus of the others is found by
  bisection on that test's radius. Points where Newton does not settle are flagged for the NumPy root finder.
  For coefficients shared by all points and degrees 3 … :data:`UNROLL_MAX`, :func:`_radius_source` prints the same
  operations straight-line for the degree (branch-free, a fixed five Newton steps with converged points frozen),
  which LLVM vectorises across points; the few points it does not settle (a real dominant pair, the bisection,
  Newton not converged) are recomputed by the loop kernel: every point gets the loop kernel's result (bit for
  bit; the Schur–Cohn radius is computed without ``hypot``, which can only matter for a root within an ulp of
  the pair's circle).

Both run ``prange`` over blocks of points (numba's threads: every core unless ``NUMBA_NUM_THREADS`` or
:func:`numba.set_num_threads` says otherwise). numba is optional (the ``fast`` extra): :func:`available` says whether
the kernels can run, and the NumPy paths remain the reference. The kernel source is written once under
``$KLCONTROL_CACHE/kernels`` with numba's machine-code cache beside it, under the trust rules of
:mod:`klcontrol.cache` (otherwise compiled in memory).
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from functools import lru_cache

import numpy as np

from klcontrol.cache import cache_dir, private_dir, untrusted_reason, write_private

__all__ = ["available", "loaded", "MIN_POINTS", "stable_map", "radius_map", "all_finite"]

#: Maps with fewer points use NumPy unless the kernels are already loaded (loading numba costs ~0.3 s).
MIN_POINTS = 1 << 16

_SOURCE = '''

@njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def count_nonfinite(x):
    n = x.shape[0]
    bad = 0
    for b in prange((n + BLOCK - 1) // BLOCK):
        c = 0
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            v = x[i]
            if v - v != 0.0:  # NaN and ±inf; a branch-free count LLVM vectorises
                c += 1
        bad += c
    return bad


@njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def stable_map(c0, ck, ci, kp, ki, out):
    n1 = c0.shape[1]
    npts = out.shape[0]
    per_point = c0.shape[0] > 1
    h0 = (n1 + 1) // 2
    h1 = n1 // 2
    for b in prange((npts + BLOCK - 1) // BLOCK):
        R = np.empty((2, h0 + 1))  # the two rows of the Routh table in use; ia is the upper one
        for i in range(b * BLOCK, min(npts, (b + 1) * BLOCK)):
            r = i if per_point else 0
            x = kp[i]
            y = ki[i]
            for k in range(h0):
                R[0, k] = c0[r, 2 * k] + x * ck[r, 2 * k] + y * ci[r, 2 * k]
            for k in range(h1):
                R[1, k] = c0[r, 2 * k + 1] + x * ck[r, 2 * k + 1] + y * ci[r, 2 * k + 1]
            ok = R[0, 0] > 0
            ia = 0
            la = h0
            lb = h1
            while ok and lb > 0:
                ib = 1 - ia
                p = R[ib, 0]
                if not p > 0:
                    ok = False
                    break
                m = R[ia, 0] / p
                for k in range(la - 1):
                    if k + 1 < lb:
                        R[ia, k] = R[ia, k + 1] - m * R[ib, k + 1]
                    else:
                        R[ia, k] = R[ia, k + 1]
                ia = ib
                t = la - 1
                la = lb
                lb = t
            out[i] = ok


@njit(inline="always")
def _quad(c2, c1, c0):
    disc = np.sqrt(complex(c1 * c1 - 4 * c2 * c0))
    s = 1.0 if c1 * disc.real >= 0 else -1.0
    q = -0.5 * (c1 + s * disc)
    r1 = q / c2
    r2 = c0 / q if q != 0 else 0j
    return r1, r2


@njit(inline="always")
def _newton(c, n1, x, y):
    # Newton's method on sum c[k] z^(n1-1-k) from z = x + iy, complex arithmetic on two floats; returns the root
    # and the squared modulus of the last step (NaN-safe: a NaN step reads as not converged)
    q = np.inf
    for _ in range(5):
        fr = c[0]
        fi = 0.0
        dr = 0.0
        di = 0.0
        for k in range(1, n1):
            t = dr * x - di * y + fr
            di = dr * y + di * x + fi
            dr = t
            t = fr * x - fi * y + c[k]
            fi = fr * y + fi * x
            fr = t
        den = dr * dr + di * di
        sr = (fr * dr + fi * di) / den
        si = (fi * dr - fr * di) / den
        x -= sr
        y -= si
        q = sr * sr + si * si
        if not q > 1e-28 * (1 + x * x + y * y):
            break
    if not q == q:
        q = np.inf
    return x, y, q


@njit(inline="always")
def _inside(q, m, radius, p):
    # Schur-Cohn-Jury: all roots of sum q[k] x^(m-k) strictly inside |x| < radius (q[0..m], p scratch)
    scale = 1.0
    for k in range(m, -1, -1):
        p[k] = q[k] * scale
        scale *= radius
    inv = 1.0 / p[0]
    if not np.isfinite(inv):
        return False
    for k in range(m + 1):
        p[k] *= inv
    ln = m + 1
    while ln > 1:
        r = p[ln - 1]
        if not abs(r) < 1:
            return False
        b0 = 1.0 - r * r
        inv = 1.0 / b0
        # b_k = p_k - r p_(ln-1-k) for k < ln - 1, in place by symmetric pairs, renormalised by b_0 = 1 - r^2
        for k in range((ln + 1) // 2):
            j = ln - 1 - k
            u = p[k]
            v = p[j]
            if j == k:
                p[k] = (u - r * u) * inv
            else:
                p[k] = (u - r * v) * inv
                if j < ln - 1:
                    p[j] = (v - r * u) * inv
        ln -= 1
    return True


@njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def radius_map(z0, zk, zi, l0, lk, li, kp, ki, out, flag):
    n1 = z0.shape[1]
    n = n1 - 1
    npts = out.shape[0]
    per_point = z0.shape[0] > 1
    for b in prange((npts + BLOCK - 1) // BLOCK):
        c = np.empty(n1)
        lam = np.empty(n1)
        dq = np.empty(n1)
        ql = np.empty(n1)
        p = np.empty(n1)
        for i in range(b * BLOCK, min(npts, (b + 1) * BLOCK)):
            r = i if per_point else 0
            x = kp[i]
            y = ki[i]
            for k in range(n1):
                c[k] = z0[r, k] + x * zk[r, k] + y * zi[r, k]
                lam[k] = l0[r, k] + x * lk[r, k] + y * li[r, k]
            flag[i] = False
            if n == 1:
                out[i] = abs(1.0 - c[1] / c[0])
                continue
            if n == 2:
                r1, r2 = _quad(c[0], c[1], c[2])
                out[i] = max(abs(1.0 + r1), abs(1.0 + r2))
                continue
            s1, s2 = _quad(c[n - 2], c[n - 1], c[n])
            # the small root first, as the NumPy path (citardauq form)
            r1 = s2
            r2 = s1
            if not (np.isfinite(r1.real) and np.isfinite(r1.imag)):
                r1 = 0j
            if not (np.isfinite(r2.real) and np.isfinite(r2.imag)):
                r2 = 0j
            # Newton on the full polynomial in z, stopping once a step is at rounding level (quadratic
            # convergence: one more would not move the root); a complex pair is one root and its conjugate.
            x1, y1, q1 = _newton(c, n1, r1.real, r1.imag)
            r1 = complex(x1, y1)
            if y1 != 0 or r2.imag != 0:
                x2, y2, q2 = x1, -y1, q1
            else:
                x2, y2, q2 = _newton(c, n1, r2.real, 0.0)
            r2 = complex(x2, y2)
            # converged: the last step at rounding level; two distinct roots, a conjugate pair or two reals
            bad = not (q1 <= 1e-24 * (1 + abs(r1)) ** 2 and q2 <= 1e-24 * (1 + abs(r2)) ** 2)
            bad |= abs(r1 - r2) <= 1e-8 * (1 + abs(r1))
            bad |= abs(r1.imag) > 0 and abs(r1 - r2.conjugate()) > 1e-8 * (1 + abs(r1))
            if bad:
                flag[i] = True
                out[i] = np.nan
                continue
            e1 = 1.0 + r1
            e2 = 1.0 + r2
            sig = (e1 + e2).real
            pi = (e1 * e2).real
            rho = max(abs(e1), abs(e2))
            # deflate p(lambda) by lambda^2 - sig*lambda + pi from the constant term up
            dq[0] = lam[n] / pi
            dq[1] = (lam[n - 1] + sig * dq[0]) / pi
            for k in range(2, n - 1):
                dq[k] = (lam[n - k] + sig * dq[k - 1] - dq[k - 2]) / pi
            m = n - 2
            for j in range(m + 1):
                ql[j] = dq[m - j]
            if not _inside(ql, m, rho, p):
                # the largest modulus of the other roots, by bisection on the test's radius
                lo = rho
                hi = 0.0
                for k in range(1, m + 1):
                    hi = max(hi, abs(ql[k] / ql[0]))
                hi = (1.0 + hi) * (1 + 1e-12)
                if not (np.isfinite(hi) and _inside(ql, m, hi, p)):
                    flag[i] = True
                    out[i] = np.nan
                    continue
                for _ in range(200):
                    if hi - lo <= 1e-15 * hi:
                        break
                    mid = 0.5 * (lo + hi)
                    if _inside(ql, m, mid, p):
                        hi = mid
                    else:
                        lo = mid
                rho = hi
            out[i] = rho
'''


@lru_cache(maxsize=1)
def available() -> bool:
    """True if numba is installed (the ``fast`` extra)."""
    return importlib.util.find_spec("numba") is not None


_MODS: dict = {}

#: Degrees up to which the verdict and spectral-radius kernels are printed straight-line for their degree (LLVM
#: vectorises them across points); above, one loop kernel serves every degree.
UNROLL_MAX = 24


def loaded() -> bool:
    """Whether the kernels are already loaded in this process (then even small maps use them)."""
    return bool(_MODS)


def _versions() -> str:
    from importlib.metadata import version

    return f"numba {version('numba')} numpy {np.__version__}"


def _routh_source(n: int) -> str:
    """Straight-line Routh–Hurwitz verdict kernel for degree ``n``, coefficients shared by all points.

    The first-column entries of the Routh table in the order of the loop kernel (one division per row); every
    entry is tested (no early exit) so the body is branch-free and vectorises: after the first entry that is not
    positive the verdict is already False, whatever the rest.
    """
    lines = [
        "",
        "@njit(cache=True, parallel=True, error_model='numpy', nogil=True)",
        f"def stable_map_{n}(c0, ck, ci, kp, ki, out):",
        "    npts = out.shape[0]",
    ]
    for k in range(n + 1):
        lines.append(f"    a{k} = c0[{k}]; p{k} = ck[{k}]; q{k} = ci[{k}]")
    lines += [
        "    for b in prange((npts + BLOCK - 1) // BLOCK):",
        "        for i in range(b * BLOCK, min(npts, (b + 1) * BLOCK)):",
        "            x = kp[i]",
        "            y = ki[i]",
    ]
    body = [f"e{k} = a{k} + x * p{k} + y * q{k}" for k in range(n + 1)]
    r0, r1 = [f"e{k}" for k in range(0, n + 1, 2)], [f"e{k}" for k in range(1, n + 1, 2)]
    body.append(f"ok = {r0[0]} > 0")
    j = 0
    while r1:
        body.append(f"ok &= {r1[0]} > 0")
        body.append(f"m{j} = {r0[0]} / {r1[0]}")
        nxt = []
        for k in range(len(r0) - 1):
            if k + 1 < len(r1):
                body.append(f"t{j}_{k} = {r0[k + 1]} - m{j} * {r1[k + 1]}")
                nxt.append(f"t{j}_{k}")
            else:
                nxt.append(r0[k + 1])
        r0, r1 = r1, nxt
        j += 1
    body.append("out[i] = ok")
    lines += ["            " + b for b in body]
    return "\n".join(lines) + "\n"


def _radius_source(n: int, iters: int = 5) -> str:
    """Straight-line spectral-radius kernel for degree ``n ≥ 3``, coefficients shared by all points.

    The operations of :func:`radius_map`'s loop kernel for a complex dominant pair, printed for the degree and
    written without branches so that LLVM vectorises them across points: the trailing quadratic's small root (the
    same complex square root and CPython's complex division, spelt out in reals), the same ``iters`` Newton steps,
    each applied only while the previous one was above rounding level (a converged point keeps its root, exactly
    as the loop's ``break``), the same deflation and the same Schur–Cohn reductions (every one evaluated; the
    verdict is their conjunction). ρ is ``hypot(1 + x, y)`` in a second, scalar pass over the block, as the loop
    kernel's ``abs``; the Schur–Cohn radius is the vectorisable ``sqrt((1 + x)² + y²)`` (the same to an ulp).
    Points it does not settle (a real dominant pair, Newton not converged, another root outside the pair's
    circle: the bisection) are flagged for the loop kernel, which recomputes them from scratch.
    """
    n1 = n + 1
    m = n - 2
    # the body over one block of points, in its own function (numba's parallel passes need not see it)
    L = ["", "@njit(cache=True, error_model='numpy', nogil=True)",
         f"def _radius_block_{n}(z0, zk, zi, l0, lk, li, kp, ki, out, redo, i0, i1):",
         "    ers = np.empty(i1 - i0)",
         "    eis = np.empty(i1 - i0)"]
    for k in range(n1):
        L.append(f"    za{k} = z0[0, {k}]; zp{k} = zk[0, {k}]; zq{k} = zi[0, {k}]")
        L.append(f"    la{k} = l0[0, {k}]; lp{k} = lk[0, {k}]; lq{k} = li[0, {k}]")
    L += ["    for i in range(i0, i1):",
          "        x = kp[i]",
          "        y = ki[i]"]
    B = [f"c{k} = za{k} + x * zp{k} + y * zq{k}" for k in range(n1)]
    B += [f"e{k} = la{k} + x * lp{k} + y * lq{k}" for k in range(n1)]
    c2, c1, c0 = f"c{n - 2}", f"c{n - 1}", f"c{n}"
    # a complex pair (disc < 0): sqrt(complex(disc)) = i w, s = 1, q = (-c1/2, -w/2), the small root c0 / q
    B += [f"dd = {c1} * {c1} - 4 * {c2} * {c0}",
          "cplx = dd < 0",
          "w = np.sqrt(-dd) if cplx else 0.0",
          f"qr = -0.5 * {c1}",
          "qi = -0.5 * w",
          "big = abs(qr) >= abs(qi)",
          "rt = qi / qr if big else qr / qi",
          "den = qr + qi * rt if big else qr * rt + qi",
          f"xr = ({c0} + 0.0 * rt) / den if big else ({c0} * rt + 0.0) / den",
          f"yr = (0.0 - {c0} * rt) / den if big else (0.0 * rt - {c0}) / den",
          "fin = np.isfinite(xr) and np.isfinite(yr) and not (qr == 0 and qi == 0)",
          "x1 = xr if fin else 0.0",
          "y1 = yr if fin else 0.0",
          "q1 = np.inf",
          "act = True"]
    for _ in range(iters):
        B += ["fr = c0", "fi = 0.0", "dr = 0.0", "di = 0.0"]
        for k in range(1, n1):
            B += ["t = dr * x1 - di * y1 + fr", "di = dr * y1 + di * x1 + fi", "dr = t",
                  f"t = fr * x1 - fi * y1 + c{k}", "fi = fr * y1 + fi * x1", "fr = t"]
        B += ["dn = dr * dr + di * di", "sr = (fr * dr + fi * di) / dn", "si = (fi * dr - fr * di) / dn",
              "xn = x1 - sr", "yn = y1 - si", "qn = sr * sr + si * si",
              "x1 = xn if act else x1", "y1 = yn if act else y1", "q1 = qn if act else q1",
              "act = act and qn > 1e-28 * (1 + xn * xn + yn * yn)"]
    # the pair is (x1, ±y1): the loop kernel's checks, deflation and Schur–Cohn test, specialised to it
    B += ["q1 = q1 if q1 == q1 else np.inf",
          "tt = 1 + np.sqrt(x1 * x1 + y1 * y1)",
          "bad = not (q1 <= 1e-24 * (tt * tt)) or abs(2.0 * y1) <= 1e-8 * tt",
          "er = 1.0 + x1",
          "sig = er + er",
          "pi = er * er - y1 * (-y1)",
          "rho = np.sqrt(er * er + y1 * y1)",
          f"d0 = e{n} / pi",
          f"d1 = (e{n - 1} + sig * d0) / pi"]
    B += [f"d{k} = (e{n - k} + sig * d{k - 1} - d{k - 2}) / pi" for k in range(2, n - 1)]
    p = [f"d{m - j}" for j in range(m + 1)]  # the deflated polynomial, highest power first
    B.append("sc = 1.0")
    for k in range(m, -1, -1):
        B.append(f"s{k} = {p[k]} * sc")
        p[k] = f"s{k}"
        if k > 0:
            B.append("sc = sc * rho")
    B += ["iv = 1.0 / s0", "ok = np.isfinite(iv)"]
    cnt = 0

    def fresh(expr):
        nonlocal cnt
        B.append(f"h{cnt} = {expr}")
        cnt += 1
        return f"h{cnt - 1}"

    p = [fresh(f"{v} * iv") for v in p]
    ln, j0 = m + 1, 0
    while ln > 1:
        r, g = f"r{j0}", f"g{j0}"
        B += [f"{r} = {p[ln - 1]}", f"ok = ok and abs({r}) < 1", f"{g} = 1.0 / (1.0 - {r} * {r})"]
        for k in range((ln + 1) // 2):
            j = ln - 1 - k
            u, v = p[k], p[j]
            if j == k:
                p[k] = fresh(f"({u} - {r} * {u}) * {g}")
            else:
                p[k] = fresh(f"({u} - {r} * {v}) * {g}")
                if j < ln - 1:
                    p[j] = fresh(f"({v} - {r} * {u}) * {g}")
        ln, j0 = ln - 1, j0 + 1
    B += ["flagged = bad or not cplx or not ok",
          "redo[i] = flagged",
          "out[i] = np.nan",
          "ers[i - i0] = er",
          "eis[i - i0] = y1"]
    L += ["        " + b for b in B]
    L += ["    for i in range(i0, i1):",
          "        if not redo[i]:",
          "            out[i] = np.hypot(ers[i - i0], eis[i - i0])",
          "",
          "",
          "@njit(cache=True, parallel=True, error_model='numpy', nogil=True)",
          f"def radius_map_{n}(z0, zk, zi, l0, lk, li, kp, ki, out, redo):",
          "    npts = out.shape[0]",
          "    for b in prange((npts + BLOCK - 1) // BLOCK):",
          f"        _radius_block_{n}(z0, zk, zi, l0, lk, li, kp, ki, out, redo, b * BLOCK, min(npts, (b + 1) * BLOCK))"]
    return "\n".join(L) + "\n"


def _module(tag: str, body: str):
    """The kernels of ``body`` (numba source): from this process, numba's disk cache, or compiled."""
    if tag in _MODS:
        return _MODS[tag]
    digest = hashlib.sha256((_versions() + body).encode()).hexdigest()[:24]
    path = cache_dir("kernels") / f"stability_{tag}_{digest}.py"
    trusted = private_dir("kernels") is not None and untrusted_reason(path) is None and \
        untrusted_reason(path.parent / "__pycache__") is None
    mod = None
    if trusted:
        head = f"# sha256 {hashlib.sha256(body.encode()).hexdigest()}"
        try:
            if not path.exists():
                write_private(path, f"{head}\n{body}")  # written once: numba's cache is keyed by its mtime
            # A file changed since klcontrol wrote it is never executed (compiled in memory instead).
            if path.read_text().partition("\n")[0] == head:
                name = f"klcontrol_kernel_{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[name] = mod  # numba's cache finds the module by name
                spec.loader.exec_module(mod)
        except Exception:  # an unwritable cache or a numba that cannot load it: compile in memory
            mod = None
    if mod is None:
        name = f"klcontrol_kernel_stability_{tag}_mem"
        mod = types.ModuleType(name)
        mod.__file__ = f"<{name}>"
        sys.modules[name] = mod
        exec(compile(body.replace("cache=True", "cache=False"), f"<{name}>", "exec"), mod.__dict__)
    _MODS[tag] = mod
    return mod


_HEADER = """
import numpy as np
from numba import njit, prange

BLOCK = 2048
"""


def _rows(vectors, m):
    """``(m or 1, n + 1)`` C-contiguous float64 rows from a tuple of ``n + 1`` scalars or length-``m`` arrays."""
    arrs = [np.asarray(v, dtype=float) for v in vectors]
    if all(v.ndim == 0 for v in arrs):
        return np.array([[float(v) for v in arrs]])
    return np.ascontiguousarray(np.stack([np.broadcast_to(v, (m,)) for v in arrs], axis=1))


def _gains(kp, ki, m):
    return tuple(np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), (m,))) for v in (kp, ki))


def all_finite(x) -> bool:
    """Whether every element of a float64 array is finite, on every core (the check before a large map).

    Parameters
    ----------
    x : ndarray
        Any shape; a non-contiguous or non-float64 array is checked by NumPy instead.
    """
    if x.dtype != np.float64 or not x.flags.c_contiguous:
        return bool(np.all(np.isfinite(x)))
    return _module("loops", _HEADER + _SOURCE).count_nonfinite(x.reshape(-1)) == 0


def stable_map(affine, kp, ki, m, out=None):
    """Routh–Hurwitz verdicts at ``m`` points.

    Parameters
    ----------
    affine : tuple
        ``(c0, ckp, cki)`` of the bilinear-mapped polynomial (highest power first), scalars or length-``m``
        arrays (the first three tuples of the generated ``af``).
    kp, ki : float or ndarray
        Gains, scalars or length-``m`` arrays.
    m : int
        Number of points.
    out : ndarray of bool, optional
        C-contiguous array of ``m`` elements written in place (and returned): a caller's own output, so that a
        large map is not first written into a new array and then copied (10⁷ points: 20 ms of page faults and copy).

    Returns
    -------
    ndarray of bool, shape ``(m,)``
    """
    c0, ck, ci = (_rows(v, m) for v in affine)
    if out is None:
        out = np.empty(m, dtype=np.bool_)
    n = c0.shape[1] - 1
    if c0.shape[0] == 1 and n <= UNROLL_MAX:
        fn = getattr(_module(f"routh{n}", _HEADER + _routh_source(n)), f"stable_map_{n}")
        fn(c0[0], ck[0], ci[0], *_gains(kp, ki, m), out)
    else:
        _module("loops", _HEADER + _SOURCE).stable_map(c0, ck, ci, *_gains(kp, ki, m), out)
    return out


def radius_map(zaffine, laffine, kp, ki, m, out=None):
    """Spectral radii at ``m`` points, and a mask of those left to the NumPy root finder.

    Parameters
    ----------
    zaffine, laffine : tuple
        ``(c0, ckp, cki)`` of the polynomials in ``z = λ − 1`` and in ``λ`` (highest power first).
    kp, ki : float or ndarray
        Gains, scalars or length-``m`` arrays.
    m : int
        Number of points.
    out : ndarray, optional
        C-contiguous float64 array of ``m`` elements to write ρ into (it is returned); a new one by default.

    Returns
    -------
    (ndarray, ndarray of bool)
        ρ (NaN where flagged) and the flags.
    """
    loops = _module("loops", _HEADER + _SOURCE).radius_map
    rows = [_rows(v, m) for v in (*zaffine, *laffine)]
    kp, ki = _gains(kp, ki, m)
    if out is None:
        out = np.empty(m)
    flag = np.empty(m, dtype=np.bool_)
    n = rows[0].shape[1] - 1
    if all(r.shape[0] == 1 for r in rows) and 3 <= n <= UNROLL_MAX:
        # the straight-line kernel, then the loop kernel on the points it left (each point on its own: the
        # result does not depend on the order or company of the points)
        getattr(_module(f"radius{n}", _HEADER + _radius_source(n)), f"radius_map_{n}")(*rows, kp, ki, out, flag)
        idx = np.flatnonzero(flag)
        if idx.size:
            sub_out = np.empty(idx.size)
            sub_flag = np.empty(idx.size, dtype=np.bool_)
            loops(*rows, kp[idx], ki[idx], sub_out, sub_flag)
            out[idx] = sub_out
            flag[idx] = sub_flag
    else:
        loops(*rows, kp, ki, out, flag)
    return out, flag
