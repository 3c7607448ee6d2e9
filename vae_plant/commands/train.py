"""``klcontrol train``: train the dSprites β-VAE with a β controller (the real plant)."""
from __future__ import annotations

import sys

from klcontrol.commands.common import (
    BATCH_SIZE,
    SEED,
    THREADS,
    TRAIN_STEPS,
    add_progress_arg,
    check_device,
    integer,
    show_progress,
)
from klcontrol.registry import PRESETS
from klcontrol.vae_plant.training.presets import SCHEDULES  # no torch import: --help stays fast

SCHEDULE_NAMES = tuple(SCHEDULES)
CONTROLLER_NAMES = tuple(PRESETS)


def register(sub) -> None:
    """Register the ``train`` command."""
    p = sub.add_parser(
        "train",
        help="train the dSprites β-VAE with a β controller; write trace.csv, TensorBoard events, checkpoints",
        description="Train the DynamicVAE/ControlVAE β-VAE on dSprites (procedural, or the official .npz with "
        "--data) with β set each step by a controller. Writes DIR/trace.csv (step, beta, kl, recon, setpoint, "
        "kl_0..kl_9), TensorBoard events in DIR/tb, checkpoints in DIR/checkpoints and DIR/config.json. "
        "--resume DIR continues a run up to --steps; the result is byte-identical to an uninterrupted run on a CPU. "
        "The directory is locked while a trainer uses it; checkpoints are verified (SHA-256) on resume.",
        epilog="example:\n  klcontrol train --preset tiny --controller dynamicvae --out run1",
    )
    p.add_argument("--preset", default=None, help=f"schedule: one of {', '.join(SCHEDULE_NAMES)} (default tiny)")
    p.add_argument("--controller", default=None,
                   help=f"β controller: one of {', '.join(CONTROLLER_NAMES)} (default dynamicvae)")
    p.add_argument("--steps", type=TRAIN_STEPS, default=None, help="number of updates (default: the preset's)")
    p.add_argument("--seed", type=SEED, default=None, help="seed of initialisation, batches and noise (default 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (new)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR up to --steps")
    p.add_argument("--from-step", type=integer(0), default=None, metavar="K",
                   help="with --resume: continue from checkpoint K instead of the latest (e.g. the latest is "
                   "corrupt); later checkpoints are renamed *.discarded")
    p.add_argument("--restart", action="store_true",
                   help="start a run that stopped before its first good checkpoint again from step 0 "
                   "(--resume DIR: its stored settings; --out DIR: the given ones); refused if it has one")
    p.add_argument("--checkpoint-every", type=integer(0), default=None, metavar="K",
                   help="steps between checkpoints (0: only at the end; default: the preset's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="training device (default: cuda if available)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=None, metavar="B",
                   help="images per update (default: the preset's)")
    p.add_argument("--data", default=None, metavar="NPZ", help="official dSprites .npz (default: procedural)")
    g = p.add_argument_group("speed options (off by default; see benchmarks/train_speed.py)")
    g.add_argument("--compile", choices=("off", "default", "reduce-overhead", "max-autotune"), default=None,
                   help="torch.compile the forward/loss; reduce-overhead uses CUDA graphs (default off)")
    g.add_argument("--amp", action="store_const", const=True, default=None, help="bf16 autocast (default off)")
    g.add_argument("--channels-last", action="store_const", const=True, default=None,
                   help="channels-last memory format (default off)")
    g.add_argument("--fused-adam", action="store_const", const=True, default=None, help="fused Adam (default off)")
    g.add_argument("--flush-every", type=integer(1), default=None, metavar="N",
                   help="steps between trace flushes (default: the preset's)")
    g.add_argument("--threads", type=THREADS, default=None, metavar="N",
                   help="torch CPU threads (default: torch's; on resume the run's, which is stored because it "
                   "changes the trace bytes: another value is refused)")
    add_progress_arg(p)
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol train``."""
    from klcontrol.cli import print_json

    if args.preset is not None and args.preset not in SCHEDULE_NAMES:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
    if args.controller is not None and args.controller not in CONTROLLER_NAMES:
        raise ValueError(f"unknown controller {args.controller!r}; choose one of {', '.join(CONTROLLER_NAMES)}")
    if args.resume is None and args.out is None:
        raise ValueError("give --out DIR for a new run or --resume DIR to continue one")
    if args.resume is not None and args.out is not None and _norm(args.out) != _norm(args.resume):
        raise ValueError(f"--out {args.out} and --resume {args.resume} name different directories; "
                         "a resumed run continues in its own directory")
    if args.data is not None:
        import os

        if not os.path.isfile(args.data):
            raise ValueError(f"--data {args.data}: " + ("not a regular file (the official dSprites .npz is one)"
                                                        if os.path.exists(args.data) else "not found"))
    check_device(args.device)
    from klcontrol.vae_plant.training.trainer import train

    res = train(
        args.resume or args.out, preset=args.preset, controller=args.controller, steps=args.steps, seed=args.seed,
        batch_size=args.batch_size, device=args.device, checkpoint_every=args.checkpoint_every,
        flush_every=args.flush_every, data=args.data, compile=args.compile, amp=args.amp,
        channels_last=args.channels_last, fused_adam=args.fused_adam, resume=args.resume is not None,
        progress=show_progress(args), command=" ".join(["klcontrol"] + sys.argv[1:]),
        threads=args.threads, restart=args.restart, from_step=args.from_step,
    )
    t = res.trace
    summary = dict(run_dir=res.run_dir, steps=res.step, final_beta=float(t["beta"][-1]), final_kl=float(t["kl"][-1]),
                   final_recon=float(t["recon"][-1]), final_setpoint=float(t["setpoint"][-1]),
                   controller=res.config["settings"]["controller"], preset=res.config["settings"]["preset"])
    if args.json:
        print_json(summary)
    else:
        print(f"{summary['controller']} ({summary['preset']}): {res.step} steps; final β {summary['final_beta']:.4g}, "
              f"KL {summary['final_kl']:.4g} (set point {summary['final_setpoint']:.4g}), recon {summary['final_recon']:.4g}")
        print(f"trace: {res.run_dir}/trace.csv, TensorBoard: {res.run_dir}/tb, checkpoints: {res.run_dir}/checkpoints")
    return 0


def _norm(p):
    import os

    return os.path.realpath(p)
