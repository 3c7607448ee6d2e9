"""``klcontrol identify``: operating-point identification experiment on the real β-VAE."""
from __future__ import annotations


def register(sub) -> None:
    """Register the ``identify`` command."""
    from klcontrol.commands.common import BATCH_SIZE, FINITE, JOBS, POSITIVE, SEED, TRAIN_STEPS, integer, number

    p = sub.add_parser(
        "identify",
        help="settle the real β-VAE at fixed β, then excite it around β* (open and closed loop) and record traces",
        description="Train the dSprites β-VAE to a settled state at each fixed β (--betas), then warm-start from "
        "that checkpoint and apply a designed excitation: a random binary β signal between β*·e^-δ and β*·e^δ "
        "(hold times log-uniform in [--hold-min, --hold-max]; δ from the settled KL noise: "
        "δ = clip(30·σ50/|dKL/dlnβ|, 0.1, 0.5)), and at --main a held-out open-loop run and a closed-loop run "
        "with set-point steps, then a relay run (the integral ray's critical gain, no model). The slope in δ comes from "
        "the plant's own settled levels (two --betas), or from --prior. Finished runs in --out are reused. --plant "
        "runs your own VAE (docs/your_vae.md). CPU budget of the defaults: 14 300 updates at batch 16, one thread "
        "per run (≈ 9–10 min on two quiet cores at the measured 77 ms per update; docs/identification.md).",
        epilog="example:\n  klcontrol identify --out runs/identify --betas 2 4 --main 4 --jobs 2",
    )
    p.add_argument("--out", default="runs/identify", metavar="DIR", help="run directories (default runs/identify)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="copy traces (csv.gz) and configs there, with experiment.json (e.g. klcontrol/data/identify in a clone)")
    p.add_argument("--betas", type=POSITIVE, nargs="+", default=[2.0, 4.0],
                   help="operating points β* (default 2 4)")
    p.add_argument("--main", type=POSITIVE, default=4.0,
                   help="operating point of the fit, held-out and closed-loop runs (default 4)")
    p.add_argument("--settle-steps", type=TRAIN_STEPS, default=4000, help="updates of each settle run (default 4000)")
    p.add_argument("--fit-steps", type=TRAIN_STEPS, default=2100,
                   help="updates of the open-loop run used for fitting (default 2100)")
    p.add_argument("--val-steps", type=TRAIN_STEPS, default=1200,
                   help="updates of each held-out open-loop run (default 1200)")
    p.add_argument("--closed-steps", type=TRAIN_STEPS, default=1200, help="updates of the closed-loop run (default 1200)")
    p.add_argument("--lead", type=integer(0, 10_000_000), default=200,
                   help="updates at β* before the open-loop excitation (default 200)")
    p.add_argument("--hold-min", type=integer(1, 10_000_000), default=5,
                   help="shortest hold of the β signal, in updates (default 5)")
    p.add_argument("--hold-max", type=integer(1, 10_000_000), default=500,
                   help="longest hold of the β signal, in updates (default 500)")
    p.add_argument("--other-betas-excited", action="store_true",
                   help="also a held-out open-loop run at every β other than --main")
    p.add_argument("--setpoint-step", type=FINITE, default=2.5, help="closed loop: set-point step in nats (default 2.5)")
    p.add_argument("--relay-steps", type=integer(0, 100_000_000), default=600,
                   help="updates of the relay run (model-free critical gain on the integral ray; 0: none; default 600)")
    p.add_argument("--relay-h", type=number(0.0, 1.0, lo_open=True), default=0.04,
                   help="relay step, a fraction of β* per update (β moves by ±h·β* each update; default 0.04)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="0: the seeds of the shipped runs; another value: an independent identification (other "
                   "training and excitation seeds)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=16, help="images per update (default 16)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    p.add_argument("--plant", default=None, metavar="MODULE:FACTORY",
                   help="your own VAE: a factory returning a plant of the protocol (docs/your_vae.md), e.g. "
                        "examples/mnist_vae.py:make or my_vae:make; passed seed=, device=, batch_size= when it accepts "
                        "them (default: klcontrol's dSprites β-VAE)")
    p.add_argument("--settled", default=None, metavar="RUN",
                   help="your run already settled at --main (its last 1000 updates at that β; a run of `klcontrol "
                        "train` or of --plant): it replaces the settle run there and every other run starts from its "
                        "last good checkpoint; it is only read (default: settle from scratch)")
    p.add_argument("--jobs", type=JOBS, default=2,
                   help="runs trained at once, one thread each (default 2; capped by the usable CPUs)")
    p.add_argument("--prior", default=None, metavar="JSON",
                   help="a fit whose g gives dKL/dlnβ for the amplitude rule, when asked for ('dsprites': the shipped "
                        "fit of klcontrol's own VAE); default: the plant's own settle runs (two --betas; with one, δ = 0.5, the rule's upper bound)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol identify``."""
    import sys

    from klcontrol.cli import print_json
    from klcontrol.commands.common import check_device, check_output_paths

    check_device(args.device)
    check_output_paths(args, (), folders=("out", "export"), inputs=(args.settled,) if args.settled else ())
    from klcontrol.vae_plant.experiments.identify import run_experiment

    res = run_experiment(args.out, export=args.export, jobs=args.jobs, batch_size=args.batch_size,
                         device=args.device, prior=args.prior, command="klcontrol " + " ".join(sys.argv[1:]),
                         progress=(lambda s: None) if args.json else print,
                         betas=args.betas, main=args.main, settle_steps=args.settle_steps, fit_steps=args.fit_steps,
                         val_steps=args.val_steps, closed_steps=args.closed_steps, lead=args.lead, hold_min=args.hold_min,
                         hold_max=args.hold_max, setpoint_step=args.setpoint_step,
                         other_betas_excited=args.other_betas_excited, plant=args.plant, seed=args.seed,
                         relay_steps=args.relay_steps, relay_h=args.relay_h, settled=args.settled)
    if args.json:
        print_json(res)
        return 0
    for p in res["static_points"]:
        lo, hi = p["level_ci"]
        print(f"β = {p['beta']:g}: settled KL {p['level']:.3f} [{lo:.3f}, {hi:.3f}] nats, σ {p['sigma']:.3f}, "
              f"σ50 {p['sigma_mean']:.3f}, drift {1000 * p['slope']:+.3f} nats/1000 updates")
    for r in res.get("relay", []):
        if "error" in r:
            print(f"relay {r['name']}: {r['error']}")
        else:
            print(f"relay {r['name']} (Kp = 0): critical Ki ≈ {r['ki']:.3g}, period {r['period']:.3g} updates "
                  f"({r['cycles']} cycles, β ± {r['beta_amplitude']:.3g}, loop phase {r['loop_phase_deg']:+.0f}° at "
                  "the cycle's frequency; model-free, docs/your_vae.md)")
    for path in res["exported"]:
        print(f"exported {path}")
    return 0
