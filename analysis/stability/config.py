"""Loop configurations the stability analysis supports (no sympy import)."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS, MAX_WINDOW

__all__ = ["check_config", "MAX_WINDOW", "derivation_estimate"]



def derivation_estimate(window: int) -> float:
    """Estimated CPU seconds of a first ``klcontrol stability --window T`` (derivation and verdict), for messages.

    Fitted to runs on the shared 2-core machine under load (module_source 0.11 / 0.22 / 0.44 s at T = 40 / 100 /
    200; the robust verdict 0.17 / 1.45 s at T = 40 / 100): ``1 + 0.003·T + 1.5e-4·T²``.
    """
    return 1.0 + 0.003 * window + 1.5e-4 * window**2


def check_config(window, delay, controller) -> tuple[int, int, str]:
    """Validate ``(window, delay, controller)``; return them normalised.

    Raises
    ------
    ValueError
        If the window is not a positive integer or is above :data:`MAX_WINDOW` (with an estimate of what it would
        take), the delay not 0 or 1, or the controller unknown.
    """
    try:
        ok = not isinstance(window, bool) and float(window).is_integer() and int(window) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if int(window) > MAX_WINDOW:
        raise ValueError(f"window {int(window)} is beyond what the stability analysis derives: at most {MAX_WINDOW} "
                         f"(estimated {derivation_estimate(int(window)):.0f} s CPU and growing like T²; the papers "
                         "use 5)")
    if isinstance(delay, bool) or delay not in (0, 1):
        raise ValueError(f"delay must be 0 or 1, got {delay!r}")
    if controller not in LINEAR_KINDS:
        raise ValueError(f"controller must be one of {LINEAR_KINDS}, got {controller!r}")
    return int(window), int(delay), controller
