"""A tiny VAE written against the plant protocol (docs/your_vae.md), for the tests: nothing from vae_plant."""
import torch
from torch import nn

from klcontrol.realplant import TorchPlant


class VAE(nn.Module):
    def __init__(self, d=8, z=2):
        super().__init__()
        self.enc = nn.Linear(d, 2 * z); self.dec = nn.Linear(z, d)
    def losses(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        zz = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = ((self.dec(zz) - x) ** 2).sum(1).mean()
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
        return recon, kl

def make(seed=0):
    torch.manual_seed(seed)
    data = torch.randn(256, 8, generator=torch.Generator().manual_seed(123)) * torch.linspace(0.2, 3, 8)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return TorchPlant(model, opt, lambda m, x: m.losses(x), data=data, batch_size=32, seed=seed)
