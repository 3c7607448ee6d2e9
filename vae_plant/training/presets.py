"""Named controllers and training schedules for the dSprites β-VAE.

Schedules (``SCHEDULES``): ``tiny`` (seconds on a laptop CPU; tests use it), ``demo``
(``klcontrol demo``: batch 32, lr 1e-3, 800 updates),
``cpu`` (a short real run on a CPU), ``paper`` (batch 128, the full ~800k-step
DynamicVAE schedule).  All use Adam, lr 1e-4 (``demo``: 1e-3), betas (0.9, 0.999) as the
official code (the paper text says β2 = 0.99).

Controllers: the presets of :data:`klcontrol.registry.PRESETS` (``klcontrol.registry.make_preset(name)``),
with the reading of each paper (this list is generated from the registry's records at import):

"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from klcontrol.papers import DYNAMICVAE_DSPRITES_STEPS
from klcontrol.registry import PRESETS, PRIMED, STEP_FIRST, controlvae_setpoint

__all__ = ["SCHEDULES", "Schedule", "primes", "first_update", "controlvae_setpoint"]

#: The module docstring's list of presets, generated from the registry's records (nothing restates them here).
__doc__ = (__doc__ or "") + "".join(f"``{p.name}``\n{textwrap.indent(p.description, '    ')}\n" for p in PRESETS.values())


def primes(name: str) -> bool:
    """Whether the trainer primes this preset's KL history with the initial model's KL."""
    return name in PRIMED


def first_update(name: str):
    """How the trainer starts this preset: its ``prime`` setting.

    Returns
    -------
    True or "step"
        ``True``: prime the KL history with the initial model's KL and use
        ``controller.beta`` for update 0.  ``"step"`` (the official presets,
        :data:`klcontrol.registry.STEP_FIRST`): no priming; update 0's β is
        ``controller.step(KL of update 0's forward pass)``, as the official loops.
    """
    return "step" if name in STEP_FIRST else True


@dataclass(frozen=True)
class Schedule:
    """Training schedule of a preset.

    Attributes
    ----------
    batch_size, steps : int
        Defaults for the run.
    checkpoint_every : int
        Steps between checkpoints (0: only at the end).
    flush_every : int
        Steps between host syncs that write the trace.
    tensorboard_every : int
        Stride of the TensorBoard scalars (the CSV has every step).
    lr : float
    adam_betas : tuple
    """

    batch_size: int
    steps: int
    checkpoint_every: int
    flush_every: int
    tensorboard_every: int = 1
    lr: float = 1e-4
    adam_betas: tuple = (0.9, 0.999)


SCHEDULES = {
    "tiny": Schedule(batch_size=8, steps=40, checkpoint_every=0, flush_every=10),
    # `klcontrol demo`: a ten times higher learning rate, so that a few hundred updates learn factors.
    "demo": Schedule(batch_size=32, steps=800, checkpoint_every=0, flush_every=10, lr=1e-3),
    # TensorBoard every 10th step (trace.csv keeps every step): an event costs ~75 µs on a CPU, 0.3 % of a step.
    "cpu": Schedule(batch_size=32, steps=5000, checkpoint_every=1000, flush_every=100, tensorboard_every=10),
    "paper": Schedule(batch_size=128, steps=DYNAMICVAE_DSPRITES_STEPS, checkpoint_every=50_000, flush_every=2000, tensorboard_every=10),
}


def schedule(name: str) -> Schedule:
    """The schedule of a preset name; ``ValueError`` naming the choices if unknown."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name]
