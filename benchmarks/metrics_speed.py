"""Time each disentanglement metric on synthetic codes of the full dSprites grid (737 280 × 10).

Five latents encode shape, scale, orientation, posX, posY (σ ≈ 0.08), five are inactive (σ ≈ 1).
Side by side: ``mig`` against a straightforward per-(latent, factor) contingency loop (what
disentanglement_lib + sklearn do), and ``mig_tcvae`` binned against Chen et al.'s sampled
estimator on a 1/32 subset (its cost grows with N², so the full-set time is extrapolated).

    python benchmarks/metrics_speed.py [--quick]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from klcontrol.vae_plant.metrics import (
    DSPRITES_FACTOR_SIZES,
    beta_vae_score,
    discretize,
    factor_grid,
    mig,
    mig_tcvae,
    rmig,
)


def synthetic_codes(seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.array(DSPRITES_FACTOR_SIZES)
    f = factor_grid(sizes)
    n = len(f)
    mu = 0.02 * rng.normal(size=(n, 10))
    sigma = np.full((n, 10), 0.99)
    for k in range(1, 6):
        mu[:, k - 1] = (f[:, k] / (sizes[k] - 1) * 2 - 1) * 1.5 + 0.05 * rng.normal(size=n)
        sigma[:, k - 1] = 0.08 * np.exp(0.3 * rng.normal(size=n))
    return mu, 2 * np.log(sigma), f


def loop_mig(codes, factors, num_bins=20):
    """disentanglement_lib's algorithm with one contingency table per (latent, factor) pair."""
    labels = discretize(codes, num_bins)
    gaps = []
    for k in range(factors.shape[1]):
        _, fk = np.unique(factors[:, k], return_inverse=True)
        if fk.max() == 0:
            continue
        p = np.bincount(fk) / len(fk)
        h = -np.sum(p * np.log(p))
        mis = []
        for j in range(codes.shape[1]):
            _, lj = np.unique(labels[:, j], return_inverse=True)
            c = np.zeros((lj.max() + 1, fk.max() + 1))
            np.add.at(c, (lj, fk), 1.0)
            pxy = c / c.sum()
            outer = pxy.sum(1, keepdims=True) * pxy.sum(0, keepdims=True)
            nz = pxy > 0
            mis.append(np.sum(pxy[nz] * np.log(pxy[nz] / outer[nz])))
        top = sorted(mis, reverse=True)
        gaps.append((top[0] - top[1]) / h)
    return float(np.mean(gaps))


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slow reference implementations")
    args = parser.parse_args()
    mu, lv, f = synthetic_codes()
    print(f"codes {mu.shape}, factors {f.shape}")
    v, t_mig = timed(mig, mu, f)
    print(f"mig                 {v:.4f}  {t_mig:6.2f} s")
    if not args.quick:
        ref, t_ref = timed(loop_mig, mu, f)
        print(f"  loop reference    {ref:.4f}  {t_ref:6.2f} s   (vectorised is {t_ref / t_mig:.1f}x faster)")
    v, t = timed(rmig, mu, lv, f)
    print(f"rmig                {v:.4f}  {t:6.2f} s")
    v, t_tc = timed(mig_tcvae, mu, lv, f[:, 2:])
    print(f"mig_tcvae (binned)  {v:.4f}  {t_tc:6.2f} s")
    if not args.quick:
        sub = np.arange(0, len(mu), 32)
        _, t_sub_b = timed(mig_tcvae, mu[sub], lv[sub], f[sub, 2:])
        v_s, t_sub_s = timed(mig_tcvae, mu[sub], lv[sub], f[sub, 2:], estimator="sampled", n_samples=10000)
        v_b = mig_tcvae(mu[sub], lv[sub], f[sub, 2:])
        print(f"  1/32 subset: binned {v_b:.4f} in {t_sub_b:.2f} s, Chen sampled {v_s:.4f} in {t_sub_s:.2f} s "
              f"(sampled/binned time {t_sub_s / t_sub_b:.0f}x; full set ≈ {t_sub_s * 32:.0f} s or more sampled)")
    v, t = timed(beta_vae_score, mu, DSPRITES_FACTOR_SIZES)
    print(f"beta_vae_score      {v:.4f}  {t:6.2f} s")


if __name__ == "__main__":
    main()
