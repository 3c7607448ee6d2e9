"""``klcontrol evaluate RUN_DIR``: disentanglement metrics and diagnostic figures of a trained run."""
from __future__ import annotations

import os


def register(sub) -> None:
    """Register the ``evaluate`` command."""
    from klcontrol.commands.common import SEED, integer

    p = sub.add_parser(
        "evaluate",
        help="metrics (MIG, β-TCVAE MIG, RMIG, optional β-VAE score) and figures of a trained run",
        description="Encode procedural dSprites with a run's model and compute disentanglement metrics and figures "
        "(training curves, per-latent KL, latent traversals), written to RUN_DIR/eval/.",
        epilog="example:\n  klcontrol evaluate run1 --n-images 2000",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by `klcontrol train`")
    p.add_argument("--n-images", type=integer(0, 737_280), default=20000,
                   help="random images encoded for MIG, β-TCVAE MIG and RMIG (default 20000; 0 = all 737280)")
    p.add_argument("--beta-vae", action="store_true",
                   help="also Higgins' β-VAE score (encodes most of the factor grid: minutes on a CPU)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the image subset (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device that encodes (default cpu)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol evaluate``."""
    from klcontrol.cli import print_json
    from klcontrol.commands.common import check_device
    from klcontrol.vae_plant.metrics.evaluation import evaluate_run

    check_device(args.device)

    out = evaluate_run(args.run_dir, n_images=args.n_images, seed=args.seed, beta_vae=args.beta_vae,
                       device=args.device)
    if args.json:
        print_json(out)
    else:
        print(f"{args.run_dir}: {out['updates']} updates, recon {out['final_recon']:.2f}, KL {out['final_kl']:.3f} nats")
        print(f"MIG {out['mig']:.4f}   β-TCVAE MIG {out['mig_tcvae']:.4f}   RMIG {out['rmig']:.4f}"
              + (f"   β-VAE score {out['beta_vae_score']:.4f}" if "beta_vae_score" in out else "")
              + f"   (on {out['n_images']} images)")
        print(f"figures and metrics.json in {os.path.join(args.run_dir, 'eval')}")
    return 0
