"""Loop configurations the stability analysis supports (no sympy import)."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS

__all__ = ["check_config"]


def check_config(window, delay, controller) -> tuple[int, int, str]:
    """Validate ``(window, delay, controller)``; return them normalised.

    Raises
    ------
    ValueError
        If the window is not a positive integer, the delay not 0 or 1, or the
        controller unknown.
    """
    try:
        ok = not isinstance(window, bool) and float(window).is_integer() and int(window) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if isinstance(delay, bool) or delay not in (0, 1):
        raise ValueError(f"delay must be 0 or 1, got {delay!r}")
    if controller not in LINEAR_KINDS:
        raise ValueError(f"controller must be one of {LINEAR_KINDS}, got {controller!r}")
    return int(window), int(delay), controller
