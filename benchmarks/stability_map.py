"""Speed of a 10⁶-point (Kp, Ki) stability map against python-control, side by side.

The map: the paper's dSprites plant (a = 1/2500, g′ = −3.2), incremental PI,
a 1000 × 1000 grid of (Kp, Ki) in the "near" box of
:func:`klcontrol.analysis.stability.paper.default_boxes`.

* ``is_stable``: generated Routh–Hurwitz code on the bilinear-mapped
  characteristic polynomial, vectorised over the grid.
* ``spectral_radius``: the two roots nearest λ = 1 by Newton's method on the
  polynomial in z = λ − 1, divided out, and a Schur–Cohn test that the rest lie
  inside (closed form for degree ≤ 2), vectorised in blocks.
* python-control: ``control.ss(A, B, C, D, dt=1).poles()`` per point, with
  ``(A, B, C, D)`` from :func:`klcontrol.analysis.stability.control.linear_matrices` built beforehand (untimed);
  1000 random grid points are timed (best of ``--repeat`` passes, as ours) and
  the mean is scaled to 10⁶.
  Its verdicts (max |pole| < 1) and radii are compared with ours on those points.

Run:  python benchmarks/stability_map.py [--n 1000] [--control-points 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

import control
import numpy as np

from klcontrol.analysis.stability import is_stable, spectral_radius
from klcontrol.analysis.stability.control import linear_matrices
from klcontrol.analysis.stability.paper import PAPER_PLANT_POINTS, default_boxes


def best_of(fn, repeat):
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="grid points per axis (default 1000: 10⁶ points)")
    ap.add_argument("--control-points", type=int, default=1000, help="points timed with python-control")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of each vectorised map (best is kept)")
    ap.add_argument("--delay", type=int, default=1, choices=(0, 1))
    args = ap.parse_args(argv)

    a, gp = PAPER_PLANT_POINTS["dsprites"]
    kp_lo, kp_hi, ki_lo, ki_hi = default_boxes(a, gp)["near"]
    KP, KI = np.meshgrid(np.linspace(kp_lo, kp_hi, args.n), np.linspace(ki_lo, ki_hi, args.n))
    npts = KP.size
    rng = np.random.default_rng(0)
    idx = rng.choice(npts, args.control_points, replace=False)
    print(f"plant a = {a:g}, g′ = {gp:g}; delay {args.delay}; {npts:,} grid points; "
          f"python-control timed on {args.control_points} points")
    rows = []
    for T in (1, 5):
        cfg = dict(window=T, delay=args.delay)
        is_stable(KP[:2, :2], KI[:2, :2], a, gp, **cfg)  # load the generated code once
        spectral_radius(KP[:2, :2], KI[:2, :2], a, gp, **cfg)
        t_map, st = best_of(lambda: is_stable(KP, KI, a, gp, **cfg), args.repeat)
        t_rho, rho = best_of(lambda: spectral_radius(KP, KI, a, gp, **cfg), args.repeat)

        # Matrices are built beforehand: only ss(...).poles() is timed, in python-control's favour.
        mats = [linear_matrices(KP.flat[i], KI.flat[i], a, gp, **cfg) for i in idx]
        # Same treatment as ours: best of --repeat passes over the sample.
        t_ctl, ctl_rho = best_of(lambda: [np.max(np.abs(control.ss(A, B, C, D, dt=1).poles())) for A, B, C, D in mats],
                                 args.repeat)
        t_ctl = t_ctl / len(idx) * npts
        ctl_rho = np.array(ctl_rho)
        agree = np.mean((ctl_rho < 1) == st.flat[idx])
        err = np.max(np.abs(ctl_rho - rho.flat[idx]))
        rows.append((T, t_map, t_rho, t_ctl, agree, err, st.mean()))
        print(f"T={T}: is_stable map {t_map:.3f} s | spectral_radius map {t_rho:.3f} s | "
              f"python-control per point, scaled {t_ctl:.1f} s")
        print(f"      ratio python-control / is_stable = {t_ctl / t_map:,.0f}x, "
              f"/ spectral_radius = {t_ctl / t_rho:,.0f}x; verdicts agree on {100 * agree:.1f} % of the "
              f"timed points, max |Δρ| = {err:.1e}; stable fraction {100 * st.mean():.1f} %")
    t1, t5 = rows[0], rows[1]
    goal = t1[3] / t1[1] >= 1000 and t1[1] <= 0.2
    print(f"goal (T=1: ≥ 1000x and ≤ 0.2 s): {'met' if goal else 'NOT met'} "
          f"({t1[3] / t1[1]:,.0f}x, {t1[1]:.3f} s)")
    goal5 = t5[3] / t5[1] >= 2000 and t5[3] / t5[2] >= 100
    print(f"goal (T=5: is_stable ≥ 2000x, spectral_radius ≥ 100x): {'met' if goal5 else 'NOT met'} "
          f"({t5[3] / t5[1]:,.0f}x, {t5[3] / t5[2]:,.0f}x)")


if __name__ == "__main__":
    main()
