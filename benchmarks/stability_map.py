"""Speed of (Kp, Ki) stability maps against a Schur–Cohn floor and python-control, side by side in one run.

The map: the paper's dSprites plant (a = 1/2500, g′ = −3.2), incremental PI, a grid of (Kp, Ki) in the "near" box of
:func:`klcontrol.analysis.stability.paper.default_boxes` (1000 × 1000 = 10⁶ points by default), T = 1 and 5, delays
0 and 1.

* ``is_stable``: klcontrol's map (the compiled kernel when numba is installed: Routh–Hurwitz on the bilinear-mapped
  polynomial, its coefficients affine in Kp, Ki).
* floor: an unrolled Schur–Cohn (Jury) test in numba, written here independently, on the characteristic polynomial
  in λ with coefficients affine in Kp, Ki (read off klcontrol's generated ``l`` code at three gain pairs). Verdicts
  of both are compared on every point.
* ``spectral_radius``: klcontrol's map.
* python-control: ``control.ss(A, B, C, D, dt=1).poles()`` per point, with ``(A, B, C, D)`` from
  :func:`klcontrol.analysis.stability.control.linear_matrices` built beforehand (untimed); ``--control-points`` random
  grid points are timed and the mean is scaled to the grid. Its verdicts and radii are compared with ours there.
* Cores: the T = 5 maps on ``--big`` points (default 10⁷) with one thread and with every thread.

Times are wall-clock minima over ``--repeat`` interleaved rounds (ours, then the floor, in each round); the ratios
are computed from the same rounds. ``--threads 1`` (default) times the comparisons on one thread.

Run:  python benchmarks/stability_map.py [--n 1000] [--control-points 300] [--repeat 5] [--big 10000000]
"""
from __future__ import annotations

import argparse
import time

import control
import numba
import numpy as np
from numba import njit, prange

from klcontrol.analysis.stability import is_stable, spectral_radius
from klcontrol.analysis.stability.codegen import coefficient_functions
from klcontrol.analysis.stability.control import linear_matrices
from klcontrol.analysis.stability.paper import PAPER_PLANT_POINTS, default_boxes


def schur_cohn_kernel(n):
    """An unrolled Schur–Cohn (Jury) verdict kernel for degree ``n`` (coefficients ``c0 + kp·ck + ki·ci``, highest
    power first): Jury's necessary condition ``p(1) > 0`` (given as its own affine triple ``e0, ek, ei``), then the
    monic polynomial's reflection coefficients ``r`` (its constant term, then that of each reduced polynomial
    ``(a_k − r·a_(m−k)) / (1 − r²)``) all satisfy ``|r| < 1``."""
    src = ["def kernel(c0, ck, ci, e0, ek, ei, kp, ki, out):"]
    src += [f"    a{k} = c0[{k}]; p{k} = ck[{k}]; q{k} = ci[{k}]" for k in range(n + 1)]
    src += ["    for i in prange(out.shape[0]):", "        x = kp[i]; y = ki[i]",
            "        ok = (e0 + x * ek + y * ei) * a0 > 0"]
    src += [f"        b{k} = a{k} + x * p{k} + y * q{k}" for k in range(n + 1)]
    src.append("        s = 1.0 / b0")
    cur = [f"u{k}" for k in range(n + 1)]
    src += [f"        u{k} = b{k} * s" for k in range(n + 1)]
    j = 0
    while len(cur) > 1:
        m = len(cur) - 1
        src += [f"        r{j} = {cur[m]}", f"        ok &= abs(r{j}) < 1.0", f"        g{j} = 1.0 / (1.0 - r{j} * r{j})"]
        nxt = [f"w{j}_{k}" for k in range(m)]
        src += [f"        {nxt[k]} = ({cur[k]} - r{j} * {cur[m - k]}) * g{j}" for k in range(m)]
        cur, j = nxt, j + 1
    src.append("        out[i] = ok")
    ns = {"prange": prange}
    exec("\n".join(src), ns)
    return njit(parallel=True, error_model="numpy", nogil=True)(ns["kernel"])


def lambda_affine(window, delay, a, gp):
    """``(c0, ck, ci)`` of the λ-polynomial and ``(e0, ek, ei)`` of ``p(1)``, read off klcontrol's generated ``l`` and
    ``z`` code at three gain pairs (both are affine in the gains; ``p(1)`` is the last coefficient in ``z = λ − 1``,
    printed exactly: 0 where Ki = 0, the integrator's marginal root)."""
    fns = coefficient_functions("incremental", window, delay)

    def triple(f):
        base = np.array(f(0.0, 0.0, a, gp), dtype=float)
        return base, np.array(f(1.0, 0.0, a, gp), dtype=float) - base, np.array(f(0.0, 1.0, a, gp), dtype=float) - base

    lam = triple(fns[3])
    return lam + tuple(v[-1] for v in triple(fns[1]))


def interleaved(fns, repeat):
    """Minimum wall time of each function over ``repeat`` interleaved rounds, and their last results."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best, outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="grid points per axis (default 1000: 10⁶ points)")
    ap.add_argument("--control-points", type=int, default=300, help="points timed with python-control")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds (minimum kept)")
    ap.add_argument("--threads", type=int, default=1, help="numba threads for the comparisons (default 1)")
    ap.add_argument("--big", type=int, default=10_000_000, help="points of the every-core map (0: skip)")
    args = ap.parse_args(argv)

    a, gp = PAPER_PLANT_POINTS["dsprites"]
    kp_lo, kp_hi, ki_lo, ki_hi = default_boxes(a, gp)["near"]
    KP, KI = np.meshgrid(np.linspace(kp_lo, kp_hi, args.n), np.linspace(ki_lo, ki_hi, args.n))
    kp, ki = KP.ravel(), KI.ravel()
    npts = kp.size
    rng = np.random.default_rng(0)
    idx = rng.choice(npts, args.control_points, replace=False)
    cores = numba.get_num_threads()
    numba.set_num_threads(args.threads)
    print(f"plant a = {a:g}, g′ = {gp:g}; {npts:,} grid points; {args.threads} thread(s) of {cores}; "
          f"python-control timed on {args.control_points} points")
    goals = []
    for T in (1, 5):
        for d in (0, 1):
            cfg = dict(window=T, delay=d)
            coeffs = lambda_affine(T, d, a, gp)
            ref = schur_cohn_kernel(len(coeffs[0]) - 1)
            out = np.empty(npts, dtype=np.bool_)
            ref(*coeffs, kp, ki, out)  # compile
            is_stable(kp, ki, a, gp, **cfg)  # load the kernels
            spectral_radius(kp[:100_000], ki[:100_000], a, gp, **cfg)
            (t_map, t_ref), (st, _) = interleaved(
                [lambda: is_stable(kp, ki, a, gp, **cfg), lambda: ref(*coeffs, kp, ki, out)], args.repeat)
            (t_rho,), (rho,) = interleaved([lambda: spectral_radius(kp, ki, a, gp, **cfg)], max(1, args.repeat // 2))
            mats = [linear_matrices(kp[i], ki[i], a, gp, **cfg) for i in idx]
            (t_ctl,), (ctl_rho,) = interleaved(
                [lambda: [np.max(np.abs(control.ss(A, B, C, D, dt=1).poles())) for A, B, C, D in mats]], 1)
            t_ctl = t_ctl / len(idx) * npts
            ctl_rho = np.array(ctl_rho)
            agree_ref = int(np.sum(st == out))
            away = np.abs(ctl_rho - 1) > 1e-9
            agree_ctl = np.mean((ctl_rho < 1)[away] == st[idx][away])
            err = np.max(np.abs(ctl_rho - rho[idx]))
            print(f"T={T} delay {d}: is_stable {1e3 * t_map:.1f} ms | Schur–Cohn floor {1e3 * t_ref:.1f} ms "
                  f"({t_map / t_ref:.2f}x the floor) | spectral_radius {1e3 * t_rho:.0f} ms | "
                  f"python-control scaled {t_ctl:.0f} s")
            print(f"      python-control / is_stable = {t_ctl / t_map:,.0f}x, / spectral_radius = "
                  f"{t_ctl / t_rho:,.0f}x; verdicts = floor on {agree_ref:,} of {npts:,} points, = python-control "
                  f"on {100 * agree_ctl:.1f} % (|ρ − 1| > 1e-9), max |Δρ| = {err:.1e}; stable {100 * st.mean():.1f} %")
            if T == 5:
                goals.append((d, t_map / t_ref, t_ctl / t_map, t_ctl / t_rho, agree_ref == npts))
    for d, floor, ctl, ctl_rho, agree in goals:
        ok = floor <= 2 and ctl >= 10_000 and ctl_rho >= 500 and agree
        print(f"goal T=5 delay {d} (≤ 2x floor, ≥ 10 000x and ≥ 500x python-control, verdicts agree): "
              f"{'met' if ok else 'NOT met'} ({floor:.2f}x, {ctl:,.0f}x, {ctl_rho:,.0f}x)")
    if args.big:
        big = np.random.default_rng(1)
        kp_b = big.uniform(kp_lo, kp_hi, args.big)
        ki_b = big.uniform(ki_lo, ki_hi, args.big)
        for name, fn in (("is_stable", is_stable), ("spectral_radius", spectral_radius)):
            times = []
            for th in (1, cores):
                numba.set_num_threads(th)
                fn(kp_b[:100_000], ki_b[:100_000], a, gp, window=5, delay=1)
                (t,), _ = interleaved([lambda: fn(kp_b, ki_b, a, gp, window=5, delay=1)], 2 if name == "is_stable" else 1)
                times.append(t)
            print(f"{name} on {args.big:,} points, T=5 delay 1: 1 thread {times[0]:.3f} s, {cores} threads "
                  f"{times[1]:.3f} s ({times[0] / times[1]:.2f}x)")


if __name__ == "__main__":
    main()
