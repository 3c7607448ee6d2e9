"""Fast, vectorised stability verdicts from the generated polynomial code.

:func:`is_stable_first_order` runs the Routh–Hurwitz test on the bilinear-mapped
characteristic polynomial; :func:`spectral_radius_first_order` computes the roots (closed
form for degree ≤ 3, batched companion eigenvalues above) of the polynomial in
``z = λ − 1``, where the slow loop's roots near λ = 1 keep their accuracy.
Both broadcast over NumPy arrays and never import sympy for the shipped
configurations (``T = 1 … 8``).  Maps of :data:`~klcontrol.analysis.stability.kernels.MIN_POINTS`
points or more run the same tests compiled, on every core
(:mod:`klcontrol.analysis.stability.kernels`, when numba is installed); the NumPy code here is their reference.
"""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.stability import kernels as _kernels
from klcontrol.analysis.stability.codegen import coefficient_functions
from klcontrol.analysis.stability.config import check_config

__all__ = ["bilinear_coeffs", "shifted_coeffs", "is_stable_first_order", "eigenvalues_first_order",
           "spectral_radius_first_order"]


def _finite(v) -> bool:
    """``np.all(np.isfinite(v))``; on every core for a large map (a single-threaded scan of 10⁷ gains cost a
    fifth of the compiled map's time)."""
    if v.size >= _kernels.MIN_POINTS and _kernels.available():
        return _kernels.all_finite(v)
    return bool(np.all(np.isfinite(v)))


def _params(kp, ki, a, gprime):
    arrs = [np.asarray(v, dtype=float) for v in (kp, ki, a, gprime)]
    for name, v in zip(("kp", "ki", "a", "gprime"), arrs):
        if not _finite(v):
            raise ValueError(f"{name} must be finite, got {v if v.ndim == 0 else 'an array with NaN/inf'}")
    if np.any(arrs[2] <= 0):
        raise ValueError("a must be > 0 (the plant rate)")
    try:
        shape = np.broadcast_shapes(*(v.shape for v in arrs))
    except ValueError:
        raise ValueError(f"kp, ki, a, gprime do not broadcast: shapes {[v.shape for v in arrs]}") from None
    return arrs, shape


def _coeffs(which, kp, ki, a, gprime, window, delay, controller):
    window, delay, controller = check_config(window, delay, controller)
    (kp, ki, a, gp), shape = _params(kp, ki, a, gprime)
    w, zf = coefficient_functions(controller, window, delay)[:2]
    with np.errstate(over="ignore", invalid="ignore"):
        cs = (w if which == "w" else zf)(kp, ki, a, gp)
    return [np.broadcast_to(np.asarray(c, dtype=float), shape) for c in cs], shape


def bilinear_coeffs(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Coefficients of the bilinear-mapped polynomial ``q(w)``, highest power first.

    Returns
    -------
    list of ndarray
        Each of the broadcast shape of the parameters.
    """
    return _coeffs("w", kp, ki, a, gprime, window, delay, controller)[0]


def shifted_coeffs(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Coefficients of ``p(1 + z)`` (``z = λ − 1``), highest power first."""
    return _coeffs("z", kp, ki, a, gprime, window, delay, controller)[0]


_CHUNK = 16384  # points per block: the temporaries of one block stay in cache


def _blocks(shape):
    """Slices of the flattened broadcast shape, ``_CHUNK`` points each."""
    n = int(np.prod(shape, dtype=np.int64))
    return [slice(i, min(i + _CHUNK, n)) for i in range(0, max(n, 1), _CHUNK)]


def _flat_params(kp, ki, a, gprime):
    (kp, ki, a, gp), shape = _params(kp, ki, a, gprime)
    # Scalars stay scalars (the generated code then folds them); arrays are
    # broadcast and flattened once so blocks can be sliced.
    flat = [v if v.ndim == 0 else np.broadcast_to(v, shape).reshape(-1) for v in (kp, ki, a, gp)]
    return flat, shape


def _block_coeffs(f, flat, sl, n):
    args = [v if v.ndim == 0 else v[sl] for v in flat]
    with np.errstate(over="ignore", invalid="ignore"):
        cs = f(*args)
    m = sl.stop - sl.start if isinstance(sl, slice) else len(sl)  # a block, or the points a kernel left
    return [np.broadcast_to(np.asarray(c, dtype=float), (m,)) for c in cs]


def _routh_ok(c):
    """All first-column Routh entries > 0 (one division per row).

    The running minimum of the column is kept (NaN, from a zero pivot,
    propagates and reads as "not stable", as it must).
    """
    r0, r1 = list(c[0::2]), list(c[1::2])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        low = np.array(r0[0], dtype=float, copy=True)
        while r1:
            np.minimum(low, r1[0], out=low)
            m = r0[0] / r1[0]
            nxt = [r0[k + 1] - m * r1[k + 1] if k + 1 < len(r1) else r0[k + 1] for k in range(len(r0) - 1)]
            r0, r1 = r1, nxt
    return low > 0


def _schur_inside(c, radius):
    """Whether all roots of ``Σ c_k λ^(m−k)`` lie strictly inside ``|λ| < radius`` (Schur–Cohn–Jury).

    Coefficient arithmetic only; each step keeps the leading coefficient 1. The coefficients are one array
    ``(m + 1, points…)``, so that a step is a few array operations whatever the degree (a window of 400 has
    m ≈ 400: a list of coefficient arrays cost m² small operations per call).
    """
    m = len(c) - 1
    radius = np.asarray(radius, dtype=float)
    # f(radius·μ): the coefficient of μ^j is c_(m−j)·radius^j
    scaled = [np.asarray(c[k], dtype=float) * radius ** (m - k) for k in range(m + 1)]
    p = np.stack(np.broadcast_arrays(*scaled))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = 1.0 / p[0]
        p = p * inv
        ok = np.isfinite(inv)
        while len(p) > 1:
            r = p[-1]
            ok &= np.abs(r) < 1
            # b_k = a_k − r·a_(n−k), k < n (lead 1), then renormalise by b_0 = 1 − r² > 0 where ok
            b = p[:-1] - r * p[:0:-1]
            p = b * (1.0 / b[0])
    return ok


def _companion_roots(ql, idx):
    """Roots of the λ-polynomials ``ql`` (highest first) at the points ``idx``; shape ``(len(idx), m)``."""
    m = len(ql) - 1
    comp = np.zeros((idx.size, m, m))
    for k in range(m):
        comp[:, 0, k] = -ql[k + 1][idx] / ql[0][idx]
    comp[:, np.arange(1, m), np.arange(m - 1)] = 1.0
    with np.errstate(invalid="ignore"):
        return np.linalg.eigvals(comp)


def _dominant_radius(cs, lcs, iters=5, roots=False):
    """Spectral radius from the polynomial in z = λ − 1, without all the roots.

    The slow KL loop's dominant roots are the two nearest z = 0.  They start
    from the trailing quadratic of p(z) (coefficients ``cs``), are polished by
    Newton's method on the full polynomial (float64, quadratic convergence),
    and are divided out of p(λ) (coefficients ``lcs``); a Schur–Cohn test then
    checks that every other root lies inside the circle they define.  Where a check fails, the remaining roots are computed
    from the companion matrix of the deflated λ-polynomial.  Returns ρ and a
    mask of the points left for the caller's general root finder (Newton did
    not converge).
    """
    n = len(cs) - 1
    c = [np.asarray(v, dtype=float) for v in cs]
    c2, c1, c0 = c[n - 2], c[n - 1], c[n]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        disc = np.sqrt((c1 * c1 - 4 * c2 * c0).astype(complex))
        s = np.where(np.real(np.conj(c1) * disc) >= 0, 1.0, -1.0)
        q = -0.5 * (c1 + s * disc)
        r = np.stack([c0 / q, q / c2])  # the small root first (citardauq form)
        r = np.where(np.isfinite(r), r, 0.0)
        for _ in range(iters):
            f, df = c[0] + 0j, 0j
            for k in range(1, n + 1):
                df = df * r + f
                f = f * r + c[k]
            step = f / df
            r = r - step
        # converged: the last step is at rounding level (quadratic convergence)
        step = np.abs(step)
        bad = ~np.all(np.isfinite(step) & (step <= 1e-12 * (1 + np.abs(r))), axis=0)
        # both Newton runs must have found distinct roots, a conjugate pair or two reals
        r1, r2 = r[0], r[1]
        bad |= np.abs(r1 - r2) <= 1e-8 * (1 + np.abs(r1))
        bad |= (np.abs(r1.imag) > 0) & (np.abs(r1 - np.conj(r2)) > 1e-8 * (1 + np.abs(r1)))
        # Deflate in λ (where the other roots are well conditioned for long
        # windows): divide p(λ) by λ² − σλ + π, the pair's factor, from the
        # constant term up (backward deflation is stable for the largest roots).
        l1, l2 = 1 + r1, 1 + r2
        sig, pi = np.real(l1 + l2), np.real(l1 * l2)
        rho = np.maximum(np.abs(l1), np.abs(l2))
        if n - 2 < 1:
            return (np.stack([l1, l2], axis=1) if roots else rho), bad
        rev = [np.asarray(v, dtype=float) for v in lcs[::-1]]  # ascending powers of λ
        dq = [rev[0] / pi]
        dq.append((rev[1] + sig * dq[0]) / pi)
        for k in range(2, n - 1):
            dq.append((rev[k] + sig * dq[k - 1] - dq[k - 2]) / pi)
        ql = dq[::-1]  # the deflated polynomial in λ, degree n − 2, highest first
    if roots:  # every root: the pair and the deflated polynomial's companion eigenvalues
        rest = np.zeros((len(rho), n - 2), dtype=complex)
        good = np.flatnonzero(~bad)
        if good.size:
            rest[good] = _companion_roots(ql, good)
        return np.concatenate([l1[:, None], l2[:, None], rest], axis=1), bad
    inside = _schur_inside(ql, rho) & ~bad
    rest = np.flatnonzero(~inside & ~bad)
    if rest.size:
        # Remaining roots outside ρ (or a marginal test): their companion eigenvalues in λ.
        rho[rest] = np.maximum(rho[rest], np.max(np.abs(_companion_roots(ql, rest)), axis=-1))
    return rho, bad


def is_stable_first_order(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Whether the linearised loop is asymptotically stable (all |λ| < 1).

    Exact Routh–Hurwitz test of the bilinear-mapped characteristic polynomial,
    evaluated from code generated from the symbolic derivation.

    Parameters
    ----------
    kp, ki : float or array
        Gains (positive ``ki`` is negative feedback).
    a : float or array
        Plant rate, > 0.
    gprime : float or array
        ``g′(β*)``, slope of the steady-state KL in β (negative for a VAE).
    window : int
        Moving-average window ``T``.
    delay : {0, 1}
        0: β(t+1) from y(t) (as trained); 1: from y(t−1) (paper Eq. 15).
    controller : {"incremental", "incremental-official", "positional", "positional-official"}
        All give the same verdict inside the clamps.

    Returns
    -------
    bool or ndarray of bool
        Broadcast shape of the parameters (a Python ``bool`` for scalars).
    """
    window, delay, controller = check_config(window, delay, controller)
    flat, shape = _flat_params(kp, ki, a, gprime)
    fns = coefficient_functions(controller, window, delay)
    w = fns[0]
    n = len(w(1.0, 1.0, 1.0, 1.0))
    npts = int(np.prod(shape, dtype=np.int64))
    out = np.empty(npts, dtype=bool)
    if _compiled(npts):
        for sl, (kpb, kib), aff in _affine_blocks(fns[4], flat, npts):
            _kernels.stable_map(aff[0:3], kpb, kib, sl.stop - sl.start, out=out[sl])
    else:
        for sl in _blocks(shape):
            out[sl] = _routh_ok(_block_coeffs(w, flat, sl, n))
    out = out.reshape(shape)
    return bool(out) if out.ndim == 0 else out


def _compiled(npts):
    """Whether a map of ``npts`` points runs in the compiled kernels (numba installed, the map large).

    Only the size decides, never what ran before in the process: at a marginal point (a root on the unit circle)
    the two paths may round differently, and a verdict must not depend on the order of calls.
    """
    return _kernels.available() and npts >= _kernels.MIN_POINTS


_AFFINE_BLOCK = 1 << 16  # points per block when the plant varies per point (its coefficient rows are per point)


def _affine_blocks(af, flat, npts):
    """``(slice, (kp, ki), af(a, gp))`` over the map: one block when ``a`` and ``g′`` are scalars."""
    kp, ki, a, gp = flat
    if a.ndim == 0 and gp.ndim == 0:
        yield slice(0, npts), (kp, ki), af(float(a), float(gp))
        return
    for i in range(0, max(npts, 1), _AFFINE_BLOCK):
        sl = slice(i, min(i + _AFFINE_BLOCK, npts))
        yield sl, tuple(v if v.ndim == 0 else v[sl] for v in (kp, ki)), af(*(v if v.ndim == 0 else v[sl]
                                                                            for v in (a, gp)))


def _quadratic_roots(c2, c1, c0):
    # Citardauq form: no cancellation between -b and the square root.
    disc = np.sqrt((c1 * c1 - 4 * c2 * c0).astype(complex))
    s = np.where(np.real(np.conj(c1) * disc) >= 0, 1.0, -1.0)
    q = -0.5 * (c1 + s * disc)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = q / c2
        r2 = np.where(q != 0, c0 / q, 0.0)
    return np.stack([r1, r2], axis=-1)


def _cubic_roots(c3, c2, c1, c0):
    b, c, d = c2 / c3, c1 / c3, c0 / c3
    p = c - b * b / 3
    q = 2 * b**3 / 27 - b * c / 3 + d
    disc = np.sqrt((q * q / 4 + p**3 / 27).astype(complex))
    # Take the larger of −q/2 ± √Δ so the cube root is well conditioned.
    s = np.where(np.real(np.conj(-q / 2) * disc) >= 0, 1.0, -1.0)
    u3 = -q / 2 + s * disc
    u = u3 ** (1 / 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(u != 0, -p / (3 * u), 0.0)
    om = complex(-0.5, np.sqrt(3) / 2)
    t = np.stack([u + v, om * u + om.conjugate() * v, om.conjugate() * u + om * v], axis=-1)
    r = t - (b / 3)[..., None]
    # One Newton step on the original cubic removes Cardano's rounding for simple roots.
    bb, cc, dd = b[..., None], c[..., None], d[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = ((r + bb) * r + cc) * r + dd
        df = (3 * r + 2 * bb) * r + cc
        step = np.where(df != 0, f / df, 0.0)
    step = np.where(np.isfinite(step) & (np.abs(step) < 1e-3 * (1 + np.abs(r))), step, 0.0)
    return r - step


def _roots_z(cs):
    """Roots in z of Σ cs[k] z^(n−k), batched; shape ``(..., n)``."""
    n = len(cs) - 1
    if n == 1:
        return (-cs[1] / cs[0])[..., None].astype(complex)
    if n == 2:
        return _quadratic_roots(*cs)
    if n == 3:
        return _cubic_roots(*cs)
    shape = cs[0].shape
    comp = np.zeros(shape + (n, n))
    for k in range(n):
        comp[..., 0, k] = -cs[k + 1] / cs[0]
    comp[..., np.arange(1, n), np.arange(n - 1)] = 1.0
    flat = comp.reshape(-1, n, n)
    out = np.empty((flat.shape[0], n), dtype=complex)
    chunk = 65536  # bounded temporary memory for large maps
    for i in range(0, flat.shape[0], chunk):
        out[i:i + chunk] = np.linalg.eigvals(flat[i:i + chunk])
    return out.reshape(shape + (n,))


def eigenvalues_first_order(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Nonzero eigenvalues of the linearised loop (roots of the characteristic polynomial).

    The two roots nearest λ = 1 come from Newton's method in ``z = λ − 1``, the
    others from the companion matrix of the deflated polynomial in λ (see
    :func:`spectral_radius_first_order`); where Newton does not settle, all roots from the
    companion matrix in ``z``.  First two entries: that pair.

    Returns
    -------
    ndarray of complex, shape ``broadcast + (n,)``
    """
    window, delay, controller = check_config(window, delay, controller)
    flat, shape = _flat_params(kp, ki, a, gprime)
    fns = coefficient_functions(controller, window, delay)
    zf, lf = fns[1], fns[3]
    n = len(zf(1.0, 1.0, 1.0, 1.0)) - 1
    out = np.empty((int(np.prod(shape, dtype=np.int64)), n), dtype=complex)
    for sl in _blocks(shape):
        cs = _block_coeffs(zf, flat, sl, n)
        if n <= 2:
            out[sl] = 1.0 + _roots_z(cs)
            continue
        lam, bad = _dominant_radius(cs, _block_coeffs(lf, flat, sl, n), roots=True)
        if bad.any():
            idx = np.flatnonzero(bad)
            lam[idx] = 1.0 + _roots_z([c[idx] for c in cs])
        out[sl] = lam
    return out.reshape(shape + (n,))


def spectral_radius_first_order(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Largest eigenvalue modulus of the linearised loop (from the roots, not a bound).

    Parameters are those of :func:`is_stable_first_order`.

    Returns
    -------
    float or ndarray
        Accurate to about 1e-9 away from multiple roots.

    Notes
    -----
    Not all roots are computed: the two nearest ``λ = 1`` (the slow loop's)
    are found by Newton's method and divided out, and a Schur–Cohn test
    confirms that the others lie inside their circle; only where it does not
    are the remaining roots computed (companion eigenvalues).
    """
    window, delay, controller = check_config(window, delay, controller)
    flat, shape = _flat_params(kp, ki, a, gprime)
    fns = coefficient_functions(controller, window, delay)
    zf, lf = fns[1], fns[3]
    n = len(zf(1.0, 1.0, 1.0, 1.0)) - 1
    npts = int(np.prod(shape, dtype=np.int64))
    out = np.empty(npts)
    if _compiled(npts):
        for sl, (kpb, kib), aff in _affine_blocks(fns[4], flat, npts):
            _, bad = _kernels.radius_map(aff[3:6], aff[6:9], kpb, kib, sl.stop - sl.start, out=out[sl])
            if bad.any():  # Newton did not settle: every root, from the companion matrix in z
                idx = sl.start + np.flatnonzero(bad)
                cs = _block_coeffs(zf, flat, idx, n)
                out[idx] = np.max(np.abs(1.0 + _roots_z(cs)), axis=-1)
        out = out.reshape(shape)
        return float(out) if out.ndim == 0 else out
    for sl in _blocks(shape):
        cs = _block_coeffs(zf, flat, sl, n)
        if n <= 2:
            out[sl] = np.max(np.abs(1.0 + _roots_z(cs)), axis=-1)
            continue
        rho, bad = _dominant_radius(cs, _block_coeffs(lf, flat, sl, n))
        if bad.any():  # Newton did not settle on the two roots nearest z = 0: all roots
            idx = np.flatnonzero(bad)
            rho[idx] = np.max(np.abs(1.0 + _roots_z([c[idx] for c in cs])), axis=-1)
        out[sl] = rho
    out = out.reshape(shape)
    return float(out) if out.ndim == 0 else out
