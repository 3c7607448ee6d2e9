"""Named controllers and training schedules for the dSprites β-VAE.

Controllers (``make_controller(name)``), with the reading of each paper:

``fixed``
    β-VAE_H (Higgins et al. 2017): constant β = 4.
``capacity``
    β-VAE_B (Burgess et al. 2018): ``γ|KL − C(t)|`` with γ = 1000 and C rising
    linearly from 0 to 25 nats over 100 000 steps, run as the relay
    ``β = γ·sign(KL − C)`` (β is negative while KL < C).
``controlvae``
    ControlVAE (Shao et al. 2020), :meth:`PositionalPI.controlvae_dsprites`
    (``official=False``): positional PI ``β = Kp·σ(m − C) − Ki·Σ(C − m) + 1``
    with the official dSprites gains Kp = 0.01, Ki = 0.001, β ≥ 1 (β_min = 1
    is also the offset), no filter, set point 0.5 nats raised by 0.15 every
    5000 steps (a pure step schedule) up to 18 nats; klcontrol's conditional
    integration and set-point phase.
``controlvae-official``
    Same gains, ``official=True``: the official ``P_PID.py`` anti-windup and
    set-point phase, and the controller steps already on update 0's KL, so
    the run's β follows the official loop call for call.
``dynamicvae``
    DynamicVAE (paper, Appendix A): incremental PI (Eq. 10, feedback sign as
    the official code) with Kp = 0.01, Ki = 0.005, β(0) = 150, moving average
    T = 5, hybrid step-ramp set point 0.5 → 20 nats (+0.15 per 6000 steps, the
    first 1000 of which ramp).  Clamped-state saturation (docs/design.md).
``dynamicvae-official``
    The official 2D-sprites code instead of the paper: β(0) = 50 (not 150),
    unclamped state with the I-term frozen below β_min = 0.1, the zero-filled
    KL window (no priming), the official set-point phase, and the controller
    steps already on update 0's KL, as the official loop does.
``dynamicvae-p``
    Ablation "DynamicVAE-P" (paper Sec. 4.2): "positional PI controller with no
    initialization to a large β(0), instead of the incremental PI initialized
    to a large β(0)".  Read as: the ControlVAE-form positional PI with
    DynamicVAE's gains (Kp = 0.01, Ki = 0.005), its moving average (T = 5) and
    its hybrid annealing, β_min = 0 (so β may fall below 1, like DynamicVAE),
    β(0) given by the law (≈ Kp·σ(y0 − C), i.e. small).  The "P" names the
    positional form, not a P-only controller: the paper calls it a PI.
``dynamicvae-step``
    Ablation "DynamicVAE-step": "solely adopts step function without ramp
    function" — the same set point levels and 6000-step periods, each
    increase applied as a jump (ramp of one step).
``dynamicvae-t``
    Ablation "DynamicVAE-t": "directly uses the output KL-divergence at time t
    as a feedback ... without using moving average" — window T = 1.

``geco``
    GECO (Rezende & Viola 2018, Alg. 1) on the reconstruction constraint
    ``recon ≤ κ``: β = 1/λ, ``β ← β·exp(−η·C_ma)``, α = 0.99, λ_init = 1; the
    controller measures the reconstruction loss.  κ = 100 nats and η = 1e-4
    are klcontrol's choices (the paper has no dSprites setting; docs/core.md).
``pid-lagrangian``
    PID Lagrangian (Stooke et al. 2020, Alg. 2) on ``KL ≤ C(t)``: β = λ with
    Kp = 0.0025, Ki = 0.005, Kd = 0 (klcontrol's choice: DynamicVAE's
    linearised gains), DynamicVAE's set point and window.
``cyclical``
    Cyclical annealing (Fu et al. 2019): β rises from 0 to 1 over the first
    half of each of 4 cycles of an 800 000-step budget, open loop.
``adaptive``
    :class:`klcontrol.AdaptivePI` in DynamicVAE's loop (set point, β0 = 150,
    window 5, fallback gains 0.01, 0.005): RLS estimate of the plant, gains
    from the offline robust table while the estimate is trusted (prior
    a = 1/2500, the paper's dSprites plant).

Schedules (``SCHEDULES``): ``tiny`` (seconds on a laptop CPU; tests use it), ``demo``
(``klcontrol demo``: batch 32, lr 1e-3, 800 updates),
``cpu`` (a short real run on a CPU), ``paper`` (batch 128, the full ~800k-step
DynamicVAE schedule).  All use Adam, lr 1e-4 (``demo``: 1e-3), betas (0.9, 0.999) as the
official code (the paper text says β2 = 0.99).
"""
from __future__ import annotations

from dataclasses import dataclass

from klcontrol.controllers import Controller
from klcontrol.papers import DYNAMICVAE_DSPRITES_STEPS
from klcontrol.registry import PRESETS as CONTROLLERS
from klcontrol.registry import PRIMED, STEP_FIRST, controlvae_setpoint, make_preset

__all__ = ["CONTROLLERS", "SCHEDULES", "Schedule", "make_controller", "primes", "first_update", "controlvae_setpoint"]


def make_controller(name: str) -> Controller:
    """A fresh controller for a preset name (:func:`klcontrol.registry.make_preset`).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`CONTROLLERS`.
    """
    return make_preset(name)


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
    "demo": Schedule(batch_size=32, steps=800, checkpoint_every=0, flush_every=50, lr=1e-3),
    # TensorBoard every 10th step (trace.csv keeps every step): an event costs ~75 µs on a CPU, 0.3 % of a step.
    "cpu": Schedule(batch_size=32, steps=5000, checkpoint_every=1000, flush_every=100, tensorboard_every=10),
    "paper": Schedule(batch_size=128, steps=DYNAMICVAE_DSPRITES_STEPS, checkpoint_every=50_000, flush_every=2000, tensorboard_every=10),
}


def schedule(name: str) -> Schedule:
    """The schedule of a preset name; ``ValueError`` naming the choices if unknown."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name]
