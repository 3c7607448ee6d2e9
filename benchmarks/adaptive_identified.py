"""The adaptive controller on the plant identified from the real VAE, before (and beside) the real runs.

Simulates the ``compare`` CPU budget (5 000 updates, set points compressed ×160) on the Hammerstein/OE model of
``identify/fit.json`` (:mod:`klcontrol.data`) (time constants 367, 15.7 and 15.7 updates) with its residual noise, for the
``adaptive`` preset, DynamicVAE, and variants that start from β(0) = 4 or trust a prior at the fast mode
(a = 1/15.7 ≈ 0.064). For each: how often the estimate was trusted, the gains it then chose, tracking RMSE of
the noise-free output and the β jitter. The first-order RLS sees the fast mode; gains designed for it are far
too high for the slow one.

Run:  python benchmarks/adaptive_identified.py [--seeds 2]
"""
from __future__ import annotations

import argparse

import numpy as np

from klcontrol import data, simulate
from klcontrol.analysis.identification.fits import load_fit
from klcontrol.vae_plant.experiments.compare import Method

FIT = data.path("identify/fit.json")
SPECS = ("adaptive", "dynamicvae", "adaptive:beta0=4,a_factor=64", "dynamicvae:beta0=4",
         "adaptive:a_prior=0.064,a_factor=8", "adaptive:beta0=4,a_prior=0.064,a_factor=8")


def run(spec, plant, seed, steps=5000, compress=160.0, y0=0.59, noise=0.59):
    """One simulated run and what the controller did (replayed on the measured KL)."""
    tr = simulate(Method.parse(spec).controller(compress), plant, steps, y0=y0, noise_std=noise, seed=seed)
    ctrl = Method.parse(spec).controller(compress)
    ctrl.prime(y0)
    adapted, kp = [], []
    for k in tr.kl[:-1]:
        ctrl.step(float(k))
        adapted.append(bool(ctrl.state.get("adapted", 0)))
        kp.append(float(ctrl.state.get("kp", np.nan)))
    adapted, kp = np.array(adapted), np.array(kp)
    return dict(adapted=float(adapted.mean()), kp=(float(kp[adapted].min()), float(kp[adapted].max()))
                if adapted.any() else None, rmse=float(np.sqrt(np.mean((tr.state - tr.setpoint) ** 2))),
                jitter=float(np.std(np.diff(tr.beta))), final_beta=float(tr.beta[-1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args(argv)
    plant = load_fit(FIT)
    print(f"plant: {plant!r}")
    print(f"{'method':52s} {'adapted':>8} {'Kp when adapted':>18} {'RMSE':>7} {'β jitter':>9} {'final β':>8}")
    for spec in SPECS:
        for seed in range(args.seeds):
            r = run(spec, plant, seed)
            kp = "–" if r["kp"] is None else f"{r['kp'][0]:.3g} … {r['kp'][1]:.3g}"
            print(f"{spec + f' (seed {seed})':52s} {100 * r['adapted']:7.1f}% {kp:>18} {r['rmse']:7.2f} "
                  f"{r['jitter']:9.4f} {r['final_beta']:8.3g}")


if __name__ == "__main__":
    main()
