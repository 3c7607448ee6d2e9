"""Cross-check figures and speed of the LTI-plant stability path (:mod:`klcontrol.analysis.stability.lti`).

1. First-order plant given as a ``control.TransferFunction`` against the exact generated path
   (:func:`klcontrol.analysis.stability.numeric.spectral_radius_first_order`): every controller, windows 1–8, delays 0/1, random gains
   on random plants and on the paper's dSprites-scale plant (a = 1/2500); max |Δρ| and verdict disagreements.
2. Random stable 2nd- and 3rd-order plants (negative DC gain, feedthrough in about half) against
   ``control.feedback(P, K, sign=1).poles()`` with the controller ``K(z)`` written by hand from the equations;
   max |Δρ| and verdict disagreements where |ρ − 1| > 1e-6.
3. Speed: one batched ``spectral_radius(kp, ki, plant=P)`` call on a (Kp, Ki) grid.

Run from the repository root:  PYTHONPATH=. python benchmarks/stability_lti.py [--gains 2000] [--plants 500] [--grid 300]
"""
from __future__ import annotations

import argparse
import time

import control
import numpy as np

from klcontrol.analysis.stability import numeric as sn
from klcontrol.analysis.stability import spectral_radius

# The random plants and the hand-written controller are the test suite's, so the figures are of the same check.
from tests.test_stability_lti import independent_rho, random_plant

TESTED_KINDS = ("incremental", "incremental-official", "positional")


def first_order_check(n_gains, rng):
    """Max |Δρ| and verdict disagreements of the TF path against the exact path."""
    worst, disagree, total = 0.0, 0, 0
    for ctrl in TESTED_KINDS:
        for T in range(1, 9):
            for d in (0, 1):
                for a, scale in ((rng.uniform(0.02, 1.5), 1.0), (1 / 2500, 0.01)):
                    gp = rng.uniform(-4, -0.1)
                    kp, ki = scale * rng.uniform(-1, 3, n_gains), scale * rng.uniform(0.01, 1.5, n_gains)
                    P = control.tf([a / (1 + a) * gp, 0], [1, -1 / (1 + a)], dt=1)
                    ours = spectral_radius(kp, ki, plant=P, window=T, delay=d, controller=ctrl)
                    exact = sn.spectral_radius_first_order(kp, ki, a, gp, T, d, ctrl)
                    worst = max(worst, float(np.max(np.abs(ours - exact))))
                    verdict = sn.is_stable_first_order(kp, ki, a, gp, T, d, ctrl)
                    away = np.abs(exact - 1) > 1e-9
                    disagree += int(np.sum((ours < 1)[away] != verdict[away]))
                    total += n_gains
    return worst, disagree, total


def higher_order_check(n_plants, rng):
    """Max |Δρ| and verdict disagreements against python-control's feedback, per order."""
    out = {}
    for order in (2, 3):
        worst, disagree, n_stable, n_unstable = 0.0, 0, 0, 0
        for i in range(n_plants):
            P = random_plant(rng, order)
            T, d, ctrl = int(rng.integers(1, 9)), int(rng.integers(0, 2)), TESTED_KINDS[i % 3]
            kp, ki = rng.uniform(-0.3, 1.5), rng.uniform(0.01, 0.6)
            ref = independent_rho(P, kp, ki, T, d)
            ours = spectral_radius(kp, ki, plant=P, window=T, delay=d, controller=ctrl)
            worst = max(worst, abs(ours - ref))
            if abs(ref - 1) > 1e-6:
                disagree += int((ours < 1) != (ref < 1))
                n_stable += ref < 1
                n_unstable += ref >= 1
        out[order] = (worst, disagree, n_stable, n_unstable)
    return out


def main():
    """Print the cross-check figures and the timing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gains", type=int, default=2000, help="random gain pairs per configuration (part 1)")
    ap.add_argument("--plants", type=int, default=500, help="random plants per order (part 2)")
    ap.add_argument("--grid", type=int, default=300, help="(Kp, Ki) grid side for the timing (part 3)")
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    worst, disagree, total = first_order_check(args.gains, rng)
    print(f"first order as TF vs exact path: max |Δρ| = {worst:.3g}, verdict disagreements {disagree} of {total}")
    for order, (w, dis, ns, nu) in higher_order_check(args.plants, rng).items():
        print(f"order {order}: max |Δρ| vs control.feedback = {w:.3g}, verdict disagreements {dis} "
              f"({ns} stable, {nu} unstable, |ρ − 1| > 1e-6)")
    P = random_plant(np.random.default_rng(1), 3)
    kp, ki = np.meshgrid(np.linspace(-0.3, 1.5, args.grid), np.linspace(0.01, 0.6, args.grid))
    spectral_radius(0.1, 0.1, plant=P, window=5, delay=1)  # derivation cached before timing
    t = time.perf_counter()
    spectral_radius(kp, ki, plant=P, window=5, delay=1)
    print(f"spectral_radius on a {args.grid}×{args.grid} grid (3rd-order plant, T = 5, delay 1, 11 states): "
          f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
