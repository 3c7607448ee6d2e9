"""Fast, vectorised stability verdicts from the generated polynomial code.

:func:`is_stable` runs the Routh–Hurwitz test on the bilinear-mapped
characteristic polynomial; :func:`spectral_radius` computes the roots (closed
form for degree ≤ 3, batched companion eigenvalues above) of the polynomial in
``z = λ − 1``, where the slow loop's roots near λ = 1 keep their accuracy.
Both broadcast over NumPy arrays and never import sympy for the shipped
configurations (``T = 1 … 8``).
"""
from __future__ import annotations

import numpy as np

from .stability_codegen import coefficient_functions
from .stability_config import check_config

__all__ = ["bilinear_coeffs", "shifted_coeffs", "routh_first_column", "is_stable", "eigenvalues", "spectral_radius"]


def _params(kp, ki, a, gprime):
    arrs = [np.asarray(v, dtype=float) for v in (kp, ki, a, gprime)]
    for name, v in zip(("kp", "ki", "a", "gprime"), arrs):
        if not np.all(np.isfinite(v)):
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
    w, zf, _ = coefficient_functions(controller, window, delay)
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


def routh_first_column(coeffs):
    """First column of the Routh array of ``Σ c_k w^k`` (coefficients highest first).

    Parameters
    ----------
    coeffs : sequence of arrays (broadcastable)

    Returns
    -------
    list of ndarray
        ``n + 1`` entries; the polynomial is Hurwitz iff all are > 0 (for a
        positive leading coefficient).  Once an entry is 0 the rest are inf/NaN,
        which the ``> 0`` test reads as "not stable", as it must be.
    """
    c = [np.asarray(v, dtype=float) for v in coeffs]
    r0, r1 = c[0::2], c[1::2]
    col = [r0[0]]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        while r1:
            col.append(r1[0])
            nxt = [(r1[0] * r0[k + 1] - r0[0] * (r1[k + 1] if k + 1 < len(r1) else 0.0)) / r1[0]
                   for k in range(len(r0) - 1)]
            r0, r1 = r1, nxt
    return col


def is_stable(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
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
    cs, shape = _coeffs("w", kp, ki, a, gprime, window, delay, controller)
    ok = np.ones(shape, dtype=bool)
    for v in routh_first_column(cs):
        ok &= v > 0
    return bool(ok) if ok.ndim == 0 else ok


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


def eigenvalues(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Nonzero eigenvalues of the linearised loop (roots of the characteristic polynomial).

    Returns
    -------
    ndarray of complex, shape ``broadcast + (n,)``
    """
    cs, _ = _coeffs("z", kp, ki, a, gprime, window, delay, controller)
    return 1.0 + _roots_z(cs)


def spectral_radius(kp, ki, a, gprime, window=1, delay=0, controller="incremental"):
    """Largest eigenvalue modulus of the linearised loop (from the roots, not a bound).

    Parameters are those of :func:`is_stable`.

    Returns
    -------
    float or ndarray
        Accurate to about 1e-9 away from multiple roots.
    """
    lam = eigenvalues(kp, ki, a, gprime, window, delay, controller)
    r = np.max(np.abs(lam), axis=-1)
    return float(r) if r.ndim == 0 else r
