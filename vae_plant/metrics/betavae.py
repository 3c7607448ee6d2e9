"""Higgins et al. (2017) β-VAE disentanglement score, on precomputed codes of the full factor grid.

One sample: pick a factor y, draw ``batch_size`` pairs of images that share factor y (all other
factors independent), and average |μ(x₁) − μ(x₂)| over the pairs. A linear softmax classifier
predicts y from that vector; the score is its held-out accuracy. Codes are looked up by dataset
index (row-major over the factor grid, as in the official dSprites file), so no encoder runs here.

Two recipes for the classifier (``recipe=``):

- ``"standardised"`` (default): multinomial logistic regression, L-BFGS to convergence on the
  standardised features with a weak L2 penalty. Standardising makes the score invariant to a
  per-latent rescaling of the codes; Higgins et al. trained the same model with Adagrad "until
  convergence".
- ``"disentanglement_lib"``: disentanglement_lib's ``compute_beta_vae_sklearn``: raw features and
  ``sklearn.linear_model.LogisticRegression()`` with its defaults (lbfgs, multinomial, L2 with
  C = 1 on the weights, not the intercept; at most 100 iterations, tol 1e-4), reproduced with
  SciPy by :func:`fit_logistic_sklearn` (scikit-learn is not a dependency). scikit-learn < 0.22
  defaulted to liblinear one-vs-rest instead; results made with it are not reproduced.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from klcontrol.vae_plant.metrics.inputs import check_codes

__all__ = ["beta_vae_score", "fit_softmax", "fit_logistic_sklearn", "predict_softmax", "RECIPES"]

#: Classifier recipes of :func:`beta_vae_score`.
RECIPES = ("standardised", "disentanglement_lib")


def _check_grid(codes, factor_sizes):
    z = check_codes(codes, min_latents=1)
    sizes = _sizes(factor_sizes)
    if int(np.prod(sizes)) != z.shape[0]:
        raise ValueError(f"codes has {z.shape[0]} rows but the factor grid {sizes.tolist()} has {int(np.prod(sizes))} points")
    return z, sizes


def _sizes(factor_sizes):
    sizes = np.asarray([int(s) for s in factor_sizes], dtype=np.int64)
    if sizes.size == 0 or np.any(sizes < 1):
        raise ValueError(f"factor_sizes must be positive integers, got {list(factor_sizes)}")
    return sizes


def _pair_indices(sizes, labels, batch_size: int, rng):
    """Dataset indices of ``batch_size`` pairs sharing factor ``labels[i]``: two ``(M, batch_size)`` arrays."""
    strides = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]])
    shape = (labels.size, int(batch_size), sizes.size)
    f1 = rng.integers(0, sizes, size=shape)
    f2 = rng.integers(0, sizes, size=shape)
    keep = np.arange(sizes.size)[None, None, :] == labels[:, None, None]
    f2 = np.where(keep, f1, f2)
    return f1 @ strides, f2 @ strides


def _lazy_codes(encode, indices):
    """Encode each needed dataset index once; a lookup from indices to codes."""
    uniq = np.unique(np.concatenate([i.ravel() for i in indices]))
    z = check_codes(np.asarray(encode(uniq)), min_latents=1)
    if z.shape[0] != uniq.size:
        raise ValueError(f"encode returned {z.shape[0]} codes for {uniq.size} indices")
    return lambda idx: z[np.searchsorted(uniq, idx)]


def fit_softmax(x, y, n_classes: int, l2: float = 1e-3):
    """Multinomial logistic regression by L-BFGS (mean cross-entropy + ``l2``·|W|²/2).

    Parameters
    ----------
    x : numpy.ndarray, shape (M, d)
    y : numpy.ndarray of int, shape (M,)
    n_classes : int
    l2 : float
        Ridge penalty on the weights (not the biases).

    Returns
    -------
    numpy.ndarray, shape (d + 1, n_classes)
        Weights with the bias as the last row.
    """
    m, d = x.shape
    xb = np.hstack([x, np.ones((m, 1))])
    loss = _softmax_loss(xb, np.eye(n_classes)[y], l2, n_classes)
    res = minimize(loss, np.zeros((d + 1) * n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-8})
    return res.x.reshape(d + 1, n_classes)


def _softmax_loss(xb, onehot, l2, n_classes):
    m, d1 = xb.shape

    def loss(w_flat):
        w = w_flat.reshape(d1, n_classes)
        logp = log_softmax(xb @ w, axis=1)
        grad = xb.T @ (np.exp(logp) - onehot) / m
        grad[:-1] += l2 * w[:-1]
        return -np.sum(onehot * logp) / m + 0.5 * l2 * np.sum(w[:-1] ** 2), grad.ravel()

    return loss


def fit_logistic_sklearn(x, y, n_classes: int, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4):
    """``sklearn.linear_model.LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(x, y)``, with SciPy.

    scikit-learn's lbfgs solver (version ≥ 0.22 defaults, multinomial for ≥ 3 classes) minimises
    mean cross-entropy + ``|W|²/(2·C·M)`` (the intercept unpenalised) with SciPy's L-BFGS-B from
    zero, ``maxiter=max_iter``, ``gtol=tol``, ``maxls=50``, ``ftol=64·eps``; this does the same
    on the same parameter layout (scikit-learn's ``(n_classes, d + 1)`` raveled in Fortran order
    is this function's ``(d + 1, n_classes)`` in C order), so the iterates are the same up to
    floating-point summation order (docs/metrics.md gives the measured deviation).

    Parameters
    ----------
    x : numpy.ndarray, shape (M, d)
    y : numpy.ndarray of int, shape (M,)
        Classes ``0 … n_classes − 1``.
    n_classes : int
        At least 3 (two classes use scikit-learn's binary parametrisation, not reproduced).
    C, max_iter, tol
        scikit-learn's parameters.

    Returns
    -------
    numpy.ndarray, shape (d + 1, n_classes)
        Weights with the intercept as the last row (for :func:`predict_softmax`).
    """
    if n_classes < 3:
        raise ValueError("fit_logistic_sklearn reproduces the multinomial case: n_classes must be ≥ 3")
    if not C > 0 or max_iter < 1 or not tol > 0:
        raise ValueError(f"need C > 0, max_iter ≥ 1 and tol > 0, got C={C}, max_iter={max_iter}, tol={tol}")
    x = np.asarray(x, dtype=float)
    m, d = x.shape
    xb = np.hstack([x, np.ones((m, 1))])
    loss = _softmax_loss(xb, np.eye(n_classes)[y], 1.0 / (C * m), n_classes)
    res = minimize(loss, np.zeros((d + 1) * n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter), "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return res.x.reshape(d + 1, n_classes)


def predict_softmax(weights, x) -> np.ndarray:
    """Class predictions of ``fit_softmax`` weights for features ``x`` (M, d)."""
    return np.argmax(x @ weights[:-1] + weights[-1], axis=1)


def beta_vae_score(codes, factor_sizes, *, fixed_factors=None, batch_size: int = 64,
                   num_train: int = 10000, num_eval: int = 5000, seed: int = 0, recipe: str = "standardised") -> float:
    """Higgins et al.'s β-VAE metric: accuracy of a linear classifier of the fixed factor.

    Parameters
    ----------
    codes : array_like, shape (prod(factor_sizes), d), or callable
        Encoder means of every point of the factor grid, row i = dataset index i (dSprites:
        i = classes · [737280, 245760, 40960, 1024, 32, 1]); or ``encode(indices) -> (n, d)``,
        called once with the sorted unique indices the sampled pairs need (cheaper than the
        whole grid when ``(num_train + num_eval)·batch_size`` is small).
    factor_sizes : sequence of int
        Grid shape, e.g. (1, 3, 6, 40, 32, 32) for dSprites.
    fixed_factors : sequence of int, optional
        Factors that can be the fixed one (labels). Default: every factor with more than one
        value (disentanglement_lib). Higgins et al. on dSprites: (2, 3, 4, 5), i.e. scale,
        orientation, posX, posY; shape then varies freely within pairs.
    batch_size : int
        Pairs averaged per sample (L; disentanglement_lib uses 64).
    num_train, num_eval : int
        Training and held-out samples (Higgins et al. evaluate on 5000).
    seed : int
        Seed of the pair sampling.
    recipe : {"standardised", "disentanglement_lib"}
        Classifier (module docstring): standardised features and a converged weakly penalised
        softmax, or disentanglement_lib's raw features and scikit-learn-default logistic
        regression. They differ when latents have very different scales.

    Returns
    -------
    float
        Held-out accuracy in [0, 1]; chance is 1/len(fixed_factors).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if callable(codes):
        sizes = _sizes(factor_sizes)
    else:
        z, sizes = _check_grid(codes, factor_sizes)
    if fixed_factors is None:
        fixed = np.flatnonzero(sizes > 1)
    else:
        fixed = np.asarray(fixed_factors, dtype=np.int64).reshape(-1)
        if fixed.size and (fixed.min() < 0 or fixed.max() >= sizes.size):
            raise ValueError(f"fixed_factors must index the {sizes.size} factors, got {fixed.tolist()}")
    if fixed.size < 2:
        raise ValueError("the β-VAE score needs at least two candidate fixed factors")
    if min(batch_size, num_train, num_eval) < 1:
        raise ValueError("batch_size, num_train and num_eval must be positive")
    if num_train < 2 * fixed.size:
        raise ValueError(f"num_train={num_train} is too few samples for {fixed.size} classes")
    rng = np.random.default_rng(seed)
    y_train = rng.integers(0, fixed.size, size=num_train)
    y_eval = rng.integers(0, fixed.size, size=num_eval)
    pairs_train = _pair_indices(sizes, fixed[y_train], batch_size, rng)
    pairs_eval = _pair_indices(sizes, fixed[y_eval], batch_size, rng)
    look = _lazy_codes(codes, pairs_train + pairs_eval) if callable(codes) else (lambda idx: z[idx])
    x_train = np.abs(look(pairs_train[0]) - look(pairs_train[1])).mean(axis=1)
    x_eval = np.abs(look(pairs_eval[0]) - look(pairs_eval[1])).mean(axis=1)
    if recipe == "disentanglement_lib":
        if fixed.size < 3:
            raise ValueError("the disentanglement_lib recipe needs at least three candidate fixed factors")
        w = fit_logistic_sklearn(x_train, y_train, fixed.size)
        return float(np.mean(predict_softmax(w, x_eval) == y_eval))
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # A latent that never varies carries no information; dividing by 1 leaves it at zero.
    std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    w = fit_softmax((x_train - mean) / std, y_train, fixed.size)
    return float(np.mean(predict_softmax(w, (x_eval - mean) / std) == y_eval))
