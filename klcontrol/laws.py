"""The control laws, each written exactly once.

A law is a pure function ``law(state, m, c, gains..., ops) -> (beta, new_state)``
of the controller state, the filtered measurement ``m`` (KL, nats), the set
point ``c`` and the gains, using only arithmetic and the primitives of an
:class:`~klcontrol.backend.Ops` backend.  Controllers run these functions on
floats, NumPy arrays or torch tensors; :mod:`analysis.stability` calls the very
same functions with sympy symbols to build the closed-loop Jacobian.

Sign conventions (docs/design.md): the error is ``e = C - m``; ``sigmoid(m - C)``
equals the papers' ``σ(-e)``.  Positive ``ki`` means negative feedback: a KL
below the set point lowers β.
"""
from __future__ import annotations

from .backend import NUMPY, Ops

__all__ = [
    "fixed_beta",
    "capacity_relay",
    "positional_pi",
    "positional_pi_official",
    "incremental_pi",
    "moving_average",
    "exponential_average",
    "ANTI_WINDUP_MODES",
    "POSITIONAL_ANTI_WINDUP_MODES",
]

#: Saturation handling of :func:`incremental_pi`.
ANTI_WINDUP_MODES = ("clamp", "official")
#: Saturation handling of the positional PI: :func:`positional_pi` ("conditional") or :func:`positional_pi_official`.
POSITIONAL_ANTI_WINDUP_MODES = ("conditional", "official")


def fixed_beta(beta, m=None, c=None, ops: Ops = NUMPY):
    """Constant β, whatever the measurement.

    Parameters
    ----------
    beta : float or array
        The weight.
    m, c : ignored
        Present so every law shares one call shape.
    ops : Ops
        Backend (unused).

    Returns
    -------
    beta
    """
    return beta


def capacity_relay(m, c, gamma, ops: Ops = NUMPY):
    """Burgess' capacity objective ``γ|KL − C|`` as a β relay.

    The gradient of ``γ|KL − C|`` with respect to the model equals that of
    ``β·KL`` with ``β = γ·sign(KL − C)``, so the loss can stay ``recon + β·KL``.

    Parameters
    ----------
    m : float, array or tensor
        Measured KL.
    c : float, array or tensor
        Capacity set point ``C(t)``.
    gamma : float or array
        Relay amplitude γ.
    ops : Ops
        Backend.

    Returns
    -------
    beta
        ``γ·sign(m − c)``.
    """
    return gamma * ops.sign(m - c)


def positional_pi(integral, m, c, kp, ki, beta_min, beta_max, ops: Ops = NUMPY):
    """ControlVAE's positional PI with conditional-integration anti-windup.

    ``β = Kp·σ(m − C) − Ki·Σ(C − m) + β_min``, clamped to ``[β_min, β_max]``.
    The integral is not advanced on a step where advancing it would push the
    unclamped β further past a clamp (the integral is frozen while saturated).

    Parameters
    ----------
    integral : float, array or tensor
        ``Σ(C − m)`` so far.
    m, c : float, array or tensor
        Measurement and set point.
    kp, ki, beta_min, beta_max : float or array
        Gains and clamps.
    ops : Ops
        Backend.

    Returns
    -------
    beta, new_integral
    """
    e = c - m
    p = kp * ops.sigmoid(m - c)
    candidate = integral + e
    raw = p - ki * candidate + beta_min
    d_i = -ki * e
    windup = ops.or_(
        ops.and_(ops.gt(raw, beta_max), ops.gt(d_i, 0)),
        ops.and_(ops.lt(raw, beta_min), ops.lt(d_i, 0)),
    )
    new_integral = ops.where(windup, integral, candidate)
    beta = ops.clip(p - ki * new_integral + beta_min, beta_min, beta_max)
    return beta, new_integral


def positional_pi_official(state, m, c, kp, ki, beta_min, beta_max, ops: Ops = NUMPY):
    """ControlVAE's positional PI with the official code's anti-windup (``P_PID.py``).

    ``β = Kp·σ(m − C) − Ki·Σ(C − m) + β_min``, as :func:`positional_pi`, but
    the integral is frozen whenever the *previous unclamped* β is below
    ``beta_min``, whichever way this step's error points, and it still
    advances on the step whose result crosses below ``beta_min``.  Only the
    returned β is clamped.  Once the unclamped β is more than ``Kp`` below
    ``beta_min`` (so ``Kp·σ`` cannot lift it back) the integral never moves
    again: β stays at ``beta_min`` whatever the KL (docs/references.md).

    Parameters
    ----------
    state : tuple
        ``(integral, raw_prev)``: ``Σ(C − m)`` so far and the previous
        unclamped β (the official code starts it at 1 = ``beta_min``).
    m, c : float, array or tensor
        Measurement and set point.
    kp, ki, beta_min, beta_max : float or array
        Gains and clamps (official dSprites: 0.01, 0.001, 1, no upper clamp).
    ops : Ops
        Backend.

    Returns
    -------
    beta, (new_integral, raw)
    """
    integral, raw_prev = state
    e = c - m
    p = kp * ops.sigmoid(m - c)
    new_integral = ops.where(ops.lt(raw_prev, beta_min), integral + 0 * e, integral + e)
    raw = p - ki * new_integral + beta_min
    return ops.clip(raw, beta_min, beta_max), (new_integral, raw)


def incremental_pi(state, m, c, kp, ki, beta_min, beta_max, ops: Ops = NUMPY, mode: str = "clamp"):
    """DynamicVAE's incremental PI (paper Eq. 10 with the feedback sign fixed).

    ``β(t+1) = β(t) + Kp[σ(m(t) − C) − σ(m(t−1) − C)] − Ki·(C − m(t))``.

    Parameters
    ----------
    state : tuple
        ``(beta, p_prev)``: the integrator state and the previous
        ``σ(m(t−1) − C(t−1))``.
    m, c : float, array or tensor
        Measurement and set point.
    kp, ki, beta_min, beta_max : float or array
        Gains and clamps.
    ops : Ops
        Backend.
    mode : {"clamp", "official"}
        ``"clamp"`` (default): the state is the clamped β, which cannot wind
        up.  ``"official"``: the official DynamicVAE code: the state is the
        unclamped β, the I-term is dropped while that state is below
        ``beta_min``, and only the returned value is clamped.

    Returns
    -------
    beta, (new_state_beta, p)
    """
    beta, p_prev = state
    dm = m - c
    p = ops.sigmoid(dm)
    d_p = kp * (p - p_prev)
    d_i = ki * dm  # = −Ki·(C − m), exactly, with one operation fewer
    if mode == "clamp":
        new = ops.clip(beta + d_p + d_i, beta_min, beta_max)
        return new, (new, p)
    if mode == "official":
        d_i = ops.where(ops.lt(beta, beta_min), 0 * d_i, d_i)
        raw = beta + d_p + d_i
        return ops.clip(raw, beta_min, beta_max), (raw, p)
    raise ValueError(f"unknown anti-windup mode {mode!r}; expected one of {ANTI_WINDUP_MODES}")


def moving_average(history, y, ops: Ops = NUMPY):
    """Equal-weight moving average over the last ``len(history) + 1`` samples.

    Parameters
    ----------
    history : tuple
        The previous ``T − 1`` raw samples, newest first.
    y : float, array or tensor
        The new raw sample.
    ops : Ops
        Backend (unused: the filter is linear).

    Returns
    -------
    m, new_history
    """
    window = (y,) + tuple(history)
    total = window[0]
    for v in window[1:]:
        total = total + v
    return total / len(window), window[:-1]


def exponential_average(prev, y, alpha, ops: Ops = NUMPY):
    """Exponential moving average ``m = α·y + (1 − α)·m_prev``.

    Parameters
    ----------
    prev : float, array or tensor
        Previous output.
    y : float, array or tensor
        New raw sample.
    alpha : float
        Weight of the new sample, in (0, 1].
    ops : Ops
        Backend (unused).

    Returns
    -------
    m, m
    """
    m = alpha * y + (1 - alpha) * prev
    return m, m
