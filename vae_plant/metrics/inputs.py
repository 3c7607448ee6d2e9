"""Validation and small shared helpers for the disentanglement metrics.

Every metric checks its inputs here so that bad shapes, NaNs and too few samples fail with a
``ValueError`` naming the problem instead of a NumPy broadcasting error or a NaN score.
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_codes", "check_factors", "check_logvars", "encode_factor", "factor_grid"]


def check_codes(codes, name: str = "codes", min_latents: int = 2) -> np.ndarray:
    """Return ``codes`` as a finite float64 array of shape (N, d).

    Parameters
    ----------
    codes : array_like
        Latent codes, one row per image.
    name : str
        Name used in error messages.
    min_latents : int
        Smallest accepted d (a gap between the two best latents needs two).

    Returns
    -------
    numpy.ndarray
    """
    arr = np.asarray(codes, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d), got shape {arr.shape}")
    if arr.shape[1] < min_latents:
        raise ValueError(f"{name} needs at least {min_latents} latent columns, got {arr.shape[1]}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_factors(factors, n: int, name: str = "factors") -> np.ndarray:
    """Return ``factors`` as an array of shape (N, K) with N = ``n`` and no NaN.

    A 1-D array is read as a single factor.

    Parameters
    ----------
    factors : array_like
        Ground-truth factor values (classes), one row per image.
    n : int
        Number of rows the codes have.
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
    """
    arr = np.asarray(factors)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, K), got shape {np.shape(factors)}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the codes have {n}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_logvars(logvars, shape: tuple) -> np.ndarray:
    """Return encoder log-variances as a finite float64 array of the codes' shape.

    Parameters
    ----------
    logvars : array_like
        log σ² of the Gaussian posteriors, shape (N, d).
    shape : tuple
        Shape of the matching means.

    Returns
    -------
    numpy.ndarray
    """
    arr = np.asarray(logvars, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"logvars must have the means' shape {tuple(shape)}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("logvars contains NaN or infinite values")
    return arr


def encode_factor(column: np.ndarray) -> tuple[np.ndarray, int]:
    """Map one factor column to classes 0..V-1.

    Parameters
    ----------
    column : numpy.ndarray
        Values of one factor, shape (N,).

    Returns
    -------
    classes : numpy.ndarray of int64
    n_values : int
    """
    col = np.asarray(column).reshape(-1)
    if np.issubdtype(col.dtype, np.integer) and col.size and col.min() >= 0 and col.max() < 4 * col.size + 1024:
        # Small non-negative integers (factor classes, bin labels): an O(N) relabelling instead of a sort.
        used = np.bincount(col) > 0
        relabel = np.cumsum(used) - 1
        return relabel[col].astype(np.int64), int(used.sum())
    values, classes = np.unique(col, return_inverse=True)
    return classes.reshape(-1).astype(np.int64), int(values.size)


def factor_grid(factor_sizes) -> np.ndarray:
    """All factor combinations in row-major order (official dSprites order).

    Row i holds the classes of dataset index i = Σ classes·strides, strides = [737280, 245760,
    40960, 1024, 32, 1] for dSprites' sizes (1, 3, 6, 40, 32, 32).

    Parameters
    ----------
    factor_sizes : sequence of int
        Number of values of each factor.

    Returns
    -------
    numpy.ndarray of int64, shape (prod(factor_sizes), K)
    """
    sizes = [int(s) for s in factor_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"factor_sizes must be positive integers, got {list(factor_sizes)}")
    grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)
