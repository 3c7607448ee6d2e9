"""Disentanglement metrics on encoder outputs (NumPy in, floats out).

Which metric to use when comparing with which paper (see docs/metrics.md):

- ``mig(codes, factors)``: disentanglement_lib's discrete MIG (Locatello et al. 2019 and the
  many papers that use disentanglement_lib); encoder means only, 20 equal-width bins.
- ``mig_tcvae(means, logvars, factors)``: β-TCVAE MIG (Chen et al. 2018), the "MIG" of
  ControlVAE (Shao et al. 2020) and DynamicVAE; pass dSprites' scale, orientation, posX, posY.
- ``rmig(means, logvars, factors)``: robust MIG (Do & Tran 2020), DynamicVAE's Tables 1–2
  (per-factor values for shape, scale, orientation, posX, posY and their mean).
- ``beta_vae_score(codes_of_grid, factor_sizes)``: Higgins et al. (2017) classifier accuracy.
"""
from __future__ import annotations

from klcontrol.vae_plant.metrics.betavae import beta_vae_score
from klcontrol.vae_plant.metrics.inputs import factor_grid
from klcontrol.vae_plant.metrics.mig import discrete_entropy, discrete_mutual_info, discretize, mig
from klcontrol.vae_plant.metrics.posterior import mig_tcvae, rmig, sampled_mutual_info, soft_binned_mutual_info

__all__ = [
    "mig",
    "mig_tcvae",
    "rmig",
    "beta_vae_score",
    "factor_grid",
    "discretize",
    "discrete_mutual_info",
    "discrete_entropy",
    "soft_binned_mutual_info",
    "sampled_mutual_info",
    "DSPRITES_FACTOR_SIZES",
    "DSPRITES_FACTOR_NAMES",
]

#: Official dSprites grid (color, shape, scale, orientation, posX, posY).
DSPRITES_FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
DSPRITES_FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
