"""Stability of the linearised KL loop: exact conditions, fast verdicts, robust margins.

The closed loop (docs/design.md) is built by running the controller's own law from
:mod:`klcontrol.laws` on sympy symbols, linearised at the equilibrium
``β* = g⁻¹(C), y* = C``; stability follows from the characteristic polynomial
by the bilinear map and Routh–Hurwitz.  This package's facade names the public API (each name is imported from its module on first use):

Symbolic (imports sympy on first use)
    :func:`jacobian`, :func:`characteristic_polynomial`, :func:`conditions`.
Numeric (generated code, no sympy; broadcast over NumPy arrays)
    :func:`is_stable`, :func:`spectral_radius`, :func:`eigenvalues`.
Any identified LTI plant (``plant=``: python-control system, ``(A, B, C, D)``,
or a plant object with ``linearize(setpoint)``; :mod:`klcontrol.analysis.stability.lti`)
    the same three functions with ``plant=P`` instead of ``a, gprime``
    (closed-loop eigenvalues, batched over the gains);
    :func:`robust_stability_lti` over a set of plants and operating points.
Robust verdict over an interval of g′
    :func:`robust_stability` → :class:`RobustStability`.
python-control
    :func:`to_statespace`, :func:`to_transfer_function`, :func:`open_loop`.
The DynamicVAE paper side by side
    :mod:`klcontrol.analysis.stability.paper` (``compare``, ``theorem_main``, ``theorem_appendix``,
    ``corrected_theorem``).

Supported: ``controller`` in ``"incremental"``, ``"incremental-official"``,
``"positional"``, ``"positional-official"`` (identical inside the clamps), any ``window ≥ 1`` (code for
1…8 ships, others are generated once and cached on disk), ``delay`` 0 or 1.
"""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "LINEAR_KINDS": "klcontrol.registry",
    "jacobian": ".api",
    "characteristic_polynomial": ".api",
    "conditions": ".api",
    "is_stable": ".api",
    "spectral_radius": ".api",
    "eigenvalues": ".api",
    "robust_stability": ".robust",
    "robust_stable_map": ".robust",
    "RobustStability": ".robust",
    "Crossing": ".robust",
    "crossings": ".robust",
    "stable_gprime_intervals": ".robust",
    "to_statespace": ".control",
    "to_transfer_function": ".control",
    "open_loop": ".control",
    "robust_stability_lti": ".lti",
    "RobustLTI": ".lti",
    "plant_matrices": ".lti",
    "controller_linearization": ".lti",
    "critical_gain": ".critical",
    "CriticalGain": ".critical",
    "controller_response": ".critical",
    "critical_gain_from_response": ".critical",
    "paper": None,
})
