"""Disentanglement metrics of a trained dSprites model: encode images, then score the codes.

One place decides which images are encoded and which factors each metric sees, so
``klcontrol evaluate`` and ``klcontrol compare`` report the same numbers for the same model:

- MIG (disentanglement_lib) on shape, scale, orientation, posX, posY (colour is constant);
- β-TCVAE MIG (ControlVAE, DynamicVAE) on scale, orientation, posX, posY (Chen et al.);
- RMIG (DynamicVAE Tables 1–2) on the five varying factors, with per-factor values;
- Higgins' β-VAE score (optional) with the dSprites fixed factors scale, orientation, posX, posY;
  only the images its sampled pairs need are encoded.
"""
from __future__ import annotations

import numpy as np
import torch

from klcontrol.vae_plant.data.dsprites import DSprites
from klcontrol.vae_plant.metrics import DSPRITES_FACTOR_NAMES, beta_vae_score, mig, mig_tcvae, rmig

__all__ = ["encode_indices", "disentanglement", "evaluate_run"]


@torch.no_grad()
def encode_indices(model, dataset: DSprites, indices, batch_size: int = 2048):
    """Encoder means and log-variances of dataset images, in the order of ``indices``.

    Parameters
    ----------
    model : BetaVAE
    dataset : DSprites
    indices : array_like of int
        Dataset indices.
    batch_size : int

    Returns
    -------
    means, logvars : numpy.ndarray, shape (len(indices), latent_dim)
    """
    dev = next(model.parameters()).device
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    mus, lvs = [], []
    for i in range(0, len(idx), batch_size):
        j = torch.as_tensor(idx[i:i + batch_size], device=dataset.device)
        mu, lv = model.encode(dataset.images(j).to(dev))
        mus.append(mu.float().cpu())
        lvs.append(lv.float().cpu())
    if not mus:
        raise ValueError("no indices to encode")
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


def disentanglement(model, dataset: DSprites | None = None, *, n_images: int = 20000, seed: int = 0,
                    beta_vae: dict | None = None) -> dict:
    """MIG, β-TCVAE MIG, RMIG (per factor too) and optionally the β-VAE score of a model.

    Parameters
    ----------
    model : BetaVAE
        In eval mode, on any device.
    dataset : DSprites, optional
        Default: the procedural set on the CPU.
    n_images : int
        Images drawn without replacement (fixed by ``seed``) for the MIG-type metrics; 0 = all.
    seed : int
        Seed of the image subset (and of the β-VAE score's pairs).
    beta_vae : dict, optional
        If given, also compute :func:`klcontrol.vae_plant.metrics.beta_vae_score` with these keyword
        arguments (e.g. ``{}`` for Higgins' sizes, or smaller ``batch_size``/``num_train``/
        ``num_eval`` for a quick estimate).

    Returns
    -------
    dict
        ``n_images, mig, mig_tcvae, rmig, rmig_per_factor`` (name → value) and
        ``beta_vae_score`` when requested.
    """
    if isinstance(n_images, bool) or int(n_images) != n_images or n_images < 0:
        raise ValueError(f"n_images must be a non-negative integer, got {n_images!r}")
    ds = DSprites() if dataset is None else dataset
    n = len(ds) if n_images == 0 else min(int(n_images), len(ds))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    means, logvars = encode_indices(model, ds, idx)
    classes = ds.classes(torch.as_tensor(idx, device=ds.device)).cpu().numpy()
    out = {
        "n_images": n,
        "mig": float(mig(means, classes[:, 1:])),
        "mig_tcvae": float(mig_tcvae(means, logvars, classes[:, 2:])),
    }
    score, per = rmig(means, logvars, classes[:, 1:], per_factor=True)
    out["rmig"] = float(score)
    out["rmig_per_factor"] = {name: (None if not np.isfinite(v) else float(v))
                              for name, v in zip(DSPRITES_FACTOR_NAMES[1:], per)}
    if beta_vae is not None:
        kw = {"fixed_factors": (2, 3, 4, 5), "seed": seed, **beta_vae}
        out["beta_vae_score"] = float(beta_vae_score(lambda i: encode_indices(model, ds, i)[0], ds.factor_sizes, **kw))
    return out


def evaluate_run(run_dir, *, n_images: int = 20000, seed: int = 0, beta_vae: bool = False, device=None) -> dict:
    """Metrics and figures of a ``klcontrol train`` run, written to ``RUN_DIR/eval`` (``klcontrol evaluate``).

    Parameters
    ----------
    run_dir : str
        Run directory.
    n_images, seed : int
        Images for MIG, β-TCVAE MIG and RMIG (0: all 737 280) and their sampling seed.
    beta_vae : bool
        Also compute Higgins' β-VAE score (at its paper sizes).
    device : str, optional
        Where the model is evaluated (default: the run's).

    Returns
    -------
    dict
        ``run_dir``, ``updates``, ``final_recon`` and ``final_kl`` (means of the last 100 rows), the metrics of
        :func:`disentanglement` and ``figures`` (training curves, per-latent KL, traversals); also written to
        ``RUN_DIR/eval/metrics.json``.

    Raises
    ------
    ValueError
        ``run_dir`` is not a run directory, or ``n_images`` < 0.
    """
    import json
    import os

    from klcontrol.fileio import atomic_write
    from klcontrol.vae_plant.metrics.diagnostics import plot_latent_kl, plot_runs, traversals_figure
    from klcontrol.vae_plant.training.trainer import load_run

    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir} is not a directory written by `klcontrol train`")
    if n_images < 0:
        raise ValueError(f"--n-images must be ≥ 0, got {n_images}")
    res = load_run(run_dir, device=device)
    out = {"run_dir": run_dir, "updates": res.step, "final_recon": float(np.mean(res.trace["recon"][-100:])),
           "final_kl": float(np.mean(res.trace["kl"][-100:]))}
    out.update(disentanglement(res.model, n_images=n_images, seed=seed, beta_vae={} if beta_vae else None))
    eval_dir = os.path.join(run_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    t = res.trace
    figs = {name: os.path.join(eval_dir, f"{name}.png") for name in ("training", "latent_kl", "traversals")}
    plot_runs({os.path.basename(os.path.normpath(run_dir)): {k: t[k] for k in ("step", "beta", "kl", "recon",
                                                                               "setpoint")}},
              path=figs["training"])
    plot_latent_kl(t["step"], t["kl_latent"], path=figs["latent_kl"])
    traversals_figure(res, figs["traversals"])
    out["figures"] = figs
    with atomic_write(os.path.join(eval_dir, "metrics.json")) as fh:  # a killed evaluate keeps the old metrics
        json.dump(out, fh, indent=2)
    return out
