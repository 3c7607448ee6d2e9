"""Verdicts: from a saved fit and gains to stable / unstable, and from a real closed-loop trace to what happened.

The public names below are imported from their modules on first use."""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "stability_verdict": ".fits",
    "format_stability": ".fits",
    "check_first_order": ".fits",
    "check_fit_file": ".fits",
    "format_verdict": ".fits",
    "design_problems": ".fits",
    "Unidentified": ".fits",
    "observed_stability": ".observed",
})
