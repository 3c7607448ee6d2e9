"""``klcontrol demo``: the main job, end to end, with a report."""
from __future__ import annotations

import json
import os


def register(sub) -> None:
    """Register the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo and write a report with figures",
        description="Simulate DynamicVAE's loop on the paper's plants, compare gains, and write a report.",
    )
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol demo``."""
    import numpy as np

    from ..cli import print_json
    from ..controllers import IncrementalPI
    from ..plant import ExpGain, FirstOrderPlant
    from ..plotting import plot_trace
    from ..setpoints import StepRamp
    from ..simulate import simulate

    os.makedirs(args.out, exist_ok=True)
    # Paper's MNIST plant (Appendix C.1) under its own step-ramp schedule, the first 30 periods.
    plant = FirstOrderPlant(1 / 5000, ExpGain(26.38, 0.0476))
    sp = StepRamp(0.5, 26.0, 0.15, 6000, 1000)
    gains = {"paper (Kp=0.01, Ki=0.005)": (0.01, 0.005), "Ki ×4": (0.01, 0.02), "Kp ×10": (0.1, 0.005)}
    kp = np.array([g[0] for g in gains.values()])
    ki = np.array([g[1] for g in gains.values()])
    ctrl = IncrementalPI(kp, ki, sp, beta0=100.0, filter=5)
    tr = simulate(ctrl, plant, 180_000, noise_rel=0.03, seed=0, progress=not args.json)
    fig_path = os.path.join(args.out, "demo_trace.png")
    plot_trace(tr, fig_path, title="DynamicVAE loop on the paper's MNIST plant (3 gain sets, 3 % KL noise)")
    m = tr.metrics()
    summary = {
        "plant": plant.to_dict(),
        "setpoint": sp.to_dict(),
        "steps": len(tr),
        "runs": {name: {k: v[i] for k, v in m.items()} for i, name in enumerate(gains)},
        "figures": [fig_path],
    }
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    if args.json:
        print_json(summary)
    else:
        for name, r in summary["runs"].items():
            print(f"{name:28s} tracking RMSE {r['tracking_rmse']:.3f} nats, overshoot {r['overshoot']:.3f} nats")
        print(f"wrote {fig_path} and {os.path.join(args.out, 'summary.json')}")
    return 0
