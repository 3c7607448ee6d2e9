"""Stability of the linearised KL loop: exact conditions, fast verdicts, robust margins.

The closed loop (DESIGN.md) is built by running the controller's own law from
:mod:`klcontrol.laws` on sympy symbols, linearised at the equilibrium
``β* = g⁻¹(C), y* = C``; stability follows from the characteristic polynomial
by the bilinear map and Routh–Hurwitz.  This module gathers the public API:

Symbolic (imports sympy on first use)
    :func:`jacobian`, :func:`characteristic_polynomial`, :func:`conditions`.
Numeric (generated code, no sympy; broadcast over NumPy arrays)
    :func:`is_stable`, :func:`spectral_radius`, :func:`eigenvalues`.
Robust verdict over an interval of g′
    :func:`robust_stability` → :class:`RobustStability`.
python-control
    :func:`to_statespace`, :func:`to_transfer_function`.
The DynamicVAE paper side by side
    :mod:`analysis.stability_paper` (``compare``, ``theorem_main``, ``theorem_appendix``,
    ``corrected_theorem``).

Supported: ``controller`` in ``"incremental"``, ``"incremental-official"``,
``"positional"``, ``"positional-official"`` (identical inside the clamps), any ``window ≥ 1`` (code for
1…8 ships, others are generated once and cached on disk), ``delay`` 0 or 1.
"""
from __future__ import annotations

from .stability_config import CONTROLLERS
from .stability_control import to_statespace, to_transfer_function
from .stability_numeric import eigenvalues, is_stable, spectral_radius
from .stability_robust import Crossing, RobustStability, crossings, robust_stability, stable_gprime_intervals

__all__ = [
    "CONTROLLERS",
    "jacobian",
    "characteristic_polynomial",
    "conditions",
    "is_stable",
    "spectral_radius",
    "eigenvalues",
    "robust_stability",
    "RobustStability",
    "Crossing",
    "crossings",
    "stable_gprime_intervals",
    "to_statespace",
    "to_transfer_function",
]


def jacobian(window=1, delay=0, controller="incremental", inputs=False):
    """Symbolic Jacobian of the loop at the equilibrium (see :func:`analysis.stability_symbolic.jacobian`)."""
    from .stability_symbolic import jacobian as _j

    return _j(window, delay, controller, inputs)


def characteristic_polynomial(window=1, delay=0, controller="incremental"):
    """Characteristic polynomial in λ, zero roots removed (see :mod:`analysis.stability_symbolic`)."""
    from .stability_symbolic import characteristic_polynomial as _cp

    return _cp(window, delay, controller)


def conditions(window=1, delay=1, controller="incremental"):
    """Exact stability conditions as sympy relations in ``K_p, K_i, a, gprime`` (all must hold).

    Bilinear map + Routh–Hurwitz (Liénard–Chipart form), positive factors
    divided out.  For ``window=1, delay=1`` (the paper's model)::

        -2 Ki a g′ - Kp a g′ + 4a + 8 > 0
        Ki a g′ + Kp a g′ + 4a + 4 > 0
        2 Ki g′ - Kp g′ + 4 > 0
        -Ki g′ > 0
        16 Ki a g′ + 16 Ki g′ - Kp² a g′² - 4 Kp g′ + 16a + 16 > 0
    """
    from .stability_symbolic import conditions as _c

    return _c(window, delay, controller)
