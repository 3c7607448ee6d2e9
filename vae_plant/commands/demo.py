"""``klcontrol demo``: train, fit, check, tune end to end (:func:`klcontrol.vae_plant.experiments.demo.run_demo`)."""
from __future__ import annotations


def register(sub) -> None:
    """Register the ``demo`` command."""
    from klcontrol.commands.common import N_BOOT, THREADS, TRAIN_STEPS

    p = sub.add_parser(
        "demo",
        help="train, fit, check, tune: the whole loop end to end, with a report",
        description="Train the β-VAE briefly under DynamicVAE's control law and draw its latent traversals, fit "
        "a plant, check the paper's gains, suggest tuned gains and write a report with figures.",
        epilog="example:\n  klcontrol demo --out demo_out --steps 200 --threads 1",
    )
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    p.add_argument("--steps", type=TRAIN_STEPS, default=None,
                   help="training updates (default 800, the demo's recipe; fewer train a worse model faster)")
    p.add_argument("--traces", default=None,
                   help="directory of recorded traces (*.csv.gz, *.csv, *.jsonl) to fit besides the model plant "
                        "(default: the shipped traces, klcontrol data path cpu)")
    p.add_argument("--n-boot", type=N_BOOT, default=40,
                   help="bootstrap replicates of the demo's fits (default 40; fewer: faster, wider intervals)")
    p.add_argument("--threads", type=THREADS, default=None, metavar="N",
                   help="torch CPU threads (default: torch's; 1 is faster on a machine busy with other jobs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no stage lines and no training progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol demo``."""
    import os

    from klcontrol.cli import print_json
    from klcontrol.commands.common import check_device
    from klcontrol.vae_plant.experiments.demo import DEMO_STEPS, comparison_sentence, run_demo

    check_device(args.device)
    steps = DEMO_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise ValueError(f"--steps must be ≥ 1, got {steps}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    s = run_demo(args.out, traces=args.traces, device=args.device, steps=steps, n_boot=args.n_boot,
                 progress=not (args.json or args.no_progress))
    if args.json:
        print_json(s)
        return 0
    real, st = s["real_traces"], s["step_test"]
    print(f"[demo] {s['traversals']['active']} of {len(s['traversals']['kl'])} latents in use "
          f"(KL > {s['traversals']['active_threshold_nats']:g} nats) after {s['vae_run']['steps']} updates")
    print(f"[demo] paper gains robustly stable on the fitted plant model: {s['paper_gains']['robust']['stable']}")
    print(f"[demo] set-point step on the model fit, tuned Kp={st['tuned']['kp']:.3g}, Ki={st['tuned']['ki']:.3g}: "
          + comparison_sentence(st))
    if real["available"]:
        print(f"[demo] on the fit to the real traces: {real['paper_gains']['stable']} "
              f"(tuned there: Kp={real['tuned']['kp']:.3g}, Ki={real['tuned']['ki']:.3g})")
    else:
        print(f"[demo] {real['reason']}")
    print(f"[demo] wrote {os.path.join(args.out, 'report.md')}, summary.json and "
          f"{len(s['figures'])} figures in {s['seconds']} s")
    return 0

