"""MIG estimators that use the whole Gaussian posterior q(z|x) = N(μ(x), σ²(x)), not just μ.

Two metrics share one primitive, the *soft-binned* joint distribution of a quantised latent and a
factor: each image spreads its posterior mass over the bins of latent k by Gaussian CDF
differences, and the masses are summed per factor value. Its plug-in mutual information is

    I(b_k; v) = Σ_{v,b} p(v, b) log p(v, b) / (p(v) p(b)),   p(v, b) = (1/N) Σ_{n: v_n = v} P(b | x_n).

- ``rmig``: Do & Tran (ICLR 2020) robust MIG, 200 fixed bins on [-4, 4] (their quantised estimator by
  default, the exact soft-binned one with ``estimator="cdf"``).
- ``mig_tcvae``: Chen et al. (2018) β-TCVAE MIG, reported by ControlVAE and DynamicVAE. Its
  estimand is the continuous I(z_k; v) = H(z_k) − H(z_k | v) of the aggregate posterior
  q(z_k) = (1/N) Σ_n q(z_k | x_n). ``estimator="binned"`` (default) evaluates it with bins much
  narrower than the posteriors (the −log(width) terms of the two differential entropies cancel;
  the remaining discretisation error is second order in width/σ); ``estimator="sampled"`` is Chen et
  al.'s Monte Carlo estimator (one sampled z per image shared by every entropy, exact log-sum-exp
  over every image of the subset).

Posterior mass is only evaluated on the bin edges within ±``tail``·σ of each mean, with samples
grouped by how many edges that is, so the cost is O(N · σ/width) and memory is bounded by chunks.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import sparse

from klcontrol.vae_plant.metrics.inputs import check_codes, check_factors, check_logvars, encode_factor

__all__ = ["rmig", "mig_tcvae", "soft_binned_mutual_info", "sampled_mutual_info"]

_CHUNK_ELEMENTS = 1 << 22


def _encode_all(fac: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    encoded = [encode_factor(fac[:, k]) for k in range(fac.shape[1])]
    return [c for c, _ in encoded], [v for _, v in encoded]


def _soft_joint(mu: np.ndarray, sigma: np.ndarray, first: float, width: float, n_edges: int,
                classes, n_values, tail: float):
    """Joint posterior masses of one latent's bins and each factor's values.

    Interior edges are ``first + i·width``, i < ``n_edges``: n_edges + 1 bins, the outer two open.
    Returns one array (V_f, n_edges + 1) per factor whose entries sum to N.
    """
    n_bins = n_edges + 1
    lo = np.clip(np.ceil((mu - tail * sigma - first) / width), 0, n_edges).astype(np.int64)
    hi = np.clip(np.ceil((mu + tail * sigma - first) / width), 0, n_edges).astype(np.int64)
    # Band lengths rounded up to a multiple of 16: few groups, little wasted work. A band may run
    # past the last edge; those virtual bins are clipped onto the open last bin, where their mass belongs.
    band = np.minimum(((hi - lo) // 16 + 1) * 16, n_edges)
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    # u_ij = (edge_{lo_i + j} − μ_i)/(σ_i √2) = a_i + j·b_i: no gather of edges needed.
    a_all = torch.from_numpy((first + lo * width - mu) * scale)
    b_all = torch.from_numpy(width * scale)
    joints = [np.zeros(v * n_bins) for v in n_values]
    for band_edges in np.unique(band):
        members = np.flatnonzero(band == band_edges)
        step = max(1, _CHUNK_ELEMENTS // (int(band_edges) + 1))
        offsets = np.arange(band_edges + 1)
        j = torch.arange(int(band_edges), dtype=torch.float64)
        for start in range(0, members.size, step):
            idx = members[start:start + step]
            it = torch.from_numpy(idx)
            # erf(x/√2) = 2Φ(x) − 1 (erf is ~2x faster than erfc; masses need only absolute accuracy).
            # Columns 0 and last close the band at Φ = 0 and Φ = 1, so the band's first bin also holds
            # the mass below it (≤ Φ(−tail)) and its last bin the mass above.
            cdf2 = torch.empty((idx.size, int(band_edges) + 2), dtype=torch.float64)
            cdf2[:, 0] = -1.0
            cdf2[:, -1] = 1.0
            torch.addcmul(a_all[it, None], b_all[it, None], j[None, :], out=cdf2[:, 1:-1])
            cdf2[:, 1:-1].erf_()
            mass = ((cdf2[:, 1:] - cdf2[:, :-1]) * 0.5).numpy()
            for f, cls in enumerate(classes):
                if n_values[f] < 2:
                    continue
                # Samples sharing (factor value, first bin) have aligned bands: sum them with a sparse
                # one-hot product (much faster than a scatter-add of every element), then scatter the
                # few summed bands into the table.
                key = cls[idx] * n_bins + lo[idx]
                used = np.bincount(key, minlength=n_values[f] * n_bins) > 0
                row = (np.cumsum(used) - 1)[key]
                summed = sparse.csr_matrix((np.ones(idx.size), (row, np.arange(idx.size))),
                                           shape=(int(used.sum()), idx.size)) @ mass
                first = np.flatnonzero(used)
                value, start_bin = np.divmod(first, n_bins)
                flat = value[:, None] * n_bins + np.minimum(start_bin[:, None] + offsets, n_bins - 1)
                joints[f] += np.bincount(flat.reshape(-1), weights=summed.reshape(-1), minlength=joints[f].size)
    return [j.reshape(v, n_bins) for j, v in zip(joints, n_values)]


def _mi_from_joint(joint: np.ndarray) -> float:
    total = joint.sum()
    p = joint / total
    pv = p.sum(axis=1, keepdims=True)
    pb = p.sum(axis=0, keepdims=True)
    # In logs: for denormal masses pv·pb underflows to 0 and p / (pv·pb) would be infinite.
    nz = p > 0
    rows, cols = np.nonzero(nz)
    q = p[nz]
    terms = q * (np.log(q) - np.log(pv[rows, 0]) - np.log(pb[0, cols]))
    return max(float(terms.sum()), 0.0)


def _check_posterior(means, logvars, factors):
    mu = check_codes(means, name="means")
    lv = check_logvars(logvars, mu.shape)
    fac = check_factors(factors, mu.shape[0])
    return mu, np.exp(0.5 * lv), fac


def soft_binned_mutual_info(means, logvars, factors, bins=None, *, resolution: float = 2.0,
                            tail: float = 6.0, max_bins: int = 1 << 16) -> np.ndarray:
    """Mutual information (nats) between each soft-quantised latent and each factor.

    Parameters
    ----------
    means, logvars : array_like, shape (N, d)
        Gaussian posterior parameters (log σ²).
    factors : array_like, shape (N, K)
        Ground-truth factor classes.
    bins : (float, float, int), optional
        ``(low, high, B)``: B equal bins on [low, high] shared by all latents, the two outer ones
        open (they take the posterior mass beyond the range). By default each latent gets its own
        fine grid: width = (1 % quantile of its σ) / ``resolution``, spanning all means ±
        ``tail``·σ, at most ``max_bins`` bins.
    resolution : float
        Bins per posterior standard deviation for the default grid.
    tail : float
        Posterior mass beyond ±tail·σ of the mean (≤ Φ(−tail)) is lumped into the nearest bin.
    max_bins : int
        Upper bound on the default grid size.

    Returns
    -------
    numpy.ndarray, shape (d, K)
    """
    mu, sigma, fac = _check_posterior(means, logvars, factors)
    if resolution <= 0 or tail <= 0 or max_bins < 2:
        raise ValueError("resolution and tail must be positive and max_bins at least 2")
    classes, n_values = _encode_all(fac)
    if bins is not None:
        low, high, count = float(bins[0]), float(bins[1]), int(bins[2])
        if count != bins[2] or count < 2 or not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"bins must be (low, high, count) with finite low < high and count ≥ 2, got {bins}")
    out = np.empty((mu.shape[1], fac.shape[1]))
    for k in range(mu.shape[1]):
        if bins is None:
            low = float(np.min(mu[:, k] - tail * sigma[:, k]))
            high = float(np.max(mu[:, k] + tail * sigma[:, k]))
            width = max(float(np.quantile(sigma[:, k], 0.01)) / resolution, (high - low) / max_bins)
            count = max(2, int(np.ceil((high - low) / width)))
        width = (high - low) / count
        joints = _soft_joint(mu[:, k], sigma[:, k], low + width, width, count - 1, classes, n_values, tail)
        out[k] = [_mi_from_joint(j) if v > 1 else 0.0 for j, v in zip(joints, n_values)]
    return out


def _gap_score(mi: np.ndarray, norm: np.ndarray, per_factor: bool):
    top2 = -np.sort(-mi, axis=0)[:2]
    active = norm > 0
    if not active.any():
        raise ValueError("every factor is constant: the metric is undefined")
    gaps = np.full(mi.shape[1], np.nan)
    gaps[active] = (top2[0, active] - top2[1, active]) / norm[active]
    score = float(np.mean(gaps[active]))
    return (score, gaps) if per_factor else score


def _quantized_joints(mu, sigma, classes, n_values, lo, hi, num_bins, floor=1e-5):
    """Joint (value, bin) masses of one latent with Do & Tran's quantisation (see :func:`rmig`)."""
    edges = np.linspace(lo, hi, num_bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1:] - edges[:-1]
    n = mu.size
    onehots = [sparse.csr_matrix((np.ones(n), (c, np.arange(n))), shape=(v, n)) for c, v in zip(classes, n_values)]
    joints = [np.zeros((v, num_bins)) for v in n_values]
    step = max(1, _CHUNK_ELEMENTS // num_bins)
    for s in range(0, n, step):
        m, sg = mu[s:s + step, None], sigma[s:s + step, None]
        dens = np.exp(-0.5 * ((centers - m) / sg) ** 2) / (sg * math.sqrt(2 * math.pi))
        q = dens * width
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-8)
        hard = dens.max(axis=1) < floor
        if hard.any():
            # A posterior that puts (numerically) no density on any centre counts as its mean's bin.
            b = np.clip(np.searchsorted(edges, m[hard, 0], side="right") - 1, 0, num_bins - 1)
            q[hard] = 0.0
            q[np.flatnonzero(hard), b] = 1.0
        for j, oh in zip(joints, onehots):
            j += oh[:, s:s + step] @ q
    return joints


def rmig(means, logvars, factors, *, num_bins: int = 200, value_range=(-4.0, 4.0), per_factor: bool = False,
         estimator: str = "quantized"):
    """Robust Mutual Information Gap (Do & Tran, ICLR 2020), the metric of DynamicVAE's Tables 1–2.

    Each latent is quantised into ``num_bins`` equal bins over ``value_range`` and each image
    contributes a distribution P(b | x) over the bins, rather than a hard count of its mean.
    RMIG(v_k) = [I(b_i*; v_k) − I(b_j°; v_k)] / H(v_k) for the two most informative latents; the
    score is the mean over non-constant factors.

    Parameters
    ----------
    means, logvars : array_like, shape (N, d)
        Gaussian posterior parameters (log σ²), d ≥ 2.
    factors : array_like, shape (N, K)
        Ground-truth factor classes. DynamicVAE reports shape, scale, orientation, posX, posY.
    num_bins : int
        Number of quantisation bins (≥ 2). Default 200, the value the authors' dSprites driver
        passes (``7b_run_interpretability_metrics_v2.py``; the script's own default is 100).
    value_range : (float, float)
        Range covered by the bins; Do & Tran's default (−4, 4).
    per_factor : bool
        Also return the per-factor values (NaN for a constant factor).
    estimator : {"quantized", "cdf"}
        ``"quantized"`` (default) follows the authors' released quantised estimator: P(b | x) ∝
        N(c_b; μ, σ²)·width at the bin centres c_b, renormalised over the bins (mass beyond the
        range is redistributed), and a posterior with density below 1e-5 at every centre counts as
        a hard assignment of its mean's bin (means outside the range go to the edge bins).
        ``"cdf"`` uses the exact posterior mass Φ((e_{b+1} − μ)/σ) − Φ((e_b − μ)/σ), with the two
        outer bins open; the two agree when σ is much wider than a bin.

    Returns
    -------
    float, or (float, numpy.ndarray of shape (K,))
    """
    lo, hi = (float(v) for v in value_range)
    if int(num_bins) != num_bins or num_bins < 2 or not hi > lo:
        raise ValueError(f"need num_bins ≥ 2 and value_range low < high, got {num_bins}, {value_range}")
    if estimator not in ("quantized", "cdf"):
        raise ValueError(f"estimator must be 'quantized' or 'cdf', got {estimator!r}")
    fac = check_factors(factors, np.shape(means)[0])
    if estimator == "cdf":
        mi = soft_binned_mutual_info(means, logvars, factors, bins=(lo, hi, int(num_bins)))
    else:
        mu, sigma, fac = _check_posterior(means, logvars, factors)
        classes, n_values = _encode_all(fac)
        mi = np.empty((mu.shape[1], fac.shape[1]))
        for k in range(mu.shape[1]):
            joints = _quantized_joints(mu[:, k], sigma[:, k], classes, n_values, lo, hi, int(num_bins))
            mi[k] = [_mi_from_joint(j) if v > 1 else 0.0 for j, v in zip(joints, n_values)]
    norm = np.array([_entropy(encode_factor(fac[:, k])[0]) for k in range(fac.shape[1])])
    return _gap_score(mi, norm, per_factor)


def _entropy(classes: np.ndarray) -> float:
    p = np.bincount(classes) / classes.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _log_mixture(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/M) Σ_m N(z_s; μ_m, σ_m²) per latent: z (S, d), mu/logvar (M, d) → (S, d)."""
    inv_var = torch.exp(-logvar)
    norm = -0.5 * (logvar + math.log(2 * math.pi))
    out = torch.full(z.shape, -math.inf, dtype=z.dtype, device=z.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, z.shape[0] * z.shape[1]))
    for start in range(0, mu.shape[0], rows):
        sl = slice(start, start + rows)
        diff = z[:, None, :] - mu[None, sl, :]
        logp = norm[None, sl, :] - 0.5 * diff * diff * inv_var[None, sl, :]
        out = torch.logaddexp(out, torch.logsumexp(logp, dim=1))
    return out - math.log(mu.shape[0])


def _sampled_entropy(z, mu, logvar, n_samples, generator, chunk):
    """−E log q(z_k) over ``min(n_samples, M)`` of the given samples ``z`` (one per image of the subset)."""
    n = mu.shape[0]
    pick = torch.randperm(n, generator=generator, device="cpu")[:min(n_samples, n)].to(mu.device)
    zs = z[pick]
    total = torch.zeros(mu.shape[1], dtype=mu.dtype, device=mu.device)
    for start in range(0, zs.shape[0], chunk):
        total -= _log_mixture(zs[start:start + chunk], mu, logvar).sum(dim=0)
    return total / zs.shape[0]


def sampled_mutual_info(means, logvars, factors, *, n_samples: int = 10000, seed: int = 0,
                        device: str = "cpu", chunk: int = 64, z=None) -> np.ndarray:
    """Chen et al.'s Monte Carlo estimate of I(z_k; v_f) = H(z_k) − Σ_v p(v) H(z_k | v).

    As Chen et al.'s code (``disentanglement_metrics.py``): one sample z_n ~ q(z|x_n) is drawn
    per image, once, and every entropy — the marginal and each conditional — reuses those
    samples: it takes ``min(n_samples, subset size)`` images of its subset at random and averages
    −log q(z_k) over their samples, q(z_k) being the mixture of *all* posteriors in the subset.
    Sharing the samples makes the estimation errors of H(z_k) and H(z_k | v) cancel to a large
    extent (on latents independent of the factors the estimate is then close to 0). Cost
    O(n_samples · N · d) per factor: meant for modest N, or a GPU via ``device``.

    Parameters
    ----------
    means, logvars : array_like, shape (N, d)
    factors : array_like, shape (N, K)
    n_samples : int
        Samples per entropy (Chen et al.: 10 000).
    seed : int
        Seed of the sampling (results are reproducible on CPU).
    device : str
        Torch device for the log-sum-exp.
    chunk : int
        Samples evaluated at once (memory ∝ chunk · d · 4M elements at most).
    z : array_like, shape (N, d), optional
        The samples to use (one per image); default: drawn from q(z|x) with ``seed``.

    Returns
    -------
    numpy.ndarray, shape (d, K)
    """
    mu_np, sigma, fac = _check_posterior(means, logvars, factors)
    if n_samples < 1 or chunk < 1:
        raise ValueError("n_samples and chunk must be positive")
    gen = torch.Generator().manual_seed(int(seed))
    mu = torch.as_tensor(mu_np, device=device)
    lv = torch.as_tensor(2.0 * np.log(sigma), device=device)
    if z is None:
        eps = torch.randn(mu_np.shape, generator=gen, dtype=mu.dtype, device="cpu").to(device)
        z = mu + torch.as_tensor(sigma, device=device) * eps
    else:
        z_np = np.asarray(z, dtype=np.float64)
        if z_np.shape != mu_np.shape or not np.all(np.isfinite(z_np)):
            raise ValueError(f"z must be finite with the shape of means {mu_np.shape}, got {z_np.shape}")
        z = torch.as_tensor(z_np, device=device)
    marginal = _sampled_entropy(z, mu, lv, n_samples, gen, chunk)
    out = np.empty((mu_np.shape[1], fac.shape[1]))
    for f in range(fac.shape[1]):
        cls, n_values = encode_factor(fac[:, f])
        cond = torch.zeros_like(marginal)
        for v in range(n_values):
            idx = torch.as_tensor(np.flatnonzero(cls == v), device=device)
            cond += _sampled_entropy(z[idx], mu[idx], lv[idx], n_samples, gen, chunk) * (idx.numel() / cls.size)
        out[:, f] = (marginal - cond).cpu().numpy()
    return out


def mig_tcvae(means, logvars, factors, *, estimator: str | None = None, resolution: float = 2.0,
              n_samples: int = 10000, seed: int = 0, device: str = "cpu", per_factor: bool = False,
              factor_sizes=None, method: str | None = None):
    """β-TCVAE Mutual Information Gap (Chen et al. 2018), as reported by ControlVAE and DynamicVAE.

    MIG(v_f) = [I(z_i*; v_f) − I(z_j°; v_f)] / log V_f, with the continuous mutual information of
    the aggregate posterior (all images, Gaussian q(z|x)) and V_f the number of values of factor f;
    MI values are clamped at 0 before sorting, as in Chen et al.'s code. The score is the mean
    over non-constant factors. Chen et al. use dSprites' scale, orientation, posX, posY (classes
    columns 2–5): pass those columns to reproduce their protocol.

    Parameters
    ----------
    means, logvars : array_like, shape (N, d)
        Gaussian posterior parameters (log σ²), d ≥ 2.
    factors : array_like, shape (N, K)
        Ground-truth factor classes.
    estimator : {"binned", "sampled"}
        "binned" (default): deterministic, fine soft bins (``resolution`` bins per posterior σ),
        full dSprites in seconds. "sampled": Chen et al.'s Monte Carlo estimator, one sample
        per image shared by every entropy (see ``sampled_mutual_info``; seeded), minutes on a
        CPU for the full dSprites set.
    resolution : float
        Bins per σ for "binned".
    n_samples, seed, device
        Options of "sampled" (see ``sampled_mutual_info``).
    per_factor : bool
        Also return the per-factor values (NaN for a constant factor).
    factor_sizes : sequence of int, optional
        Chen et al.'s normaliser: log of the *declared* size of each factor (dSprites
        ``(6, 40, 32, 32)`` for scale, orientation, posX, posY), whatever values the sample
        holds. Default: log of the number of values present (the same on the full grid).
    method : str, optional
        Former name of ``estimator`` (still accepted).

    Returns
    -------
    float, or (float, numpy.ndarray of shape (K,))
    """
    if estimator is not None and method is not None and estimator != method:
        raise ValueError(f"estimator={estimator!r} and method={method!r} disagree; give one of them")
    estimator = estimator or method or "binned"
    if estimator == "binned":
        mi = soft_binned_mutual_info(means, logvars, factors, resolution=resolution)
    elif estimator == "sampled":
        mi = sampled_mutual_info(means, logvars, factors, n_samples=n_samples, seed=seed, device=device)
    else:
        raise ValueError(f"estimator must be 'binned' or 'sampled', got {estimator!r}")
    fac = check_factors(factors, np.shape(means)[0])
    present = np.array([encode_factor(fac[:, k])[1] for k in range(fac.shape[1])])
    if factor_sizes is None:
        norm = np.log(present)
    else:
        sizes = np.asarray(factor_sizes, dtype=float).reshape(-1)
        if sizes.size != fac.shape[1] or np.any(sizes < present) or not np.all(np.isfinite(sizes)):
            raise ValueError(f"factor_sizes must give, for each of the {fac.shape[1]} factors, a size at least "
                             f"the number of values present {present.tolist()}, got {list(np.ravel(factor_sizes))}")
        norm = np.log(sizes) * (present > 1)  # a constant factor stays excluded
    return _gap_score(np.clip(mi, 0.0, None), norm, per_factor)
