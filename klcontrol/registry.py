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
    as the trainer and ``klcontrol compare`` use them (``geco`` measures the
    reconstruction loss, :attr:`~klcontrol.Controller.measures`; ``cyclical`` is
    open loop); see :mod:`klcontrol.papers`
    for the constants and docs/references.md for which preset follows the
    paper and which the official code.
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
    "ControllerKind",
    "CONTROLLER_KINDS",
    "LINEAR_KINDS",
    "make_controller",
    "linear_controller",
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


def _dynamicvae_step() -> IncrementalPI:
    sp = StepRamp.dynamicvae_dsprites()
    return IncrementalPI.dynamicvae_dsprites(setpoint=StepRamp(sp.start, sp.stop, sp.step, sp.period, 1))


def _dynamicvae_p() -> PositionalPI:
    kp, ki = papers.DYNAMICVAE_GAINS
    return PositionalPI(kp, ki, StepRamp.dynamicvae_dsprites(), beta_min=0.0, filter=papers.DYNAMICVAE_WINDOW)


#: Preset name → factory of a fresh controller (the trainer's ``--controller``; see vae_plant/training/presets.py).
PRESETS: dict[str, Callable[[], Controller]] = {
    "fixed": lambda: FixedBeta(papers.HIGGINS_DSPRITES_BETA),
    "capacity": CapacityRamp.burgess_dsprites,
    "controlvae": PositionalPI.controlvae_dsprites,
    "controlvae-official": lambda: PositionalPI.controlvae_dsprites(official=True),
    "dynamicvae": IncrementalPI.dynamicvae_dsprites,
    "dynamicvae-official": lambda: IncrementalPI.dynamicvae_dsprites(official=True),
    "dynamicvae-p": _dynamicvae_p,
    "dynamicvae-step": _dynamicvae_step,
    "dynamicvae-t": lambda: IncrementalPI.dynamicvae_dsprites(filter=1),
    "geco": GECO.dsprites,
    "pid-lagrangian": PIDLagrangian.dsprites,
    "cyclical": ScheduledBeta.cyclical_dsprites,
    "adaptive": AdaptivePI.dynamicvae_dsprites,
}

#: Presets that reproduce an official training loop: the trainer calls the controller
#: already in update 0's forward pass (the official loops use that PID output for
#: update 0) and does not prime it (the official DynamicVAE window starts from zeros).
STEP_FIRST = frozenset({"dynamicvae-official", "controlvae-official"})
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
    return PRESETS[name]()
