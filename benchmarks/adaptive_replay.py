"""What the adaptive controller did inside real training runs, replayed from their traces.

A controller is a deterministic function of the losses it measured, and a run's ``trace.csv`` holds every
one of them (the KL in float32, as the trainer measured it).  Replaying them through a fresh controller
built from the run's method reproduces the run's β (checked here) and shows what the trace does not log:
when the estimate was trusted, the gains it chose, and the plant it estimated.

Run:  python benchmarks/adaptive_replay.py RUN_DIR [RUN_DIR ...] [--method adaptive] [--compress 160]
      e.g. python benchmarks/adaptive_replay.py cmp/runs/adaptive/seed*
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

from klcontrol.vae_plant.experiments.compare import Method


def _kl_column(path):
    """The KL column of ``trace.csv`` as the trainer measured it: float32 values widened to float64."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kl = np.array([np.float32(r["kl"]) for r in rows], dtype=np.float64)
    beta = np.array([float(r["beta"]) for r in rows])
    return kl, beta


def replay(run_dir, method="adaptive", compress=160.0) -> dict:
    """Replay one run's KL through a fresh controller of ``method`` (a compare spec); what it did."""
    with open(os.path.join(run_dir, "config.json")) as fh:
        cfg = json.load(fh)
    kl, beta = _kl_column(os.path.join(run_dir, "trace.csv"))
    ctrl = Method.parse(method).controller(compress)
    if repr(ctrl) != cfg["settings"]["controller"]:
        raise SystemExit(f"{run_dir} was trained with {cfg['settings']['controller']}, not {ctrl!r}")
    ctrl.prime(cfg["initial_kl"])
    n = len(kl)
    rep = np.empty(n)
    kp, ki, adapted, a_hat = np.empty(n), np.empty(n), np.empty(n, bool), np.empty(n)
    rep[0] = ctrl.beta
    for t in range(n - 1):  # β(t+1) from KL(t)
        rep[t + 1] = ctrl.step(kl[t])
        st = ctrl.state
        kp[t], ki[t], adapted[t] = float(st["kp"]), float(st["ki"]), bool(st["adapted"])
        a_hat[t] = 1 / float(st["phi"]) - 1
    kp, ki, adapted = kp[:-1], ki[:-1], adapted[:-1]
    a_range = np.percentile(a_hat[100:-1], [5, 95])  # after the first 100 updates, the middle 90 %
    a_end, g_hat = ctrl.estimate()
    first = int(np.argmax(adapted)) if adapted.any() else None
    return {
        "run": run_dir, "updates": n, "max_beta_difference": float(np.max(np.abs(rep - beta))),
        "adapted_fraction": float(adapted.mean()), "first_adapted_update": first,
        "kp_range_adapted": [float(kp[adapted].min()), float(kp[adapted].max())] if adapted.any() else None,
        "ki_range_adapted": [float(ki[adapted].min()), float(ki[adapted].max())] if adapted.any() else None,
        "final_estimate": {"a": a_end, "gprime": g_hat}, "final_beta": float(beta[-1]),
        "a_estimate_5_95_percent": [float(a_range[0]), float(a_range[1])],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories of the adaptive preset")
    ap.add_argument("--method", default="adaptive",
                    help="compare method the runs were trained with (default adaptive; e.g. adaptive:beta0=4)")
    ap.add_argument("--compress", type=float, default=160.0, help="set-point compression of the runs (cpu budget: 160)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = [replay(r, args.method, args.compress) for r in args.runs]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in out:
        print(f"{r['run']}: β replayed to {r['max_beta_difference']:.1e}; adapted on {100 * r['adapted_fraction']:.1f} % "
              f"of {r['updates']} updates (first at {r['first_adapted_update']}); Kp {r['kp_range_adapted']}, "
              f"Ki {r['ki_range_adapted']}; â (5–95 %) {r['a_estimate_5_95_percent'][0]:.3g}–"
              f"{r['a_estimate_5_95_percent'][1]:.3g}, final â = {r['final_estimate']['a']:.3g}, "
              f"ĝ′ = {r['final_estimate']['gprime']:.3g}, final β = {r['final_beta']:.3g}")


if __name__ == "__main__":
    main()
