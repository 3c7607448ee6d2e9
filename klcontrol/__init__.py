"""klcontrol: control of the KL divergence of β-VAEs.

The loop: a set point C(t), a measurement filter, a β controller and a plant
(a real VAE in :mod:`vae_plant` or the first-order model here).  See
``docs/design.md`` for the indexing conventions.
"""
from .controllers import (
    CapacityRamp,
    Controller,
    FixedBeta,
    ScheduledBeta,
    IncrementalPI,
    PositionalPI,
    beta_from_norm,
    beta_norm,
)
from .filters import ExponentialAverage, Filter, MovingAverage
from .plant import ExpGain, FirstOrderPlant, Gain, LinearGain, Plant
from .setpoints import Constant, LinearRamp, Sequence, SetPoint, StepRamp
from .simulate import Trace, response_metrics, simulate

__version__ = "0.1.0"

__all__ = [
    "Controller", "FixedBeta", "ScheduledBeta", "CapacityRamp", "PositionalPI", "IncrementalPI", "beta_norm", "beta_from_norm",
    "Filter", "MovingAverage", "ExponentialAverage",
    "Gain", "ExpGain", "FirstOrderPlant",
    "SetPoint", "Constant", "LinearRamp", "StepRamp", "Sequence",
    "Trace", "simulate", "response_metrics",
]
