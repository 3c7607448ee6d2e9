"""The linearised loop as python-control objects (``dt = 1``), with named signals.

Closed loop (:func:`to_statespace`, :func:`to_transfer_function`): states are
deviations from the equilibrium, "before update t"; the output ``"y"`` is the
KL deviation ``y(t) − C``.  Inputs, both in one object by default:

* ``"setpoint"``: deviation of the set point ``C(t)`` that update ``t`` uses
  (the plant's operating point stays at the linearisation point);
* ``"noise"``: additive noise on the measurement the filter consumes in update
  ``t`` (``y(t)`` for delay 0, ``y(t−1)`` for delay 1).

State names: first-order plant (``a, gprime``) ``y_prev, beta, p_prev`` (or
``integral`` for the positional PI) ``, h_1 … h_{T−1}`` (filter history, newest
first), as in :mod:`klcontrol.analysis.stability.symbolic`; any LTI plant (``plant=``)
the plant's states ``plant_0 …`` followed by the controller's (see
:class:`klcontrol.analysis.stability.lti.ControllerLinearization`).

Open loop (:func:`open_loop`): ``L(z) = −K(z)·P(z)``, broken at β: input
``"beta"`` (β − β*), output ``"beta_fb"``, the β the controller returns.  The
loop closes as ``control.feedback(L, 1)`` (negative unity feedback, the
python-control convention), so ``control.stability_margins(L)`` gives the
loop's margins: the gain margin is the factor by which ``(K_p, K_i)`` may be
scaled together, the phase margin the extra lag at the crossover.

A limitation of python-control 0.10 (``margins._z_filter``): for discrete
systems it only looks for phase crossovers at angles ``0 ≤ θ < π``, so a
crossover at the Nyquist angle ``θ = π`` (λ = −1: the loop as trained, delay 0,
T = 1, loses stability that way) is missed, and the integrator's pole at
``z = 1`` can produce a spurious crossover at ``ω = 0`` with a gain margin near
0.  :func:`loop_margins` gives the margins exactly (crossings of the affine
characteristic polynomial, verified by eigenvalues), ``θ = π`` included.

The first-order matrices come from the symbolic Jacobian (lambdified once per
configuration and cached in the process).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from klcontrol.analysis.stability.config import check_config

__all__ = [
    "INPUTS", "linear_matrices", "state_names", "to_statespace", "to_transfer_function", "open_loop", "loop_margins",
]

#: Input names of :func:`to_statespace`.
INPUTS = ("setpoint", "noise")


@lru_cache(maxsize=None)
def _lambdified(window, delay, controller):
    import sympy as sp

    from klcontrol.analysis.stability import symbolic as ss

    A, B, C = ss.jacobian(window, delay, controller, inputs=True)
    args = [ss.SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")]
    return sp.lambdify(args, A, "numpy"), sp.lambdify(args, B, "numpy"), sp.lambdify(args, C, "numpy")


def _scalar(name, v):
    """One float, or a ValueError naming the parameter (python-control objects describe one loop)."""
    arr = np.asarray(v)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar: a python-control object describes one loop, got an array of "
                         f"shape {arr.shape} (use klcontrol.analysis.stability.spectral_radius for arrays of gains)")
    try:
        out = float(arr)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _inputs(input):
    if input is None:
        return list(range(len(INPUTS)))
    if input not in INPUTS:
        raise ValueError(f"input must be None (both) or one of {INPUTS}, got {input!r}")
    return [INPUTS.index(input)]


def _first_order_matrices(kp, ki, a, gprime, window, delay, controller):
    window, delay, controller = check_config(window, delay, controller)
    vals = [_scalar(n, v) for n, v in (("kp", kp), ("ki", ki), ("a", a), ("gprime", gprime))]
    if vals[2] <= 0:
        raise ValueError(f"a must be > 0, got {vals[2]}")
    fa, fb, fc = _lambdified(window, delay, controller)
    A = np.array(fa(*vals), dtype=float)
    B = np.array(fb(*vals), dtype=float)
    C = np.array(fc(*vals), dtype=float).reshape(1, -1)
    return A, B, C


def state_names(window=1, delay=0, controller="incremental", plant_order=None):
    """Names of the closed loop's states, in the order of :func:`to_statespace`.

    Parameters
    ----------
    window, delay, controller
        Loop configuration.
    plant_order : int, optional
        ``None``: the first-order loop of :mod:`klcontrol.analysis.stability.symbolic`;
        an integer ``n``: an LTI plant with ``n`` states (``plant_0 …``)
        followed by the controller's states.

    Returns
    -------
    list of str
    """
    window, delay, controller = check_config(window, delay, controller)
    if plant_order is None:
        from klcontrol.analysis.stability import symbolic as ss

        names = [str(s) for s in ss.loop_map(window, delay, controller).state]
        return ["integral" if n == "I" else n for n in names]
    from klcontrol.analysis.stability.lti import controller_linearization

    return [f"plant_{i}" for i in range(int(plant_order))] + list(controller_linearization(window, delay,
                                                                                           controller).states)


def linear_matrices(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", input=None, *,
                    plant=None, setpoint=None):
    """``(A, B, C, D)`` of the linearised closed loop as float arrays.

    Parameters
    ----------
    kp, ki : float
        Gains (scalars: arrays are rejected with the parameter's name).
    a, gprime : float, optional
        First-order plant: rate (> 0) and slope g′(β*).
    window, delay, controller
        Loop configuration (see :func:`klcontrol.analysis.stability.is_stable`).
    input : {None, "setpoint", "noise"}
        Columns of B: ``None`` both (in :data:`INPUTS` order), or one of them.
    plant, setpoint : optional
        Instead of ``a, gprime``: any LTI plant (see
        :func:`klcontrol.analysis.stability.lti.plant_matrices`).

    Returns
    -------
    tuple of ndarray
    """
    cols = _inputs(input)
    if plant is None:
        if a is None or gprime is None:
            raise ValueError("give a and gprime (first-order plant) or plant= (any LTI plant)")
        A, B, C = _first_order_matrices(kp, ki, a, gprime, window, delay, controller)
    else:
        if a is not None or gprime is not None:
            raise ValueError("give either a and gprime or plant=, not both")
        from klcontrol.analysis.stability.lti import closed_loop_matrices

        A, B, C, _ = closed_loop_matrices(_scalar("kp", kp), _scalar("ki", ki), plant, window, delay, controller,
                                          setpoint)
    return A, B[:, cols], C, np.zeros((1, len(cols)))


def _names(window, delay, controller, plant, n):
    if plant is None:
        return state_names(window, delay, controller)
    n_controller = len(state_names(window, delay, controller, plant_order=0))
    return state_names(window, delay, controller, plant_order=n - n_controller)


def to_statespace(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", input=None, *,
                  plant=None, setpoint=None):
    """The linearised closed loop as a discrete ``control.StateSpace`` (``dt = 1``) with named signals.

    Parameters are those of :func:`linear_matrices`.  Inputs ``"setpoint"``
    and ``"noise"`` (both unless ``input`` picks one), output ``"y"``, states
    named as in :func:`state_names`.  Its poles are the closed loop's
    eigenvalues.

    Returns
    -------
    control.StateSpace
    """
    import control

    A, B, C, D = linear_matrices(kp, ki, a, gprime, window, delay, controller, input, plant=plant,
                                 setpoint=setpoint)
    names = _names(window, delay, controller, plant, A.shape[0])
    inputs = [INPUTS[i] for i in _inputs(input)]
    return control.ss(A, B, C, D, dt=1, inputs=inputs, outputs=["y"], states=names, name="kl_loop")


def to_transfer_function(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", input=None, *,
                         plant=None, setpoint=None):
    """The closed loop from its input(s) to the KL deviation as a ``control.TransferFunction`` (``dt = 1``).

    Parameters are those of :func:`linear_matrices` (``input=None``: a 1 × 2
    transfer matrix, columns ``"setpoint"``, ``"noise"``).

    Returns
    -------
    control.TransferFunction
    """
    import control

    return control.ss2tf(to_statespace(kp, ki, a, gprime, window, delay, controller, input, plant=plant,
                                       setpoint=setpoint))


def open_loop(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", *, plant=None,
              setpoint=None):
    """The loop transfer ``L(z) = −K(z)·P(z)`` broken at β, as a ``control.StateSpace`` (``dt = 1``).

    ``P``: the plant β − β* → KL − y*; ``K``: the controller and filter from
    the measured KL to β (with the delay), linearised from the laws.  The
    closed loop is ``control.feedback(L, 1)``; ``control.stability_margins(L)``
    gives its gain and phase margins (see the module docstring).

    Parameters
    ----------
    kp, ki : float
        Gains (scalars).
    a, gprime : float, optional
        First-order plant: rate (> 0) and slope g′(β*).
    window, delay, controller
        Loop configuration.
    plant, setpoint : optional
        Instead of ``a, gprime``: any LTI plant (see
        :func:`klcontrol.analysis.stability.lti.plant_matrices`).

    Returns
    -------
    control.StateSpace
        Input ``"beta"``, output ``"beta_fb"``; states ``plant_0 …`` then the
        controller's.
    """
    import control

    from klcontrol.analysis.stability.lti import controller_linearization

    kp, ki = _scalar("kp", kp), _scalar("ki", ki)
    if plant is None:
        if a is None or gprime is None:
            raise ValueError("give a and gprime (first-order plant) or plant= (any LTI plant)")
        if _scalar("a", a) <= 0:
            raise ValueError(f"a must be > 0, got {a}")
    elif a is not None or gprime is not None:
        raise ValueError("give either a and gprime or plant=, not both")
    Ap, Bp, Cp, Dp = _plant_of(a, gprime, plant, setpoint)
    lin = controller_linearization(window, delay, controller)
    Ak, Bk = lin.matrices(kp, ki)
    By = Bk[:, :1]
    n, m = Ap.shape[0], Ak.shape[0]
    A = np.block([[Ap, np.zeros((n, m))], [By @ Cp, Ak]])
    B = np.vstack([Bp, By @ Dp])
    C = np.hstack([np.zeros((1, n)), -lin.C])
    names = [f"plant_{i}" for i in range(n)] + list(lin.states)
    return control.ss(A, B, C, np.zeros((1, 1)), dt=1, inputs=["beta"], outputs=["beta_fb"], states=names,
                      name="open_loop")


def _frequency_response(A, B, C, D, theta):
    """``L(e^{iθ})`` for a SISO ``(A, B, C, D)``, batched over θ."""
    z = np.exp(1j * np.asarray(theta, dtype=float))
    n = A.shape[0]
    M = z[:, None, None] * np.eye(n) - A
    x = np.linalg.solve(M, np.broadcast_to(B.astype(complex), (len(z),) + B.shape))
    return (C @ x)[:, 0, 0] + D[0, 0]


def loop_margins(kp, ki, a=None, gprime=None, window=1, delay=0, controller="incremental", *, plant=None,
                 setpoint=None):
    """Gain and phase margins of the loop ``L(z)`` of :func:`open_loop`, exactly (``θ = π`` included).

    Parameters are those of :func:`open_loop`.

    Returns
    -------
    dict
        ``stable`` (closed loop at the given gains); ``gain_margin``: the
        largest factor ``s`` such that ``(s'·K_p, s'·K_i)`` is stable for all
        ``s' ∈ [1, s)`` (``inf`` if unbounded, 0 if unstable);
        ``gain_range``: the open stable range of factors containing 1 (or
        nearest to it), as in :class:`klcontrol.analysis.stability.lti.RobustLTI`;
        ``phase_crossover_angle``: ``arg λ`` of the eigenvalue on the unit
        circle at ``s = gain_margin`` (π: λ = −1); ``phase_margin`` (degrees,
        python-control's convention ``(∠L mod 360°) − 180°``, smallest over the
        gain crossovers ``|L(e^{iθ})| = 1``; ``inf`` if none) and
        ``gain_crossover_angle`` (θ there, radians per update).
    """
    from scipy.optimize import brentq

    from klcontrol.analysis.stability.lti import gain_crossings, robust_stability_lti

    L = open_loop(kp, ki, a, gprime, window, delay, controller, plant=plant, setpoint=setpoint)
    mats = _plant_of(a, gprime, plant, setpoint)
    kp, ki = _scalar("kp", kp), _scalar("ki", ki)
    r = robust_stability_lti(kp, ki, mats, window, delay, controller)
    angle = None
    if r.stable and math.isfinite(r.gain_margin):
        cr = [ang for s, ang in gain_crossings(kp, ki, mats, window, delay, controller)
              if abs(s - r.gain_margin) <= 1e-9 * r.gain_margin]
        angle = cr[0] if cr else None
    A, B, C, D = (np.asarray(m, dtype=float) for m in (L.A, L.B, L.C, L.D))
    theta = np.unique(np.concatenate([np.logspace(-9, math.log10(math.pi), 6000), [math.pi]]))
    logmag = np.log(np.abs(_frequency_response(A, B, C, D, theta)))
    pm, wc = math.inf, None
    for i in np.flatnonzero(np.sign(logmag[:-1]) * np.sign(logmag[1:]) < 0):
        f = lambda th: float(np.log(np.abs(_frequency_response(A, B, C, D, [th])[0])))  # noqa: E731
        th = brentq(f, theta[i], theta[i + 1], xtol=1e-14)
        ph = float(np.remainder(np.degrees(np.angle(_frequency_response(A, B, C, D, [th])[0])), 360) - 180)
        if abs(ph) < abs(pm):
            pm, wc = ph, th
    return {"stable": r.stable, "gain_margin": r.gain_margin, "gain_range": r.gain_range,
            "phase_crossover_angle": angle, "phase_margin": pm, "gain_crossover_angle": wc}


def _plant_of(a, gprime, plant, setpoint):
    """The plant as ``(A, B, C, D)``: the first-order one from ``a, g′`` or any LTI plant."""
    from klcontrol.analysis.stability.lti import plant_matrices

    if plant is not None:
        return plant_matrices(plant, setpoint)
    from klcontrol.plant import FirstOrderPlant, LinearGain

    a, gprime = _scalar("a", a), _scalar("gprime", gprime)
    # The first-order plant's own linearisation (deviation variables: y* = β* = 0).
    return FirstOrderPlant(a, LinearGain(0.0, gprime, 0.0)).linearize(0.0)
