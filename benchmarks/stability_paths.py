"""The LTI-plant and robust stability paths against python-control, per core and on every core.

Measured the way ``stability_map.py`` measures the first-order maps: one process, one thread for the comparisons
(``NUMBA_NUM_THREADS=1`` unless ``--threads``), CPU time, minimum over ``--repeat`` rounds; python-control timed
per point on a sample and scaled to the map. The verdicts are compared on the sample.

* **LTI map**: ``is_stable(kp, ki, plant=P)`` on a 10⁶-point grid (``--n`` squared) for a random stable 3rd-order
  plant (the test suite's), T = 5, delays 0 and 1. klcontrol runs the compiled Routh–Hurwitz kernel on the closed
  loop's characteristic polynomial (affine in the gains); python-control: ``feedback(P, K, sign=1).poles()`` with
  the controller written by hand (``tests/test_stability_lti.py``). Also the eigenvalue path klcontrol takes for
  small maps, and ``spectral_radius`` (always the eigenvalue path).
* **Robust verdict** (first-order plant, every g′ of an interval): ``robust_stability`` per gain pair, exact, with
  margins, and ``robust_stable_map`` (the verdict alone, over arrays: Białas' segment test) on a grid;
  python-control: the closed-loop poles at ``--g-samples`` values of g′ across the interval (a sampled check,
  which can miss a narrow unstable band).
* **Every core**: the LTI map on ``--big`` points with one thread and with every thread (wall).

Run from the repository root:  PYTHONPATH=. python benchmarks/stability_paths.py [--n 1000] [--control-points 100]
[--repeat 3] [--big 10000000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))

import control  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from klcontrol.analysis.stability import is_stable, spectral_radius  # noqa: E402
from klcontrol.analysis.stability import lti as sl  # noqa: E402
from klcontrol.analysis.stability.kernels import MIN_POINTS  # noqa: E402
from klcontrol.analysis.stability.robust import robust_stability  # noqa: E402
from tests.test_stability_lti import hand_controller_tf, independent_rho, random_plant  # noqa: E402


def cpu(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def best(fn, repeat):
    return min(cpu(fn) for _ in range(repeat))


def lti_map(args, P, T, d):
    """CPU seconds and agreement of the LTI map and of python-control on a sample of its points."""
    kp, ki = np.meshgrid(np.linspace(-0.3, 1.5, args.n), np.linspace(0.01, 0.6, args.n))
    is_stable(kp, ki, plant=P, window=T, delay=d)  # load the kernels
    t_fast = best(lambda: is_stable(kp, ki, plant=P, window=T, delay=d), args.repeat)
    verdict = is_stable(kp, ki, plant=P, window=T, delay=d)
    sub = 20_000  # the eigenvalue path on a slice, scaled
    kps, kis = kp.reshape(-1)[:sub], ki.reshape(-1)[:sub]
    t_eig = best(lambda: sl.spectral_radius_lti(kps, kis, P, T, d), 1) * kp.size / sub
    rng = np.random.default_rng(0)
    idx = rng.choice(kp.size, args.control_points, replace=False)
    t0 = time.process_time()
    ref = np.array([independent_rho(P, kp.flat[i], ki.flat[i], T, d) for i in idx])
    t_ctrl = (time.process_time() - t0) * kp.size / len(idx)
    away = np.abs(ref - 1) > 1e-6
    disagree = int(np.sum(verdict.reshape(-1)[idx][away] != (ref[away] < 1)))
    return t_fast, t_eig, t_ctrl, disagree, int(away.sum())


def robust(args):
    """Per gain pair: robust_stability against python-control's poles at sampled g′ values."""
    a, g1, g2, T = 1 / 791, -2.24, -0.71, 5
    rng = np.random.default_rng(1)
    pairs = [(rng.uniform(0, 0.5), rng.uniform(0.01, 0.3)) for _ in range(args.robust_pairs)]
    robust_stability(*pairs[0], a, g1, g2, T, 0)
    t0 = time.process_time()
    ours = [robust_stability(kp, ki, a, g1, g2, T, 0).stable for kp, ki in pairs]
    t_ours = (time.process_time() - t0) / len(pairs)
    gs = np.linspace(g1, g2, args.g_samples)
    t0 = time.process_time()
    theirs = []
    for kp, ki in pairs:
        K = hand_controller_tf(kp, ki, T, 0)
        ok = True
        for g in gs:
            P = control.tf([a / (1 + a) * g, 0], [1, -1 / (1 + a)], dt=1)
            ok &= bool(np.max(np.abs(control.feedback(P, K, sign=1).poles())) < 1)
        theirs.append(ok)
    t_theirs = (time.process_time() - t0) / len(pairs)
    from klcontrol.analysis.stability.robust import robust_stable_map

    kp, ki = np.meshgrid(np.linspace(0, 0.5, args.robust_grid), np.linspace(0.001, 0.3, args.robust_grid))
    robust_stable_map(kp[:2, :2], ki[:2, :2], a, g1, g2, T, 0)
    t_map = best(lambda: robust_stable_map(kp, ki, a, g1, g2, T, 0), args.repeat) / kp.size
    m = robust_stable_map(np.array([p for p, _ in pairs]), np.array([i for _, i in pairs]), a, g1, g2, T, 0)
    return t_ours, t_theirs, sum(o != t for o, t in zip(ours, theirs)), sum(ours), len(pairs), t_map, \
        int(sum(bool(x) != o for x, o in zip(m, ours)))


def cores(args, P):
    """Wall seconds of the LTI map on ``--big`` points: one thread, then every thread."""
    import numba

    rng = np.random.default_rng(2)
    kp, ki = rng.uniform(-0.3, 1.5, args.big), rng.uniform(0.01, 0.6, args.big)
    out = {}
    for th in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(th)
        is_stable(kp[:70000], ki[:70000], plant=P, window=5, delay=1)
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            is_stable(kp, ki, plant=P, window=5, delay=1)
            ts.append(time.perf_counter() - t)
        out[th] = min(ts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="grid side of the LTI map (default 1000: 10⁶ points)")
    ap.add_argument("--control-points", type=int, default=100, help="python-control sample per map (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, the minimum kept (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="numba threads for the comparisons (default 1)")
    ap.add_argument("--robust-pairs", type=int, default=40, help="gain pairs of the robust comparison (default 40)")
    ap.add_argument("--robust-grid", type=int, default=300, help="grid side of the robust map (default 300)")
    ap.add_argument("--g-samples", type=int, default=50, help="g′ values python-control checks (default 50)")
    ap.add_argument("--big", type=int, default=10_000_000, help="points of the every-core map (0: skip)")
    args = ap.parse_args(argv)
    import numba

    cores_n = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(args.threads)
    P = random_plant(np.random.default_rng(1), 3)
    print(f"LTI plant: random stable 3rd order (tests/test_stability_lti.py, seed 1); {args.n ** 2:,} points; "
          f"{args.threads} thread(s); CPU time, min of {args.repeat}")
    for d in (0, 1):
        t_fast, t_eig, t_ctrl, dis, n = lti_map(args, P, 5, d)
        path = "compiled Routh on the affine polynomial" if args.n ** 2 >= MIN_POINTS else "eigenvalues: a small map"
        print(f"  is_stable T=5 delay {d}: {1e3 * t_fast:.1f} ms ({path}); "
              f"eigenvalue path {t_eig:.1f} s; python-control {t_ctrl:.0f} s (scaled from {args.control_points} "
              f"points): {t_ctrl / t_fast:,.0f}x python-control, {t_eig / t_fast:,.0f}x the eigenvalue path; "
              f"verdicts differing from python-control: {dis} of {n}")
    kp, ki = np.meshgrid(np.linspace(-0.3, 1.5, 300), np.linspace(0.01, 0.6, 300))
    t_sr = best(lambda: spectral_radius(kp, ki, plant=P, window=5, delay=1), 1)
    print(f"  spectral_radius (eigenvalue path), 300x300 grid, T=5 delay 1: {t_sr:.2f} s "
          f"({1e6 * t_sr / kp.size:.1f} µs per point)")
    t_ours, t_theirs, dis, n_stable, n, t_map, dis_map = robust(args)
    print(f"robust verdict over g′ ∈ [-2.24, -0.71] (a = 1/791, T = 5), per gain pair: robust_stability "
          f"{1e3 * t_ours:.1f} ms (exact, with margins); robust_stable_map {1e6 * t_map:.1f} µs "
          f"({args.robust_grid ** 2:,}-point grid); python-control at {args.g_samples} g′ samples "
          f"{1e3 * t_theirs:.0f} ms: map {t_theirs / t_map:,.0f}x python-control, {t_ours / t_map:,.0f}x "
          f"robust_stability; verdicts differing from python-control {dis} of {n} ({n_stable} robustly stable), "
          f"map vs robust_stability {dis_map}")
    if args.big and cores_n > 1:
        w = cores(args, P)
        print(f"every core, LTI is_stable on {args.big:,} points (wall, min of {args.repeat}): 1 thread "
              f"{w[1]:.3f} s, {cores_n} threads {w[cores_n]:.3f} s: {w[1] / w[cores_n]:.2f}x")


if __name__ == "__main__":
    main()
