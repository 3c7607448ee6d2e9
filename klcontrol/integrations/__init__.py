"""Drop-in use of klcontrol controllers in your own training code.

- Plain PyTorch loop: no wrapper needed, ``beta = ctrl.step(kl.detach())``.
- Any framework, delay 0: :class:`BetaLoss`, a ``torch.nn.Module`` that steps
  the controller inside the loss and keeps its state in the model's
  ``state_dict``.
- DDP: :func:`all_reduce_mean` / :class:`DistributedController` give every
  rank the same β.
- Lightning: :class:`KLControlCallback` (needs the optional ``lightning``
  package; imported on first use so ``import klcontrol.integrations`` works
  without it).
- pythae: :class:`PythaeBetaCallback` (``klcontrol.integrations.pythae``).
- PyTorch-VAE: :func:`from_pytorch_vae_config` (``klcontrol.integrations.pytorch_vae``).

See ``docs/integration.md``.
"""
from .distributed import DistributedController, all_reduce_mean, distributed_world_size

__all__ = ["DistributedController", "all_reduce_mean", "distributed_world_size", "KLControlCallback",
           "disent_scales", "BetaLoss", "from_pytorch_vae_config", "pytorch_vae_controller", "PyTorchVAECapacity",
           "PythaeBetaCallback"]

# Imported on first use: each of these imports torch (or Lightning, or pythae), which
# `import klcontrol.integrations` must not.
_LAZY = {
    "KLControlCallback": "lightning",
    "disent_scales": "lightning",
    "BetaLoss": "module",
    "from_pytorch_vae_config": "pytorch_vae",
    "pytorch_vae_controller": "pytorch_vae",
    "PyTorchVAECapacity": "pytorch_vae",
    "PythaeBetaCallback": "pythae",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
