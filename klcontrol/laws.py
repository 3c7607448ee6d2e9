"""The control laws, each written exactly once.

A law is a pure function ``law(state, m, c, gains..., ops) -> (beta, new_state)``
of the controller state, the filtered measurement ``m`` (KL, nats), the set
point ``c`` and the gains, using only arithmetic and the primitives of an
:class:`~klcontrol.backend.Ops` backend.  Controllers run these functions on
floats, NumPy arrays or torch tensors; :mod:`klcontrol.analysis.stability` calls the very
same functions with sympy symbols to build the closed-loop Jacobian.

Sign conventions (docs/design.md): the error is ``e = C - m``; ``sigmoid(m - C)``
equals the papers' ``σ(-e)``.  Positive ``ki`` means negative feedback: a KL
below the set point lowers β.
"""
from __future__ import annotations

import math

from .backend import NUMPY, Ops

__all__ = [
    "fixed_beta",
    "capacity_relay",
    "positional_pi",
    "positional_pi_official",
    "incremental_pi",
    "geco",
    "pid_lagrangian",
    "rls_first_order",
    "table_lookup",
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


def geco(state, m, c, eta, alpha, beta_min, beta_max, ops: Ops = NUMPY):
    """GECO (Rezende & Viola 2018, Alg. 1) as a β law: a multiplicative Lagrange-multiplier update.

    Alg. 1 minimises ``KL + λ·C`` with the constraint ``C = recon − κ``, the
    moving average ``C_ma ← α·C_ma + (1 − α)·C`` and ``λ ← λ·exp(η·C_ma)``.
    Divided by λ the loss is ``recon + β·KL`` with ``β = 1/λ`` (the same
    minimiser; the gradient is scaled by 1/λ), so in β::

        C_ma ← α·C_ma + (1 − α)·(m − κ),      β ← β·exp(−η·C_ma),

    computed in log β and clamped to ``[β_min, β_max]`` (``0 < β_min``, both
    finite: λ = 1/β must stay a positive number).  A reconstruction worse
    than κ lowers β.

    Parameters
    ----------
    state : tuple
        ``(beta, c_ma)``: the current β and the moving average of ``m − κ``.
    m : float, array or tensor
        Measured reconstruction loss (nats), not the KL.
    c : float, array or tensor
        Tolerance κ (the set point of the reconstruction).
    eta : float or array
        Rate η of the multiplier (per nat).
    alpha : float or array
        Weight of the old average, in [0, 1) (paper: 0.99).
    beta_min, beta_max : float or array
        Clamps, ``0 < β_min ≤ β_max < ∞``.
    ops : Ops
        Backend.

    Returns
    -------
    beta, (beta, c_ma)
    """
    beta, c_ma = state
    c_ma = alpha * c_ma + (1 - alpha) * (m - c)
    log_beta = ops.clip(ops.log(beta) - eta * c_ma, ops.log(beta_min), ops.log(beta_max))
    # exp(log β_max) may round one ulp above β_max: clamp again in β.
    new = ops.clip(ops.exp(log_beta), beta_min, beta_max)
    return new, (new, c_ma)


def pid_lagrangian(state, m, c, kp, ki, kd, alpha_d, beta_min, beta_max, ops: Ops = NUMPY):
    """PID Lagrange multiplier (Stooke, Achiam & Abbeel 2020, Alg. 2) on the constraint ``KL ≤ C``.

    With the cost ``J = m`` (the KL) and the limit ``d = C``::

        Δ = m − C,   ∂ = (s − s_prev)⁺,   I ← (I + Δ)⁺,   β = λ = clip(Kp·Δ + Ki·I + Kd·∂, β_min, β_max)

    where ``s = α_d·s_prev + (1 − α_d)·m`` is the cost smoothed for the
    derivative (α_d = 0: Alg. 2's raw ``J − J_prev``).  The Lagrangian
    ``recon + λ·(KL − C)`` has the gradient of ``recon + β·KL`` with β = λ;
    Alg. 2's ``(·)⁺`` on λ is ``β_min = 0``.

    Parameters
    ----------
    state : tuple
        ``(integral, s_prev)``: the clamped integral of Δ and the previous smoothed cost.
    m, c : float, array or tensor
        Measured KL and the limit C.
    kp, ki, kd : float or array
        Gains (≥ 0 in the paper; positive is negative feedback).
    alpha_d : float or array
        Weight of the old smoothed cost in the D-term, in [0, 1).
    beta_min, beta_max : float or array
        Clamps (``β_min ≥ 0``).
    ops : Ops
        Backend.

    Returns
    -------
    beta, (integral, s)
    """
    integral, s_prev = state
    delta = m - c
    s = alpha_d * s_prev + (1 - alpha_d) * m
    rise = ops.clip(s - s_prev, 0.0, math.inf)
    integral = ops.clip(integral + delta, 0.0, math.inf)
    beta = ops.clip(kp * delta + ki * integral + kd * rise, beta_min, beta_max)
    return beta, (integral, s)


def rls_first_order(state, y, beta, forget, p_max, ops: Ops = NUMPY):
    """One recursive-least-squares update (forgetting factor) of the first-order model with an offset.

    The first-order plant ``y(t) = φ·y(t−1) + (1 − φ)·g(β(t))`` (φ = 1/(1+a)), with ``g`` replaced by its
    tangent at the operating point, is ``y(t) = φ·y(t−1) + b·β(t) + d`` with ``b = (1 − φ)·g′``; forgetting
    lets ``(φ, b, d)`` follow a drifting operating point.  With the regressor ``x = (y(t−1), β(t), 1)`` and
    the error ``e = y(t) − θ·x``::

        K = P·x / (λ + xᵀP·x),   θ ← θ + K·e,   P ← (P − K·xᵀP)/λ,

    except that ``P`` is not divided by λ while its trace exceeds ``p_max`` (no covariance wind-up when β
    does not move).  The noise variance ``s2`` is the λ-weighted mean of ``e²``.  (The differenced form
    ``Δy(t) = φ·Δy(t−1) + b·Δβ(t)`` is biased by white measurement noise, whose differences are correlated.)

    Parameters
    ----------
    state : tuple
        ``(phi, b, d, p11, p12, p13, p22, p23, p33, s2, y_prev)``: estimate, the symmetric P, noise, y(t−1).
    y : float, array or tensor
        The new measurement y(t).
    beta : float, array or tensor
        β(t), the weight of the update that produced y(t).
    forget : float or array
        Forgetting factor λ in (0, 1].
    p_max : float or array
        Bound on the trace of P below which it is divided by λ.
    ops : Ops
        Backend.

    Returns
    -------
    tuple
        The new state, same order.
    """
    phi, b, d, p11, p12, p13, p22, p23, p33, s2, y_prev = state
    x1, x2 = y_prev, beta
    e = y - (phi * x1 + b * x2 + d)
    v1 = p11 * x1 + p12 * x2 + p13  # P·x (x3 = 1)
    v2 = p12 * x1 + p22 * x2 + p23
    v3 = p13 * x1 + p23 * x2 + p33
    den = forget + x1 * v1 + x2 * v2 + v3
    k1, k2, k3 = v1 / den, v2 / den, v3 / den
    # both branches carry the state's dtype (torch.where of two Python floats would be float32)
    scale = ops.where(ops.gt(p11 + p22 + p33, p_max), 1 + 0 * p11, 1 / forget + 0 * p11)
    return (phi + k1 * e, b + k2 * e, d + k3 * e,
            (p11 - k1 * v1) * scale, (p12 - k1 * v2) * scale, (p13 - k1 * v3) * scale,
            (p22 - k2 * v2) * scale, (p23 - k2 * v3) * scale, (p33 - k3 * v3) * scale,
            forget * s2 + (1 - forget) * e * e, y)


def table_lookup(x, edges, values, ops: Ops = NUMPY):
    """Piecewise-constant table: ``values[k]`` for ``edges[k] ≤ x < edges[k+1]`` (ends extended).

    Parameters
    ----------
    x : float, array or tensor
        Where to read.
    edges : sequence of float
        ``len(values) + 1`` increasing edges.
    values : sequence of float
        One value per bin.
    ops : Ops
        Backend (a chain of ``where``, so it runs on tensors without host sync).

    Returns
    -------
    Like ``x``.
    """
    out = values[0] + 0 * x
    for edge, v in zip(edges[1:-1], values[1:]):
        out = ops.where(ops.lt(x, edge), out, v + 0 * x)
    return out


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
