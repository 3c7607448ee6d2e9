"""Analysis of the KL loop, one subpackage per concept.

- :mod:`klcontrol.analysis.stability`: the closed loop derived from the laws, exact conditions, fast maps,
  robust verdicts, python-control objects;
- :mod:`klcontrol.analysis.identification`: reading logs, fitting first-order and Hammerstein plants,
  held-out validation;
- :mod:`klcontrol.analysis.verdicts`: a saved fit and gains → a verdict; a real closed-loop trace → what happened;
- :mod:`klcontrol.analysis.tuning`: gain design on a fitted plant.

The subpackages are imported on first use.
"""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "stability": None, "identification": None, "verdicts": None, "tuning": None, "commands": None,
})
