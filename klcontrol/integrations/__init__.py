"""Drop-in use of klcontrol controllers in your own training code.

- Plain PyTorch loop: no wrapper needed, ``beta = ctrl.step(kl.detach())``.
- DDP: :func:`all_reduce_mean` / :class:`DistributedController` give every
  rank the same β.
- Lightning: :class:`KLControlCallback` (needs the optional ``lightning``
  package; imported on first use so ``import klcontrol.integrations`` works
  without it).

See ``docs/integration.md``.
"""
from .distributed import DistributedController, all_reduce_mean, distributed_world_size

__all__ = ["DistributedController", "all_reduce_mean", "distributed_world_size", "KLControlCallback",
           "disent_scales"]


def __getattr__(name):
    if name in ("KLControlCallback", "disent_scales"):
        from . import lightning

        return getattr(lightning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
