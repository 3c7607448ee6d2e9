"""The β-VAE of DynamicVAE (Table 3) / ControlVAE / β-VAE_H on 64×64 binary images.

Architecture, as in the official DynamicVAE and ControlVAE code (``BetaVAE_H``):

* encoder: 4×4 conv 32 → 32 → 64 → 64 (stride 2, padding 1, ReLU), 4×4 conv 256
  (stride 1, no padding, ReLU) giving a 256-dim feature (Table 3's "FC 256"),
  then a linear layer to 2×10 (means and log-variances);
* decoder: linear 10 → 256 (ReLU), 4×4 up-conv 256 → 64 (1×1 → 4×4), then 4×4
  up-convs 64 → 64 → 32 → 32 → 1 with stride 2 (ReLU between), giving logits.

Table 3 can also be read as an extra hidden FC layer of 256 units after the
256-channel conv; ``hidden_fc=True`` adds it (the official code does not have
it, so the default follows the code).

Bernoulli decoder.  Reductions (docs/design.md; the quantity set points refer to):

* ``recon`` = BCE-with-logits **summed over the 4096 pixels**, **mean over the batch**;
* ``kl`` = KL(q(z|x) ‖ N(0, I)) **summed over latents**, **mean over the batch**;
* ``kl_latent`` = the per-latent KL, mean over the batch (it sums to ``kl``).

Initialisation as in the official code: Kaiming-normal weights and zero biases
for ``Linear`` and ``Conv2d``; PyTorch defaults for the transposed convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BetaVAE", "bernoulli_recon", "gaussian_kl", "vae_losses"]


class BetaVAE(nn.Module):
    """Convolutional VAE for 1×64×64 images with a diagonal-Gaussian posterior.

    Parameters
    ----------
    latent_dim : int
        Number of latents (paper: 10).
    channels : int
        Image channels (dSprites: 1).
    hidden_fc : bool
        Add a 256-unit FC layer (ReLU) between the conv stack and the latent
        head (an alternative reading of Table 3; default off, as the code).
    """

    def __init__(self, latent_dim: int = 10, channels: int = 1, hidden_fc: bool = False):
        super().__init__()
        if int(latent_dim) < 1 or int(channels) < 1:
            raise ValueError(f"latent_dim and channels must be ≥ 1, got {latent_dim}, {channels}")
        self.latent_dim, self.channels, self.hidden_fc = int(latent_dim), int(channels), bool(hidden_fc)
        head = [nn.Linear(256, 256), nn.ReLU(True)] if hidden_fc else []
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(True),  # 32×32
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),  # 16×16
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True),  # 8×8
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(True),  # 4×4
            nn.Conv2d(64, 256, 4, 1), nn.ReLU(True),  # 1×1
            nn.Flatten(),
            *head,
            nn.Linear(256, 2 * latent_dim),
        )
        self.decoder_fc = nn.Linear(latent_dim, 256)
        self.decoder = nn.Sequential(
            nn.ReLU(True),
            nn.Unflatten(1, (256, 1, 1)),
            nn.ConvTranspose2d(256, 64, 4), nn.ReLU(True),  # 4×4
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(True),  # 8×8
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),  # 16×16
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True),  # 32×32
            nn.ConvTranspose2d(32, channels, 4, 2, 1),  # 64×64 logits
        )
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor):
        """Posterior parameters ``(mu, logvar)``, each ``(B, latent_dim)``.

        ``mu`` is what disentanglement metrics use as the representation.
        """
        h = self.encoder(x)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, channels, 64, 64)`` for latents ``z``."""
        return self.decoder(self.decoder_fc(z))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Encode, sample ``z = mu + exp(logvar/2)·noise`` and decode.

        Parameters
        ----------
        x : Tensor
            Images ``(B, channels, 64, 64)`` with values in [0, 1].
        noise : Tensor, optional
            Standard-normal noise ``(B, latent_dim)``; drawn from torch's global
            generator if omitted.

        Returns
        -------
        logits, mu, logvar
        """
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mu, logvar


def bernoulli_recon(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits summed over pixels, mean over the batch (nats per image)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-latent KL(N(mu, exp(logvar)) ‖ N(0, 1)), mean over the batch: shape ``(latent_dim,)``."""
    return (0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)).mean(0)


def vae_losses(model: BetaVAE, x: torch.Tensor, noise: torch.Tensor | None = None):
    """One forward pass: ``(recon, kl, kl_latent)`` with the reductions of the module docstring."""
    logits, mu, logvar = model(x, noise)
    kl_latent = gaussian_kl(mu.float(), logvar.float())
    return bernoulli_recon(logits.float(), x), kl_latent.sum(), kl_latent
