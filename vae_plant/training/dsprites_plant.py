"""klcontrol's own β-VAE as a plant of the protocol (:mod:`klcontrol.realplant`): ``--plant
klcontrol.vae_plant.training.dsprites_plant:make``.

The same model, data and optimizer as the trainer's ``cpu``/``paper`` schedules (the Burgess/DynamicVAE conv
β-VAE on procedural dSprites, Adam with betas (0.9, 0.999)), built with :class:`klcontrol.realplant.TorchPlant`:
what a user's own model looks like in this protocol. The trainer (:mod:`klcontrol.vae_plant.training.trainer`)
stays the default of ``identify`` and ``verify-stability`` for this model: it is faster on a GPU (device-resident
traces, no host sync per update) and its runs are the shipped ones.
"""
from __future__ import annotations

__all__ = ["make"]


def make(seed: int = 0, batch_size: int = 16, device: str = "cpu", lr: float = 1e-4, latent_dim: int = 10):
    """A fresh dSprites β-VAE plant: model, Adam and a batch stream drawn by the plant's own generator."""
    import torch

    from klcontrol.realplant import TorchPlant
    from klcontrol.vae_plant.data.dsprites import DSprites
    from klcontrol.vae_plant.training.model import BetaVAE, vae_losses

    with torch.random.fork_rng(devices=[]):  # the weights come from `seed`, the caller's RNG is left alone
        torch.manual_seed(int(seed))
        model = BetaVAE(latent_dim=latent_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    data = DSprites(device=device)

    def sample(generator):
        return data.sample(int(batch_size), generator)[0]

    def losses(m, x):
        recon, kl, _ = vae_losses(m, x)
        return recon, kl

    return TorchPlant(model, opt, losses, sample=sample, seed=int(seed), device=device)
