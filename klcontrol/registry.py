"""One registry: controller kinds (the vocabulary of the CLI and the analysis) and named presets.

Two lists, each written once and imported by the CLI, the analysis and the trainer:

Controller kinds (:data:`CONTROLLER_KINDS`)
    How a user names a control *law* with free gains: ``incremental``
    (DynamicVAE's incremental PI, clamped state), ``incremental-official`` (its
    official code's saturation), ``positional`` (ControlVAE's positional PI),
    ``positional-official`` (its official code's anti-windup),
    ``capacity`` (Burgess' relay), ``fixed``.  :func:`make_controller` builds one
    from gains; :data:`LINEAR_KINDS` are those the stability analysis linearises.
Presets (:data:`PRESETS`)
    Fully specified controllers of the papers (gains, set point, filter, β(0)),
    one :class:`Preset` record each (factory, table name, the reading of the
    paper, how the trainer starts it), as the trainer and ``klcontrol compare``
    use them (``geco`` measures the reconstruction loss,
    :attr:`~klcontrol.Controller.measures`; ``cyclical`` is open loop); see
    :mod:`klcontrol.papers` for the constants and docs/references.md for which
    preset follows the paper and which the official code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from . import papers
from .controllers import (
    GECO,
    AdaptivePI,
    CapacityRamp,
    Controller,
    FixedBeta,
    IncrementalPI,
    PIDLagrangian,
    PositionalPI,
    ScheduledBeta,
)
from .setpoints import StepRamp

__all__ = [
    "MAX_WINDOW",
    "ControllerKind",
    "CONTROLLER_KINDS",
    "LINEAR_KINDS",
    "make_controller",
    "linear_controller",
    "Preset",
    "PRESETS",
    "PRIMED",
    "STEP_FIRST",
    "make_preset",
    "controlvae_setpoint",
]


@dataclass(frozen=True)
class ControllerKind:
    """A control law the user names by kind.

    Attributes
    ----------
    name : str
        The kind's name (``--controller`` on the CLI).
    cls : type
        The :class:`~klcontrol.Controller` subclass.
    options : dict
        Fixed constructor options of this kind (e.g. the anti-windup mode).
    default_beta_min : float
        β_min when the user gives none.
    linear : bool
        Whether :mod:`klcontrol.analysis.stability` linearises it (a PI law with gains Kp, Ki).
    help : str
        One line for ``--help``.
    """

    name: str
    cls: type
    options: dict
    default_beta_min: float
    linear: bool
    help: str


CONTROLLER_KINDS = {
    k.name: k
    for k in (
        ControllerKind("incremental", IncrementalPI, {}, 0.0, True,
                       "DynamicVAE's incremental PI, clamped state (default)"),
        ControllerKind("incremental-official", IncrementalPI, {"anti_windup": "official"}, 0.1, True,
                       "DynamicVAE's incremental PI with the official code's saturation"),
        ControllerKind("positional", PositionalPI, {}, 0.0, True, "ControlVAE's positional PI"),
        ControllerKind("positional-official", PositionalPI, {"anti_windup": "official"}, 1.0, True,
                       "ControlVAE's positional PI with the official code's anti-windup"),
        ControllerKind("capacity", CapacityRamp, {}, -math.inf, False, "Burgess' capacity relay γ|KL − C|"),
        ControllerKind("fixed", FixedBeta, {}, 0.0, False, "a constant β"),
    )
}
#: Kinds the linearised stability analysis supports (identical inside the clamps).
LINEAR_KINDS = tuple(k for k, v in CONTROLLER_KINDS.items() if v.linear)

#: The longest moving-average window the stability analysis derives and evaluates (and the CLI accepts). The cost
#: grows like T² (the robust verdict's frequency sweep and the root finding on a polynomial of degree ≈ T; the
#: derivation itself is about linear, 0.4 s at T = 200); past ~1000 the bilinear coefficients (binomials ~2^T)
#: overflow float64.
MAX_WINDOW = 600


def _kind(name) -> ControllerKind:
    if name not in CONTROLLER_KINDS:
        raise ValueError(f"unknown controller kind {name!r}; choose one of {', '.join(CONTROLLER_KINDS)}")
    return CONTROLLER_KINDS[name]


def make_controller(kind: str, setpoint=None, kp=None, ki=None, *, window: int = 1, beta0: float | None = None,
                    beta_min: float | None = None, beta_max: float = math.inf, gamma: float | None = None,
                    beta: float | None = None) -> Controller:
    """A controller of a named kind with the given gains.

    Parameters
    ----------
    kind : str
        One of :data:`CONTROLLER_KINDS`.
    setpoint : SetPoint, float or None
        Target KL (not used by ``fixed``).
    kp, ki : float or array
        Gains of the PI kinds (default: DynamicVAE's 0.01, 0.005).
    window : int
        Moving-average window of the KL filter.
    beta0 : float, optional
        Initial β of the incremental PI (default: DynamicVAE's 150).
    beta_min, beta_max : float
        Clamps (default β_min: the kind's, e.g. 0.1 for ``incremental-official``).
    gamma : float, optional
        Relay amplitude of ``capacity`` (default: Burgess' 1000).
    beta : float, optional
        The constant of ``fixed`` (default: Higgins' 4).

    Returns
    -------
    Controller
    """
    k = _kind(kind)
    kp = papers.DYNAMICVAE_GAINS[0] if kp is None else kp
    ki = papers.DYNAMICVAE_GAINS[1] if ki is None else ki
    bmin = k.default_beta_min if beta_min is None else beta_min
    if k.cls is FixedBeta:
        return FixedBeta(papers.HIGGINS_DSPRITES_BETA if beta is None else beta, setpoint=setpoint)
    if k.cls is CapacityRamp:
        return CapacityRamp(papers.BURGESS_GAMMA if gamma is None else gamma, setpoint, beta_min=bmin,
                            beta_max=beta_max, filter=window)
    if k.cls is PositionalPI:
        return PositionalPI(kp, ki, setpoint, beta_min=bmin, beta_max=beta_max, filter=window, **k.options)
    return IncrementalPI(kp, ki, setpoint, beta0=papers.DYNAMICVAE_BETA0 if beta0 is None else beta0,
                         beta_min=bmin, beta_max=beta_max, filter=window, **k.options)


def linear_controller(kind: str, window: int = 1) -> Controller:
    """A controller of a linearisable kind whose filter, mode and wiring the analysis runs on symbols.

    The gains and clamps of this object are placeholders: the analysis passes
    its own (symbolic) parameters to :meth:`Controller.advance`.
    """
    if kind not in LINEAR_KINDS:
        raise ValueError(f"controller must be one of {LINEAR_KINDS}, got {kind!r}")
    return make_controller(kind, 0.0, 1.0, 1.0, window=window, beta0=1.0, beta_min=0.0)


def controlvae_setpoint() -> StepRamp:
    """ControlVAE's dSprites set point: 0.5 nats, +0.15 every 5000 steps (jumps), up to 18."""
    return StepRamp.controlvae_dsprites()


def _fixed() -> FixedBeta:
    return FixedBeta(papers.HIGGINS_DSPRITES_BETA)


def _controlvae_official() -> PositionalPI:
    return PositionalPI.controlvae_dsprites(official=True)


def _dynamicvae_official() -> IncrementalPI:
    return IncrementalPI.dynamicvae_dsprites(official=True)


def _dynamicvae_p() -> PositionalPI:
    kp, ki = papers.DYNAMICVAE_GAINS
    return PositionalPI(kp, ki, StepRamp.dynamicvae_dsprites(), beta_min=0.0, filter=papers.DYNAMICVAE_WINDOW)


def _dynamicvae_step() -> IncrementalPI:
    sp = StepRamp.dynamicvae_dsprites()
    return IncrementalPI.dynamicvae_dsprites(setpoint=StepRamp(sp.start, sp.stop, sp.step, sp.period, 1))


def _dynamicvae_t() -> IncrementalPI:
    return IncrementalPI.dynamicvae_dsprites(filter=1)


@dataclass(frozen=True)
class Preset:
    """A fully specified controller of a paper, as the trainer and ``klcontrol compare`` use it.

    Attributes
    ----------
    name : str
        The preset's name (the trainer's ``--controller``, a ``compare`` method).
    factory : callable
        ``factory()`` → a fresh :class:`~klcontrol.Controller` (use :func:`make_preset`).
    display : str
        Name in tables and legends (``klcontrol compare``).
    description : str
        The reading of the paper behind it (reStructuredText; the trainer's presets module lists these).
    step_first : bool
        Whether it reproduces an official training loop: the trainer calls the controller already in
        update 0's forward pass (the official loops use that output for update 0) and does not prime its KL
        history with the initial model's KL (the official DynamicVAE window starts from zeros).
    """

    name: str
    factory: Callable[[], Controller]
    display: str
    description: str
    step_first: bool = False


#: Preset name → :class:`Preset` (the trainer's ``--controller``; the one table of the papers' controllers).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fixed", _fixed, "β-VAE_H (β=4)", """\
β-VAE_H (Higgins et al. 2017): constant β = 4."""),
    Preset("capacity", CapacityRamp.burgess_dsprites, "β-VAE_B (γ=1000)", """\
β-VAE_B (Burgess et al. 2018): ``γ|KL − C(t)|`` with γ = 1000 and C rising
linearly from 0 to 25 nats over 100 000 steps, run as the relay
``β = γ·sign(KL − C)`` (β is negative while KL < C)."""),
    Preset("controlvae", PositionalPI.controlvae_dsprites, "ControlVAE (KL=18)", """\
ControlVAE (Shao et al. 2020), :meth:`PositionalPI.controlvae_dsprites`
(``official=False``): positional PI ``β = Kp·σ(m − C) − Ki·Σ(C − m) + 1``
with the official dSprites gains Kp = 0.01, Ki = 0.001, β ≥ 1 (β_min = 1
is also the offset), no filter, set point 0.5 nats raised by 0.15 every
5000 steps (a pure step schedule) up to 18 nats; klcontrol's conditional
integration and set-point phase."""),
    Preset("controlvae-official", _controlvae_official, "ControlVAE, official loop", """\
Same gains, ``official=True``: the official ``P_PID.py`` anti-windup and
set-point phase, and the controller steps already on update 0's KL, so
the run's β follows the official loop call for call.""", step_first=True),
    Preset("dynamicvae", IncrementalPI.dynamicvae_dsprites, "DynamicVAE (KL=20)", """\
DynamicVAE (paper, Appendix A): incremental PI (Eq. 10, feedback sign as
the official code) with Kp = 0.01, Ki = 0.005, β(0) = 150, moving average
T = 5, hybrid step-ramp set point 0.5 → 20 nats (+0.15 per 6000 steps, the
first 1000 of which ramp).  Clamped-state saturation (docs/design.md)."""),
    Preset("dynamicvae-official", _dynamicvae_official, "DynamicVAE, official loop", """\
The official 2D-sprites code instead of the paper: β(0) = 50 (not 150),
unclamped state with the I-term frozen below β_min = 0.1, the zero-filled
KL window (no priming), the official set-point phase, and the controller
steps already on update 0's KL, as the official loop does.""", step_first=True),
    Preset("dynamicvae-p", _dynamicvae_p, "DynamicVAE-P", """\
Ablation "DynamicVAE-P" (paper Sec. 4.2): "positional PI controller with no
initialization to a large β(0), instead of the incremental PI initialized
to a large β(0)".  Read as: the ControlVAE-form positional PI with
DynamicVAE's gains (Kp = 0.01, Ki = 0.005), its moving average (T = 5) and
its hybrid annealing, β_min = 0 (so β may fall below 1, like DynamicVAE),
β(0) given by the law (≈ Kp·σ(y0 − C), i.e. small).  The "P" names the
positional form, not a P-only controller: the paper calls it a PI."""),
    Preset("dynamicvae-step", _dynamicvae_step, "DynamicVAE-step", """\
Ablation "DynamicVAE-step": "solely adopts step function without ramp
function" — the same set point levels and 6000-step periods, each
increase applied as a jump (ramp of one step)."""),
    Preset("dynamicvae-t", _dynamicvae_t, "DynamicVAE-t", """\
Ablation "DynamicVAE-t": "directly uses the output KL-divergence at time t
as a feedback ... without using moving average" — window T = 1."""),
    Preset("geco", GECO.dsprites, "GECO (recon ≤ 100)", """\
GECO (Rezende & Viola 2018, Alg. 1) on the reconstruction constraint
``recon ≤ κ``: β = 1/λ, ``β ← β·exp(−η·C_ma)``, α = 0.99, λ_init = 1; the
controller measures the reconstruction loss.  κ = 100 nats and η = 1e-4
are klcontrol's choices (the paper has no dSprites setting; docs/core.md)."""),
    Preset("pid-lagrangian", PIDLagrangian.dsprites, "PID Lagrangian (KL=20)", """\
PID Lagrangian (Stooke et al. 2020, Alg. 2) on ``KL ≤ C(t)``: β = λ with
Kp = 0.0025, Ki = 0.005, Kd = 0 (klcontrol's choice: DynamicVAE's
linearised gains), DynamicVAE's set point and window."""),
    Preset("cyclical", ScheduledBeta.cyclical_dsprites, "cyclical β (M=4, R=0.5)", """\
Cyclical annealing (Fu et al. 2019): β rises from 0 to 1 over the first
half of each of 4 cycles of an 800 000-step budget, open loop."""),
    Preset("adaptive", AdaptivePI.dynamicvae_dsprites, "adaptive PI (KL=20)", """\
:class:`klcontrol.AdaptivePI` in DynamicVAE's loop (set point, β0 = 150,
window 5, fallback gains 0.01, 0.005): RLS estimate of the plant, gains
from the offline robust table while the estimate is trusted (prior
a = 1/2500, the paper's dSprites plant)."""),
)}

#: Presets that reproduce an official training loop (:attr:`Preset.step_first`).
STEP_FIRST = frozenset(n for n, p in PRESETS.items() if p.step_first)
#: Presets whose KL history the trainer primes with the initial model's KL.
PRIMED = frozenset(PRESETS) - STEP_FIRST


def make_preset(name: str) -> Controller:
    """A fresh controller for a preset name.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`PRESETS`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown controller {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].factory()
