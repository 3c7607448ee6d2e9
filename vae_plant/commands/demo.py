"""``klcontrol demo``: train, fit, check, tune end to end (:func:`klcontrol.vae_plant.experiments.demo.run_demo`)."""
from __future__ import annotations


def register(sub) -> None:
    """Register the ``demo`` command."""
    from klcontrol.commands.common import N_BOOT, THREADS, TRAIN_STEPS, integer

    RELAY_STEPS = integer(0, 1_000_000, cost=lambda v: f"the relay trains {v} updates")

    p = sub.add_parser(
        "demo",
        help="train a β-VAE, measure its loop, fit it, recommend gains: the whole chain on one VAE, with a report",
        description="Train the β-VAE briefly under DynamicVAE's control law, run a relay experiment on the trained "
        "network (its critical gain, model-free), fit a first-order plant to its runs, recommend gains and judge "
        "them side by side; then the same question at klcontrol's batch-16 operating point, where a model has been "
        "identified. Prints a five-line summary; writes report.md, summary.json and figures.",
        epilog="example:\n  klcontrol demo --out demo_out --steps 200 --relay-steps 200",
    )
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out; the demo replaces only "
                   "the files it wrote there before)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    p.add_argument("--steps", type=TRAIN_STEPS, default=None,
                   help="training updates (default 800, the demo's recipe; fewer train a worse model faster)")
    p.add_argument("--relay-steps", type=RELAY_STEPS, default=None, metavar="N",
                   help="updates of the relay experiment on the trained network (default 400; 0 skips it)")
    p.add_argument("--traces", default=None,
                   help="directory of recorded traces (*.csv.gz, *.csv, *.jsonl) for section 5 "
                        "(default: the shipped traces, klcontrol data path cpu)")
    p.add_argument("--n-boot", type=N_BOOT, default=40,
                   help="bootstrap replicates of the demo's fits (default 40; fewer: faster, wider intervals)")
    p.add_argument("--threads", type=THREADS, default=None, metavar="N",
                   help="torch CPU threads (default: 1 on a machine with ≤ 2 cores, else up to 4)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no stage lines and no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol demo``."""
    import os

    from klcontrol.cli import print_json
    from klcontrol.commands.common import check_device
    from klcontrol.vae_plant.experiments.demo import DEMO_STEPS, RELAY_STEPS, default_threads, run_demo

    check_device(args.device)
    steps = DEMO_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise ValueError(f"--steps must be ≥ 1, got {steps}")
    import torch

    torch.set_num_threads(default_threads() if args.threads is None else args.threads)
    s = run_demo(args.out, traces=args.traces, device=args.device, steps=steps, n_boot=args.n_boot,
                 progress=not (args.json or args.no_progress),
                 relay_steps=RELAY_STEPS if args.relay_steps is None else args.relay_steps)
    if args.json:
        print_json(s)
        return 0
    print("\n".join(f"{i}. {t}" for i, t in enumerate(s["summary_lines"], 1)))
    print(f"[demo] wrote {os.path.join(args.out, 'report.md')}, summary.json and "
          f"{len(s['figures'])} figures in {s['seconds']} s")
    return 0
