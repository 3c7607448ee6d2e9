"""The linearised loop as python-control objects (``dt = 1``).

States are those of :mod:`analysis.stability_symbolic` ("before update t"),
as deviations from the equilibrium; the output is the KL deviation
``y(t) − C``.  Inputs:

* ``"setpoint"``: deviation of the set point ``C(t)`` that update ``t`` uses
  (the plant's operating point stays at the linearisation point);
* ``"noise"``: additive noise on the measurement the filter consumes in update
  ``t`` (``y(t)`` for delay 0, ``y(t−1)`` for delay 1).

The matrices come from the symbolic Jacobian (lambdified once per
configuration and cached in the process).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .stability_config import check_config

__all__ = ["INPUTS", "linear_matrices", "to_statespace", "to_transfer_function"]

#: Input choices of :func:`to_statespace`.
INPUTS = ("setpoint", "noise")


@lru_cache(maxsize=None)
def _lambdified(window, delay, controller):
    import sympy as sp

    from . import stability_symbolic as ss

    A, B, C = ss.jacobian(window, delay, controller, inputs=True)
    args = [ss.SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")]
    return sp.lambdify(args, A, "numpy"), sp.lambdify(args, B, "numpy"), sp.lambdify(args, C, "numpy")


def linear_matrices(kp, ki, a, gprime, window=1, delay=0, controller="incremental", input="setpoint"):
    """``(A, B, C, D)`` of the linearised loop as float arrays.

    Parameters
    ----------
    kp, ki, a, gprime : float
        Gains, plant rate (> 0) and plant slope g′(β*).
    window, delay, controller
        Loop configuration (see :func:`analysis.stability.is_stable`).
    input : {"setpoint", "noise"}
        Which input column of B (see the module docstring).

    Returns
    -------
    tuple of ndarray
    """
    window, delay, controller = check_config(window, delay, controller)
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
    vals = [float(v) for v in (kp, ki, a, gprime)]
    if not all(np.isfinite(vals)) or vals[2] <= 0:
        raise ValueError(f"kp, ki, a, gprime must be finite and a > 0, got {vals}")
    fa, fb, fc = _lambdified(window, delay, controller)
    A = np.array(fa(*vals), dtype=float)
    B = np.array(fb(*vals), dtype=float)[:, [INPUTS.index(input)]]
    C = np.array(fc(*vals), dtype=float).reshape(1, -1)
    return A, B, C, np.zeros((1, 1))


def to_statespace(kp, ki, a, gprime, window=1, delay=0, controller="incremental", input="setpoint"):
    """The linearised loop as a discrete ``control.StateSpace`` (``dt = 1``).

    Parameters are those of :func:`linear_matrices`.  Its poles are the
    eigenvalues of the Jacobian: the roots of
    :func:`analysis.stability.characteristic_polynomial` plus zeros.

    Returns
    -------
    control.StateSpace
    """
    import control

    A, B, C, D = linear_matrices(kp, ki, a, gprime, window, delay, controller, input)
    return control.ss(A, B, C, D, dt=1, inputs=[input], outputs=["y"])


def to_transfer_function(kp, ki, a, gprime, window=1, delay=0, controller="incremental", input="setpoint"):
    """The linearised loop from ``input`` to the KL deviation as a ``control.TransferFunction`` (``dt = 1``)."""
    import control

    return control.ss2tf(to_statespace(kp, ki, a, gprime, window, delay, controller, input))
