"""Gain design on a fitted plant: linear design, whole-run design by simulation, the adaptive PI's table.

The public names below are imported from their modules on first use."""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "GainFigures": ".design",
    "TuneResult": ".design",
    "loop_transfer_functions": ".design",
    "noise_gain": ".design",
    "gain_figures": ".design",
    "tune": ".design",
    "PAPER_GAINS": ".design",
    "design_gains": ".recommend",
    "ScheduleFigures": ".schedule",
    "ScheduleTuneResult": ".schedule",
    "schedule_figures": ".schedule",
    "tune_schedule": ".schedule",
    "drift_run": ".adaptive",
    "A_EDGES": ".adaptive",
    "G_FACTOR": ".adaptive",
    "KP_N_MAX": ".adaptive",
    "DECAY_FRACTION": ".adaptive",
    "uncertainty_set": ".adaptive",
    "worst_radius": ".adaptive",
    "design_table": ".adaptive",
    "table_source": ".adaptive",
    "write_table": ".adaptive",
})
