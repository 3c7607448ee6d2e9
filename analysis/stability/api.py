"""The stability API: route each verdict to the first-order or the LTI path (names re-exported by the package)."""
from __future__ import annotations

from klcontrol.analysis.stability import lti as _lti
from klcontrol.analysis.stability import numeric as _num
from klcontrol.analysis.stability.control import open_loop, to_statespace, to_transfer_function
from klcontrol.analysis.stability.lti import RobustLTI, controller_linearization, plant_matrices, robust_stability_lti
from klcontrol.analysis.stability.robust import (
    Crossing,
    RobustStability,
    crossings,
    robust_stability,
    stable_gprime_intervals,
)

__all__ = [
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
    "open_loop",
    "robust_stability_lti",
    "RobustLTI",
    "plant_matrices",
    "controller_linearization",
]


def _first_order(plant):
    from klcontrol.plant import FirstOrderPlant

    return isinstance(plant, FirstOrderPlant)


def _route(name, kp, ki, a, gprime, window, delay, controller, plant, setpoint):
    """Call the exact first-order path (``a, gprime``: ``numeric.<name>_first_order``) or the LTI path
    (``plant=``: ``lti.<name>_lti``)."""
    first_order, lti = _PATHS[name]
    if plant is None:
        if a is None or gprime is None:
            raise ValueError(f"{name}: give a and gprime (first-order plant) or plant= (any LTI plant)")
        if setpoint is not None:
            raise ValueError(f"{name}: setpoint applies to plant= objects only")
        return first_order(kp, ki, a, gprime, window, delay, controller)
    if a is not None or gprime is not None:
        raise ValueError(f"{name}: give either a and gprime or plant=, not both")
    if _first_order(plant):  # the exact path, linearised at the set point
        if setpoint is None:
            raise ValueError(f"{name}: {type(plant).__name__} is nonlinear: give setpoint= to linearise it")
        return first_order(kp, ki, plant.a, plant.gprime_at(setpoint), window, delay, controller)
    return lti(kp, ki, plant, window, delay, controller, setpoint)


#: Each public verdict → (its exact first-order path, its LTI path).
_PATHS = {
    "is_stable": (_num.is_stable_first_order, _lti.is_stable_lti),
    "spectral_radius": (_num.spectral_radius_first_order, _lti.spectral_radius_lti),
    "eigenvalues": (_num.eigenvalues_first_order, _lti.eigenvalues_lti),
}


def is_stable(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", *, plant=None,
              setpoint=None):
    """Whether the linearised loop is asymptotically stable (all |λ| < 1).

    Parameters
    ----------
    kp, ki : float or array
        Gains (positive ``ki`` is negative feedback); broadcast together.
    a, gprime : float or array, optional
        First-order plant: rate (> 0) and ``g′(β*)``.  Exact Routh–Hurwitz test
        from the generated code (:func:`klcontrol.analysis.stability.numeric.is_stable_first_order`).
    window, delay, controller
        Moving-average window ``T``, delay (0: β(t+1) from y(t); 1: from
        y(t−1)), controller name.
    plant : optional
        Instead of ``a, gprime``: any LTI plant of the small-signal response
        β − β* → KL − y* (python-control ``TransferFunction``/``StateSpace``
        with ``dt`` 1 or ``True``, ``(A, B, C, D)``, or an object with
        ``linearize(setpoint)``); closed-loop eigenvalues
        (:mod:`klcontrol.analysis.stability.lti`).  A :class:`klcontrol.FirstOrderPlant`
        takes the exact path at ``g′(g⁻¹(setpoint))``.
    setpoint : float, optional
        Operating point for plant objects.

    Returns
    -------
    bool or ndarray of bool
    """
    return _route("is_stable", kp, ki, a, gprime, window, delay, controller, plant, setpoint)


def spectral_radius(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", *, plant=None,
                    setpoint=None):
    """Largest eigenvalue modulus of the linearised loop (parameters of :func:`is_stable`).

    Returns
    -------
    float or ndarray
    """
    return _route("spectral_radius", kp, ki, a, gprime, window, delay, controller, plant, setpoint)


def eigenvalues(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", *, plant=None,
                setpoint=None):
    """Eigenvalues of the linearised loop (parameters of :func:`is_stable`).

    The first-order path returns the nonzero roots of the characteristic
    polynomial; the LTI path all eigenvalues of the closed-loop matrix
    (zeros of copied states included).

    Returns
    -------
    ndarray of complex, shape ``broadcast + (n,)``
    """
    return _route("eigenvalues", kp, ki, a, gprime, window, delay, controller, plant, setpoint)


def jacobian(window=1, delay=0, controller="incremental", inputs=False):
    """Symbolic Jacobian of the loop at the equilibrium (see :func:`klcontrol.analysis.stability.symbolic.jacobian`)."""
    from klcontrol.analysis.stability.symbolic import jacobian as _j

    return _j(window, delay, controller, inputs)


def characteristic_polynomial(window=1, delay=0, controller="incremental"):
    """Characteristic polynomial in λ, zero roots removed (see :mod:`klcontrol.analysis.stability.symbolic`)."""
    from klcontrol.analysis.stability.symbolic import characteristic_polynomial as _cp

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
    from klcontrol.analysis.stability.symbolic import conditions as _c

    return _c(window, delay, controller)
