"""The papers' constants, each written once (imported everywhere else).

Sources (see docs/references.md for where the papers and their official code
disagree, and which preset follows which):

* DynamicVAE (Shao et al., "Rethinking controllable variational autoencoders"):
  gains, β(0), filter window and the dSprites set-point schedule (Appendix A);
  the fitted first-order plants of its Table 5, ``g(β) = A·exp(−kβ)`` with the
  slope ``g′(0) = −A·k`` that its stability theorem uses.
* ControlVAE (Shao et al. 2020, official dSprites code): positional PI gains,
  β_min and its step set point.
* β-VAE_B (Burgess et al. 2018): capacity relay γ and the capacity ramp.
* β-VAE_H (Higgins et al. 2017): the fixed β for dSprites.
* GECO (Rezende & Viola 2018, Alg. 1), the PID Lagrangian (Stooke, Achiam &
  Abbeel 2020, Alg. 2) and cyclical annealing (Fu et al. 2019, Eq. 6): their
  published constants (α = 0.99, λ_init = 1; M = 4, R = 0.5) and klcontrol's
  own dSprites choices where the papers give none (marked as such).

This module imports nothing from klcontrol, so every module can import it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PaperPlant",
    "PAPER_PLANTS",
    "DYNAMICVAE_GAINS",
    "DYNAMICVAE_WINDOW",
    "DYNAMICVAE_BETA0",
    "DYNAMICVAE_OFFICIAL_BETA0",
    "DYNAMICVAE_OFFICIAL_BETA_MIN",
    "DYNAMICVAE_DSPRITES_SETPOINT",
    "DYNAMICVAE_DSPRITES_STEPS",
    "CONTROLVAE_GAINS",
    "CONTROLVAE_BETA_MIN",
    "CONTROLVAE_DSPRITES_SETPOINT",
    "BURGESS_GAMMA",
    "BURGESS_DSPRITES_CAPACITY",
    "HIGGINS_DSPRITES_BETA",
    "GECO_ALPHA",
    "GECO_LAMBDA0",
    "GECO_DSPRITES_KAPPA",
    "GECO_DSPRITES_ETA",
    "GECO_BETA_RANGE",
    "PID_LAGRANGIAN_DSPRITES_GAINS",
    "CYCLICAL_CYCLES",
    "CYCLICAL_RATIO",
    "CYCLICAL_RANGE",
    "CYCLICAL_DSPRITES_STEPS",
]


@dataclass(frozen=True)
class PaperPlant:
    """A first-order plant ``y(t) = y(t−1)/(1+a) + a/(1+a)·A·exp(−kβ(t))`` from a paper.

    Attributes
    ----------
    name : str
        Data set.
    a, A, k : float
        Rate, ``g(0)`` (nats) and decay of the exponential gain.
    gprime0 : float
        The slope bound ``g′(0)`` as the paper states it (≈ −A·k, rounded there),
        which its stability theorem uses.
    """

    name: str
    a: float
    A: float
    k: float
    gprime0: float

    def plant(self):
        """The plant as a :class:`klcontrol.FirstOrderPlant`."""
        from .plant import ExpGain, FirstOrderPlant

        return FirstOrderPlant(self.a, ExpGain(self.A, self.k))


#: DynamicVAE's Table 5 plants; dSprites is stated as g′(0) = −3.2 with k = 0.121.
PAPER_PLANTS = {
    "dsprites": PaperPlant("dsprites", 1 / 2500, 3.2 / 0.121, 0.121, -3.2),
    "mnist": PaperPlant("mnist", 1 / 5000, 26.38, 0.0476, -1.26),
}

#: DynamicVAE's hand-picked gains (Kp, Ki), with the feedback sign of its official code.
DYNAMICVAE_GAINS = (0.01, 0.005)
#: DynamicVAE's moving-average window T.
DYNAMICVAE_WINDOW = 5
#: DynamicVAE's β(0) in the paper's dSprites setting.
DYNAMICVAE_BETA0 = 150.0
#: DynamicVAE's β(0) in its official 2D-sprites code (``I_PID.py``: ``W_k1 = 50``), not the paper's 150.
DYNAMICVAE_OFFICIAL_BETA0 = 50.0
#: DynamicVAE's official lower clamp and I-freeze threshold (``I_PID.py``: ``W_min = 0.1``).
DYNAMICVAE_OFFICIAL_BETA_MIN = 0.1
#: Length of DynamicVAE's dSprites training (updates): the reference for compressing schedules to a budget.
DYNAMICVAE_DSPRITES_STEPS = 800_000
#: DynamicVAE's dSprites set point as ``StepRamp(start, stop, step, period, ramp)`` arguments.
DYNAMICVAE_DSPRITES_SETPOINT = (0.5, 20.0, 0.15, 6000, 1000)

#: ControlVAE's official dSprites gains (Kp, Ki).
CONTROLVAE_GAINS = (0.01, 0.001)
#: ControlVAE's β_min (also the offset of its positional law).
CONTROLVAE_BETA_MIN = 1.0
#: ControlVAE's dSprites set point (+0.15 nats every 5000 steps, jumps) as ``StepRamp`` arguments.
CONTROLVAE_DSPRITES_SETPOINT = (0.5, 18.0, 0.15, 5000, 1)

#: Burgess et al.'s capacity weight γ.
BURGESS_GAMMA = 1000.0
#: Burgess et al.'s dSprites capacity ramp as ``LinearRamp(start, stop, steps)`` arguments.
BURGESS_DSPRITES_CAPACITY = (0.0, 25.0, 100_000)

#: Higgins et al.'s β for dSprites.
HIGGINS_DSPRITES_BETA = 4.0

#: GECO's moving-average weight α (Rezende & Viola 2018, Alg. 1 and Sec. 4: 0.99).
GECO_ALPHA = 0.99
#: GECO's initial multiplier λ_init (Alg. 1: 1), i.e. β(0) = 1.
GECO_LAMBDA0 = 1.0
#: klcontrol's choice (the paper has no dSprites setting): tolerance κ = 100 nats of reconstruction
#: (summed Bernoulli NLL per image), between ControlVAE's 94 and DynamicVAE's 107 at the CPU budget (README).
GECO_DSPRITES_KAPPA = 100.0
#: klcontrol's choice: η = 1e-4 per nat (Alg. 1 writes only "∝"): 10 nats of violation change β by 0.1 % per update.
GECO_DSPRITES_ETA = 1e-4
#: klcontrol's clamps of GECO's β = 1/λ (the paper has none; λ must stay positive and finite).
GECO_BETA_RANGE = (1e-3, 1e3)

#: klcontrol's dSprites gains (Kp, Ki, Kd) of the PID Lagrangian on KL ≤ C (the paper's are for Safety Gym
#: costs): Ki = DynamicVAE's 0.005, Kp = DynamicVAE's 0.01 times σ′(0) = 1/4 (the same linearised loop as
#: DynamicVAE's gains in the positional form), Kd = 0 (so the exact linear analysis applies; set kd to use it).
PID_LAGRANGIAN_DSPRITES_GAINS = (0.0025, 0.005, 0.0)

#: Fu et al.'s cyclical schedule: M = 4 cycles, proportion R = 0.5 rising, β from 0 to 1.
CYCLICAL_CYCLES = 4
CYCLICAL_RATIO = 0.5
CYCLICAL_RANGE = (0.0, 1.0)
#: klcontrol's choice of T for the ``cyclical`` preset: DynamicVAE's dSprites budget (its set point's length).
CYCLICAL_DSPRITES_STEPS = DYNAMICVAE_DSPRITES_STEPS
