"""``klcontrol evaluate RUN_DIR``: disentanglement metrics and diagnostic figures of a trained run."""
from __future__ import annotations

import json
import os

import numpy as np


def register(sub) -> None:
    """Register the ``evaluate`` command."""
    p = sub.add_parser(
        "evaluate",
        help="metrics (MIG, β-TCVAE MIG, RMIG, optional β-VAE score) and figures of a trained run",
        description="Encode procedural dSprites with a run's model and compute disentanglement metrics and figures "
        "(training curves, per-latent KL, latent traversals), written to RUN_DIR/eval/.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by `klcontrol train`")
    p.add_argument("--n-images", type=int, default=20000,
                   help="random images encoded for MIG, β-TCVAE MIG and RMIG (default 20000; 0 = all 737280)")
    p.add_argument("--beta-vae", action="store_true",
                   help="also Higgins' β-VAE score (encodes most of the factor grid: minutes on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol evaluate``."""
    from vae_plant.diagnostics import plot_latent_kl, plot_runs
    from vae_plant.evaluation import disentanglement
    from vae_plant.train import load_run

    from klcontrol.cli import print_json
    from vae_plant.demo import traversals_figure

    if not os.path.isdir(args.run_dir):
        raise ValueError(f"{args.run_dir} is not a directory written by `klcontrol train`")
    if args.n_images < 0:
        raise ValueError(f"--n-images must be ≥ 0, got {args.n_images}")
    res = load_run(args.run_dir, device=args.device)
    out = {
        "run_dir": args.run_dir, "updates": res.step,
        "final_recon": float(np.mean(res.trace["recon"][-100:])),
        "final_kl": float(np.mean(res.trace["kl"][-100:])),
    }
    out.update(disentanglement(res.model, n_images=args.n_images, seed=args.seed,
                               beta_vae={} if args.beta_vae else None))
    n = out["n_images"]

    eval_dir = os.path.join(args.run_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    t = res.trace
    figs = {
        "training": os.path.join(eval_dir, "training.png"),
        "latent_kl": os.path.join(eval_dir, "latent_kl.png"),
        "traversals": os.path.join(eval_dir, "traversals.png"),
    }
    plot_runs({os.path.basename(os.path.normpath(args.run_dir)): {k: t[k] for k in ("step", "beta", "kl", "recon", "setpoint")}},
              path=figs["training"])
    plot_latent_kl(t["step"], t["kl_latent"], path=figs["latent_kl"])
    traversals_figure(res, figs["traversals"])
    out["figures"] = figs
    with open(os.path.join(eval_dir, "metrics.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    if args.json:
        print_json(out)
    else:
        print(f"{args.run_dir}: {res.step} updates, recon {out['final_recon']:.2f}, KL {out['final_kl']:.3f} nats")
        print(f"MIG {out['mig']:.4f}   β-TCVAE MIG {out['mig_tcvae']:.4f}   RMIG {out['rmig']:.4f}"
              + (f"   β-VAE score {out['beta_vae_score']:.4f}" if "beta_vae_score" in out else "")
              + f"   (on {n} images)")
        print(f"figures and metrics.json in {eval_dir}")
    return 0
