"""klcontrol: control of the KL divergence of β-VAEs.

The loop: a set point C(t), a measurement filter, a β controller and a plant
(a real VAE in :mod:`klcontrol.vae_plant` or the first-order model here).  See
``docs/design.md`` for the indexing conventions.
"""
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
    beta_from_norm,
    beta_norm,
)
from .filters import ExponentialAverage, Filter, MovingAverage
from .plant import ExpGain, FirstOrderPlant, Gain, LinearGain, Plant
from .setpoints import Constant, Cyclical, LinearRamp, Sequence, SetPoint, StepRamp
from .simulate import Trace, response_metrics, simulate
from .version import __version__

__all__ = [
    "Controller", "FixedBeta", "ScheduledBeta", "CapacityRamp", "PositionalPI", "IncrementalPI", "GECO",
    "PIDLagrangian", "AdaptivePI", "beta_norm", "beta_from_norm",
    "Filter", "MovingAverage", "ExponentialAverage",
    "Gain", "ExpGain", "LinearGain", "FirstOrderPlant", "Plant",
    "SetPoint", "Constant", "LinearRamp", "StepRamp", "Cyclical", "Sequence",
    "Trace", "simulate", "response_metrics", "__version__",
]

#: Names of the upper layers this facade reaches lazily (the only core module allowed to name them).
_LAZY = {
    "is_stable": "klcontrol.analysis.stability.api",
    "spectral_radius": "klcontrol.analysis.stability.api",
    "conditions": "klcontrol.analysis.stability.api",
    "robust_stability": "klcontrol.analysis.stability.robust",
    "read_trace": "klcontrol.analysis.identification.traces",
    "fit_plant": "klcontrol.analysis.identification.first_order",
    "load_fit": "klcontrol.analysis.identification.fits",
    "tune": "klcontrol.analysis.tuning.design",
    "integrations": None, "analysis": None, "vae_plant": None, "data": None,
}
__all__ += sorted(_LAZY)


def __getattr__(name):
    where = _LAZY.get(name, "")
    if where == "":
        raise AttributeError(f"module 'klcontrol' has no attribute {name!r}")
    import importlib

    value = importlib.import_module(f"klcontrol.{name}") if where is None else getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
