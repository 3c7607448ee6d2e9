"""``klcontrol compare``: train several controllers over seeds and tabulate reconstruction and disentanglement."""
from __future__ import annotations

import argparse
import sys

from klcontrol.commands.common import (
    BATCH_SIZE,
    JOBS,
    SEEDS,
    THREADS,
    TRAIN_STEPS,
    add_progress_arg,
    check_device,
    check_output_paths,
    integer,
    number,
    show_progress,
)

BUDGET_NAMES = ("tiny", "cpu", "paper")


def register(sub) -> None:
    """Register the ``compare`` command."""
    p = sub.add_parser(
        "compare",
        help="train β-VAE_H, β-VAE_B, ControlVAE, DynamicVAE and its ablations over seeds; table and figures",
        description="Train each method on procedural dSprites for every seed, evaluate MIG, β-TCVAE MIG, RMIG "
        "(per factor) and the β-VAE score, and write OUT/table.md, OUT/compare.json, OUT/training.png and "
        "OUT/tradeoff.png. A method is a controller preset with optional overrides: NAME[:key=value,...], "
        "e.g. dynamicvae:kp=2.77,ki=8.6e-4,label=tuned. Runs already finished in OUT are reused.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="budgets: tiny (seconds; tests), cpu (batch 16, 5000 updates, 3 seeds: ~47 min on 2 cores with "
        "--jobs 2), paper (batch 128, 800k updates, 5 seeds: a GPU). Budgets shorter than the paper's compress "
        "every set-point schedule to fit (see `--no-compress`); gains and β(0) are the papers'."
        "\n\nexample:\n  klcontrol compare --budget tiny --methods fixed dynamicvae --seeds 1 --out cmp",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (runs, tables, figures)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods (default: fixed capacity controlvae dynamicvae dynamicvae-p dynamicvae-step "
                   "dynamicvae-t)")
    p.add_argument("--budget", default="cpu", help=f"one of {', '.join(BUDGET_NAMES)} (default cpu)")
    p.add_argument("--seeds", type=SEEDS, default=None, help="number of seeds 0…N−1 (default: the budget's)")
    p.add_argument("--steps", type=TRAIN_STEPS, default=None, help="updates per run (default: the budget's)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=None, help="images per update (default: the budget's)")
    p.add_argument("--no-compress", action="store_true",
                   help="run the set-point schedules at the papers' speed even on a short budget")
    p.add_argument("--n-images", type=integer(0, 737_280), default=None,
                   help="images for MIG/RMIG (0 = all 737280; default: the budget's)")
    p.add_argument("--no-beta-vae", action="store_true", help="skip the β-VAE score")
    p.add_argument("--jobs", type=JOBS, default=1,
                   help="runs trained at once, one process each (default 1; at most the CPUs, and never more than "
                   "the runs)")
    p.add_argument("--threads", type=THREADS, default=1, help="torch CPU threads per process (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="training device (default: cuda if available)")
    p.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="process: --jobs local processes (default); ray: one Ray task per run (extra: klcontrol[ray])")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (auto, ray://HOST:10001; default: a local Ray instance); --out must "
                   "then be on a filesystem every node mounts at the same path")
    p.add_argument("--gpus-per-run", type=number(0.0, 64.0), default=None, metavar="G",
                   help="GPUs each Ray task requests (default 1 with --device cuda, else 0; 0.5 puts two runs on a GPU)")
    add_progress_arg(p)
    p.add_argument("--json", action="store_true", help="print the aggregated table as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol compare``."""
    from klcontrol.cli import print_json
    from klcontrol.vae_plant.experiments.compare import compare

    check_device(args.device)
    check_output_paths(args, (), folders=("out",))  # tables and figures would mix with a run's files
    if args.budget not in BUDGET_NAMES:
        raise ValueError(f"unknown budget {args.budget!r}; choose one of {', '.join(BUDGET_NAMES)}")
    res = compare(args.out, args.methods, budget=args.budget, seeds=args.seeds, steps=args.steps,
                  batch_size=args.batch_size, compress=False if args.no_compress else None,
                  n_images=args.n_images, beta_vae=not args.no_beta_vae, jobs=args.jobs, threads=args.threads,
                  device=args.device, progress=show_progress(args), executor=args.executor, address=args.address,
                  gpus_per_run=args.gpus_per_run,
                  command=" ".join(["klcontrol"] + sys.argv[1:]))
    if args.json:
        print_json({"settings": res.settings, "table": res.table, "figures": res.figures})
    else:
        print(res.markdown())
        print(f"tables: {args.out}/table.md, all runs: {args.out}/compare.json, "
              f"figures: {', '.join(res.figures.values())}")
    return 0
