"""Stability of the KL loop on any identified discrete LTI plant (numeric path).

The plant is the small-signal response ``u = β − β* → y = KL − y*`` as a
discrete single-input single-output LTI system with ``dt = 1`` (or ``True``)::

    x(t+1) = A x(t) + B u(t),      y(t) = C x(t) + D u(t),

where ``u(t)`` is the weight of update ``t`` and ``y(t)`` the KL after it:
``D ≠ 0`` is allowed (the paper's first-order plant has it: ``y(t)`` depends on
``β(t)``).  Accepted plants (see :func:`plant_matrices`): a python-control
``TransferFunction`` or ``StateSpace``; a tuple ``(A, B, C, D)``; any object
with ``linearize(setpoint) -> (A, B, C, D)`` (the :class:`klcontrol.plant.Plant`
protocol, e.g. a ``FirstOrderPlant`` or an identified fit).

The controller-and-filter part is linearised on its own, from the executable
laws of :mod:`klcontrol.laws` called on sympy symbols (as
:mod:`klcontrol.analysis.stability.symbolic` does for the whole first-order loop), as a
linear map from the *measured* KL to β with the time indexing of
:func:`klcontrol.simulate`: update ``t`` reads ``y(t)``, filters ``y(t − d)``
(plus measurement noise) and computes ``β(t+1)``.  Its states, "before update t"::

    incremental PI:  ξ(t) = (β(t), σ(m(t−1) − C), h_1 … h_{T−1} [, y(t−1) if d = 1])
    positional PI:   ξ(t) = (β(t), Σ(C − m) so far, h_1 … h_{T−1} [, y(t−1) if d = 1])

``ξ(t+1) = A_k ξ(t) + B_k (y(t), C(t), n(t))ᵀ``, ``β(t) = C_k ξ(t)``; the
matrices are affine in ``(K_p, K_i)`` and cached per configuration.  The
closed loop is then assembled numerically (``u = C_k ξ``)::

    [x; ξ](t+1) = [[A, B C_k], [B_y C, A_k + B_y D C_k]] [x; ξ](t) + [[0, 0], [B_c, B_n]] (C, n)ᵀ

and its eigenvalues are computed in batches over arrays of gains.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from klcontrol.analysis.stability.config import check_config

__all__ = [
    "ControllerLinearization",
    "controller_linearization",
    "plant_matrices",
    "linearize_plants",
    "closed_loop_matrix",
    "closed_loop_matrices",
    "eigenvalues_lti",
    "spectral_radius_lti",
    "is_stable_lti",
    "gain_crossings",
    "RobustLTI",
    "robust_stability_lti",
    "operating_points",
    "check_fit",
]


# -- the controller-and-filter part, from the laws ---------------------------------------------------------


@dataclass(frozen=True)
class ControllerLinearization:
    """The controller and filter as a linear map from the measured KL to β, affine in the gains.

    ``A_k = A0 + K_p·A_kp + K_i·A_ki`` (and likewise ``B``); input columns of
    ``B``: measured KL deviation ``y(t)``, set-point deviation ``C(t)``,
    measurement noise ``n(t)`` (added to what the filter consumes in update t).

    Attributes
    ----------
    states : tuple of str
        State names (see the module docstring).
    A0, A_kp, A_ki : ndarray, shape ``(n, n)``
    B0, B_kp, B_ki : ndarray, shape ``(n, 3)``
    C : ndarray, shape ``(1, n)``
        ``β(t) = C ξ(t)`` (no feedthrough: β(t+1) is computed in update t).
    window, delay, controller
        The configuration.
    """

    states: tuple
    A0: np.ndarray
    A_kp: np.ndarray
    A_ki: np.ndarray
    B0: np.ndarray
    B_kp: np.ndarray
    B_ki: np.ndarray
    C: np.ndarray
    window: int
    delay: int
    controller: str

    def matrices(self, kp, ki):
        """``(A_k, B_k)`` batched over the broadcast shape ``S`` of the gains: ``S + (n, n)``, ``S + (n, 3)``."""
        kp = np.asarray(kp, dtype=float)[..., None, None]
        ki = np.asarray(ki, dtype=float)[..., None, None]
        return self.A0 + kp * self.A_kp + ki * self.A_ki, self.B0 + kp * self.B_kp + ki * self.B_ki


@lru_cache(maxsize=None)
def _controller_linearization(window, delay, controller):
    import sympy as sp

    from klcontrol.analysis.stability import symbolic as ss

    kp, ki = ss.SYMBOLS["kp"], ss.SYMBOLS["ki"]
    # The controller's part of klcontrol.loop.loop_step run on symbols: its own delay, filter and law.
    lm, y = ss.controller_map(window, delay, controller)
    eq, state, nxt = lm.equilibrium, lm.state, lm.next_state
    f = sp.Matrix([ss._interior(e, eq) for e in nxt])
    A = f.jacobian(sp.Matrix(state)).applyfunc(lambda e: ss._at_equilibrium(e, lm))
    B = f.jacobian(sp.Matrix([y, lm.setpoint, lm.noise])).applyfunc(lambda e: ss._at_equilibrium(e, lm))

    def split(M):
        parts = [M.subs({kp: 0, ki: 0}), M.diff(kp), M.diff(ki)]
        rest = (M - parts[0] - kp * parts[1] - ki * parts[2]).applyfunc(sp.simplify)
        if rest != sp.zeros(*M.shape) or any(p.free_symbols for p in parts):
            raise RuntimeError("the controller's linearisation is not affine in (K_p, K_i)")
        return [np.array(p.tolist(), dtype=float) for p in parts]

    names = tuple(str(s) for s in state)
    Cm = np.zeros((1, len(state)))
    Cm[0, names.index("beta")] = 1.0
    return ControllerLinearization(names, *split(A), *split(B), Cm, window, delay, controller)


def controller_linearization(window=1, delay=0, controller="incremental") -> ControllerLinearization:
    """Linearise the controller and filter alone at the equilibrium, from :mod:`klcontrol.laws`.

    Parameters
    ----------
    window, delay, controller
        Loop configuration (see :func:`klcontrol.analysis.stability.is_stable`).

    Returns
    -------
    ControllerLinearization
        Cached per configuration (the first call imports sympy).
    """
    return _controller_linearization(*check_config(window, delay, controller))


# -- plants ------------------------------------------------------------------------------------------------


def _check_matrices(A, B, C, D, what):
    try:
        A, B, C, D = (np.atleast_2d(np.asarray(m, dtype=float)) for m in (A, B, C, D))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: A, B, C, D must be numeric matrices") from None
    n = A.shape[0] if A.size else 0
    if A.size == 0:
        A, B, C = np.zeros((0, 0)), np.zeros((0, 1)), np.zeros((1, 0))
    if A.shape != (n, n):
        raise ValueError(f"{what}: A must be square, got shape {A.shape}")
    if D.shape != (1, 1) or B.shape[1:] != (1,) and n or C.shape[:1] != (1,) and n:
        raise ValueError(
            f"{what}: the plant must be SISO (one input β, one output KL): got B {B.shape}, C {C.shape}, D {D.shape}"
        )
    if B.shape != (n, 1) or C.shape != (1, n):
        raise ValueError(f"{what}: B must be ({n}, 1) and C (1, {n}), got {B.shape} and {C.shape}")
    for name, m in zip("ABCD", (A, B, C, D)):
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{what}: {name} has NaN or infinite entries")
    return A, B, C, D


def _is_lti(plant):
    try:
        import control
    except ImportError:  # pragma: no cover - python-control is a dependency
        return False
    return isinstance(plant, (control.TransferFunction, control.StateSpace))


def plant_matrices(plant, setpoint=None):
    """``(A, B, C, D)`` of a plant's small-signal response β − β* → KL − y* (``dt = 1``).

    Parameters
    ----------
    plant : control.TransferFunction, control.StateSpace, tuple, or plant object
        * python-control system: discrete, ``dt`` 1 or ``True``, one input and one output;
        * ``(A, B, C, D)``: the matrices themselves;
        * an object with ``linearize(setpoint) -> (A, B, C, D)`` (the
          :class:`klcontrol.plant.Plant` protocol, e.g. a ``FirstOrderPlant``).
    setpoint : float, optional
        Operating point (KL set point); needed for plant objects, rejected for
        python-control systems and matrices (they are already linear).

    Returns
    -------
    tuple of ndarray
        ``A (n, n), B (n, 1), C (1, n), D (1, 1)``.

    Raises
    ------
    ValueError
        Continuous-time system, ``dt`` other than 1, MIMO, non-finite entries,
        a plant object without a set point, or an unknown plant type.
    """
    from klcontrol.plant import FirstOrderPlant

    if _is_lti(plant):
        import control

        what = type(plant).__name__
        if plant.ninputs != 1 or plant.noutputs != 1:
            raise ValueError(f"{what}: the plant must be SISO (β → KL), got {plant.ninputs} inputs and "
                             f"{plant.noutputs} outputs")
        dt = plant.dt
        if dt is None or (dt is not True and dt == 0):
            raise ValueError(f"{what}: a continuous-time system (dt={dt!r}); the KL loop is discrete: give "
                             "a discrete plant with dt=1 (one update per step), e.g. control.c2d(P, 1)")
        if dt is not True and dt != 1:
            raise ValueError(f"{what}: dt={dt!r}; the loop runs one update per step, so the plant needs dt=1 "
                             "(or dt=True); resample it to one-update steps")
        if setpoint is not None:
            raise ValueError(f"{what} is already linear: setpoint applies to plant objects only")
        ss = control.ss(plant) if isinstance(plant, control.TransferFunction) else plant
        return _check_matrices(ss.A, ss.B, ss.C, ss.D, what)
    if isinstance(plant, tuple) and len(plant) == 4:
        if setpoint is not None:
            raise ValueError("(A, B, C, D) is already linear: setpoint applies to plant objects only")
        return _check_matrices(*plant, "plant (A, B, C, D)")
    if callable(getattr(plant, "linearize", None)):
        what = type(plant).__name__
        if setpoint is None:
            raise ValueError(f"{what} is nonlinear: give setpoint= (the KL operating point) to linearise it")
        if not (isinstance(setpoint, numbers.Real) and math.isfinite(setpoint)):
            raise ValueError(f"setpoint must be a finite number, got {setpoint!r}")
        if isinstance(plant, FirstOrderPlant) and np.ndim(plant.a) != 0:
            raise ValueError(f"{what}: a must be a scalar here, got an array of shape {np.shape(plant.a)}")
        mats = plant.linearize(float(setpoint))
        if not (isinstance(mats, tuple) and len(mats) == 4):
            raise ValueError(f"{what}.linearize(setpoint) must return (A, B, C, D), got {type(mats).__name__}")
        return _check_matrices(*mats, f"{what}.linearize({setpoint:g})")
    raise ValueError(
        f"plant must be a python-control TransferFunction/StateSpace, an (A, B, C, D) tuple, a FirstOrderPlant or "
        f"an object with linearize(setpoint); got {type(plant).__name__}"
    )


def linearize_plants(plants, setpoints=None, draws=True):
    """Plant matrices for a set of plants and operating points.

    Parameters
    ----------
    plants : plant or sequence of plants
        Anything :func:`plant_matrices` accepts (e.g. bootstrap draws of a fit).
    setpoints : float or sequence of float, optional
        Operating points: every plant object is linearised at each of them.
        Linear plants (python-control, matrices) are taken as they are.
    draws : bool
        Also take the draws of plant objects that have
        ``linearize_draws(setpoint) -> sequence of (A, B, C, D)`` (bootstrap
        draws of a fit at that operating point; see :func:`operating_points`).

    Returns
    -------
    list of (label, (A, B, C, D))
        ``label`` is ``"i"``, ``"i@setpoint"`` or ``"i@setpoint#j"`` (draw ``j``).
    """
    if _is_lti(plants) or (isinstance(plants, tuple) and len(plants) == 4 and not _is_plantlike(plants[0])):
        plants = [plants]
    elif not isinstance(plants, (list, tuple)):
        plants = [plants]
    if len(plants) == 0:
        raise ValueError("plants is empty")
    sps = None if setpoints is None else [float(c) for c in np.atleast_1d(np.asarray(setpoints, dtype=float))]
    if sps is not None and (not sps or not all(math.isfinite(c) for c in sps)):
        raise ValueError(f"setpoints must be finite numbers, got {setpoints!r}")
    out = []
    for i, p in enumerate(plants):
        linear = _is_lti(p) or isinstance(p, tuple)
        if linear or sps is None:
            out.append((str(i), plant_matrices(p)))
            continue
        for c in sps:
            out.append((f"{i}@{c:g}", plant_matrices(p, c)))
            fn = getattr(p, "linearize_draws", None)
            if draws and callable(fn):
                for j, m in enumerate(fn(c)):
                    if not (isinstance(m, tuple) and len(m) == 4):
                        raise ValueError(f"{type(p).__name__}.linearize_draws({c:g}) must yield (A, B, C, D) tuples")
                    out.append((f"{i}@{c:g}#{j}", _check_matrices(*m, f"{type(p).__name__} draw {j} at {c:g}")))
    return out


def operating_points(fit, beta_range=None, n=9):
    """Set points spanning a fit's operating range: ``g(β)`` on ``n`` β values.

    Parameters
    ----------
    fit : object
        Needs ``g`` (a :class:`klcontrol.Gain`: the static map).  The β range is
        ``beta_range`` if given, else ``fit.beta_range``, else the span of
        ``fit.g.betas`` (the settled operating points of a Hammerstein fit).
    beta_range : (float, float), optional
    n : int
        Number of points (≥ 1).

    Returns
    -------
    list of float
        Distinct set points, increasing.

    Raises
    ------
    ValueError
        If the fit gives no static map or no β range.
    """
    g = getattr(fit, "g", None)
    if g is None or not callable(g):
        raise ValueError(f"{type(fit).__name__} has no static map g: give the set points explicitly")
    rng = beta_range if beta_range is not None else getattr(fit, "beta_range", None)
    if rng is None and getattr(g, "betas", None) is not None:
        rng = (float(np.min(g.betas)), float(np.max(g.betas)))
    if rng is None:
        raise ValueError(f"{type(fit).__name__} has no β range: give the set points or a β range explicitly")
    lo, hi = (float(v) for v in rng)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"β range must be finite with LO ≤ HI, got {rng!r}")
    ys = np.asarray(g(np.linspace(lo, hi, max(int(n), 1))), dtype=float)
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if ys.size == 0:
        raise ValueError(f"g has no positive KL over β ∈ [{lo:g}, {hi:g}]")
    return sorted({float(y) for y in ys})


def _is_plantlike(x):
    return _is_lti(x) or callable(getattr(x, "linearize", None)) or (isinstance(x, tuple) and len(x) == 4)


# -- the closed loop ---------------------------------------------------------------------------------------


def _gains(kp, ki, scalar=False):
    arrs = []
    for name, v in (("kp", kp), ("ki", ki)):
        try:
            arr = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array of numbers, got {v!r}") from None
        if scalar and arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar here (one loop), got an array of shape {arr.shape}")
        from klcontrol.analysis.stability.numeric import _finite

        if not _finite(arr):
            raise ValueError(f"{name} must be finite")
        arrs.append(arr)
    try:
        shape = np.broadcast_shapes(arrs[0].shape, arrs[1].shape)
    except ValueError:
        raise ValueError(f"kp and ki do not broadcast: shapes {arrs[0].shape} and {arrs[1].shape}") from None
    return arrs[0], arrs[1], shape


def closed_loop_matrices(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """The closed loop's ``(A, B, C, D)`` for one gain pair (inputs set point and noise, output ``y(t)``).

    States: the plant's ``x``, then the controller's (see
    :class:`ControllerLinearization`); output the KL deviation ``y(t)``.

    Returns
    -------
    A, B, C, D : ndarray
        ``B`` has two columns (``"setpoint"``, ``"noise"``).
    """
    kp, ki, _ = _gains(kp, ki, scalar=True)
    A, B, C, D = plant_matrices(plant, setpoint)
    lin = controller_linearization(window, delay, controller)
    Ak, Bk = lin.matrices(kp, ki)
    M = _assemble(A, B, C, D, Ak, Bk, lin.C)
    n = A.shape[0]
    Bcl = np.zeros((M.shape[0], 2))
    Bcl[n:] = Bk[:, 1:]
    Ccl = np.hstack([C, D @ lin.C])
    return M, Bcl, Ccl, np.zeros((1, 2))


def _assemble(A, B, C, D, Ak, Bk, Ck):
    """Batched closed-loop matrix for controller matrices of shape ``S + (m, m)``, ``S + (m, 3)``."""
    n, m = A.shape[0], Ak.shape[-1]
    shape = Ak.shape[:-2]
    By = Bk[..., :, :1]  # (S, m, 1)
    M = np.zeros(shape + (n + m, n + m))
    M[..., :n, :n] = A
    M[..., :n, n:] = B @ Ck
    M[..., n:, :n] = By @ C
    M[..., n:, n:] = Ak + By @ (D @ Ck)
    return M


def closed_loop_matrix(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """Closed-loop state matrix, batched over the gains: shape ``broadcast(kp, ki) + (N, N)``."""
    kp, ki, shape = _gains(kp, ki)
    A, B, C, D = plant_matrices(plant, setpoint)
    lin = controller_linearization(window, delay, controller)
    Ak, Bk = lin.matrices(np.broadcast_to(kp, shape), np.broadcast_to(ki, shape))
    return _assemble(A, B, C, D, Ak, Bk, lin.C)


def _eigvals(M):
    shape, n = M.shape[:-2], M.shape[-1]
    flat = M.reshape(-1, n, n)
    out = np.empty((flat.shape[0], n), dtype=complex)
    chunk = max(1, 2**22 // max(n * n, 1))  # bounded temporary memory for large maps
    for i in range(0, flat.shape[0], chunk):
        out[i:i + chunk] = np.linalg.eigvals(flat[i:i + chunk])
    return out.reshape(shape + (n,))


def eigenvalues_lti(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """Eigenvalues of the closed loop on an LTI plant (zeros of copied states included).

    Parameters
    ----------
    kp, ki : float or array
        Gains (broadcast together).
    plant
        See :func:`plant_matrices`.
    window, delay, controller
        Loop configuration.
    setpoint : float, optional
        Operating point, for plant objects.

    Returns
    -------
    ndarray of complex, shape ``broadcast + (N,)``
    """
    return _eigvals(closed_loop_matrix(kp, ki, plant, window, delay, controller, setpoint))


def _bilinear_matrix(n):
    """``W`` with ``W @ c`` the coefficients of ``(1 − w)^n p((1 + w)/(1 − w))`` (highest power first)."""
    W = np.zeros((n + 1, n + 1))
    for k in range(n + 1):  # c_k λ^(n−k) → c_k (1 + w)^(n−k) (1 − w)^k
        term = np.polymul(np.poly1d([1.0, 1.0]) ** (n - k), np.poly1d([-1.0, 1.0]) ** k).coeffs
        W[n + 1 - len(term):, k] = term
    return W


#: Relative size below which a trailing coefficient of the closed loop's characteristic polynomial is a zero root
#: (the copied states' exact zeros, which the eigenvalue expansion leaves at rounding level).
_ZERO_ROOT = 1e-13


def _affine_charpoly(plant, window, delay, controller, setpoint):
    """``(c0, ckp, cki)`` of ``det(λI − M(Kp, Ki))``, zero roots removed (highest power first), or None.

    In a single-input single-output loop the gains enter the closed-loop matrix through one rank-one term
    (the controller's output row is affine in them, its dynamics are not), so the characteristic polynomial is
    affine in ``(Kp, Ki)``; three expansions give it, a fourth point checks it (None when it does not hold to
    rounding, and the eigenvalue path is used).
    """
    A, B, C, D = plant_matrices(plant, setpoint)
    lin = controller_linearization(window, delay, controller)

    def poly(kp, ki):
        Ak, Bk = lin.matrices(np.asarray(kp, float), np.asarray(ki, float))
        return np.real(np.poly(_assemble(A, B, C, D, Ak, Bk, lin.C)))

    c0 = poly(0.0, 0.0)
    ck, ci = poly(1.0, 0.0) - c0, poly(0.0, 1.0) - c0
    probe = poly(0.37, -0.21)
    scale = max(np.max(np.abs(c)) for c in (c0, ck, ci))
    if not np.allclose(probe, c0 + 0.37 * ck - 0.21 * ci, rtol=0, atol=1e-10 * scale):
        return None
    n = len(c0) - 1
    while n > 0 and max(abs(c0[n]), abs(ck[n]), abs(ci[n])) <= _ZERO_ROOT * scale:
        n -= 1
    return c0[:n + 1], ck[:n + 1], ci[:n + 1]


def _affine_map(kp, ki, plant, window, delay, controller, setpoint):
    """``(affine, kp, ki, shape)`` for a large map on one LTI plant through the compiled kernels, or None."""
    from klcontrol.analysis.stability import kernels as _kernels

    if not isinstance(kp, np.ndarray) and not isinstance(ki, np.ndarray):
        return None
    kp, ki, shape = _gains(kp, ki)
    npts = int(np.prod(shape, dtype=np.int64))
    if npts < _kernels.MIN_POINTS or not _kernels.available():
        return None
    aff = _affine_charpoly(plant, window, delay, controller, setpoint)
    if aff is None or len(aff[0]) < 2:
        return None
    flat = [np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(-1) for v in (kp, ki)]
    return aff, flat[0], flat[1], shape


def spectral_radius_lti(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """Largest eigenvalue modulus of the closed loop on an LTI plant (parameters of :func:`eigenvalues_lti`).

    Returns
    -------
    float or ndarray
    """
    r = np.max(np.abs(eigenvalues_lti(kp, ki, plant, window, delay, controller, setpoint)), axis=-1)
    return float(r) if r.ndim == 0 else r


def is_stable_lti(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """Whether the closed loop on an LTI plant is asymptotically stable (spectral radius < 1).

    Numerical: a loop within rounding of the boundary (|ρ − 1| ≲ 1e-12 on the eigenvalue path; ≲ 1e-9 on a
    large map, which runs the compiled Routh–Hurwitz kernel on the characteristic polynomial, affine in the
    gains, mapped to the left half-plane) may go either way.

    Returns
    -------
    bool or ndarray of bool
    """
    fast = _affine_map(kp, ki, plant, window, delay, controller, setpoint)
    if fast is not None:
        from klcontrol.analysis.stability import kernels as _kernels

        (c0, ck, ci), kpf, kif, shape = fast
        W = _bilinear_matrix(len(c0) - 1)
        return _kernels.stable_map((W @ c0, W @ ck, W @ ci), kpf, kif, kpf.size).reshape(shape)
    r = spectral_radius_lti(kp, ki, plant, window, delay, controller, setpoint)
    return bool(r < 1) if np.ndim(r) == 0 else r < 1


# -- robust verdicts and margins -------------------------------------------------------------------------


def _cayley(lams):
    """Ascending coefficients of ``∏ ((1 + λ) w + (1 − λ))`` (real part): ``(1 − w)^N p((1 + w)/(1 − w))``."""
    q = np.array([1.0 + 0j])
    for lam in lams:
        q = np.convolve(q, [1 - lam, 1 + lam])
    return q.real


def gain_crossings(kp, ki, plant, window=1, delay=0, controller="incremental", setpoint=None):
    """Gain factors ``s > 0`` at which ``(s·K_p, s·K_i)`` puts an eigenvalue on the unit circle.

    The controller is linear in its gains, and the gains act through one row
    of the closed-loop matrix, so ``M(s) = M0 + s·M1`` with ``M1`` of rank 1
    and the characteristic polynomial is affine in ``s``.  After the bilinear
    map it is ``Q0(w) + s·Q1(w)``, built from the eigenvalues of ``M(0)`` and
    ``M(1)`` (accurate near λ = 1), and every crossing is a real root of
    ``Re Q0(iω)·Im Q1(iω) − Im Q0(iω)·Re Q1(iω)`` (as in
    :func:`klcontrol.analysis.stability.robust.crossings`).  Each is verified by the
    eigenvalues of ``M(s)``.

    Returns
    -------
    list of (float, float)
        ``(s, arg λ)`` sorted by ``s``.
    """
    from klcontrol.analysis.stability.robust import _affine_crossings

    kp, ki, _ = _gains(kp, ki, scalar=True)
    mats = plant_matrices(plant, setpoint)
    M0 = closed_loop_matrix(0.0, 0.0, mats, window, delay, controller)
    M1 = closed_loop_matrix(kp, ki, mats, window, delay, controller) - M0
    if np.linalg.matrix_rank(M1, tol=1e-12 * max(1.0, np.abs(M1).max())) > 1:
        raise RuntimeError("the gains enter the closed loop through more than one row: not affine in s")
    q0 = _cayley(np.linalg.eigvals(M0))
    q1 = _cayley(np.linalg.eigvals(M0 + M1)) - q0
    out = []
    for s, ang in _affine_crossings(q0, q1):
        if not (math.isfinite(s) and s > 0):
            continue
        rho = float(np.max(np.abs(np.linalg.eigvals(M0 + s * M1))))
        if abs(rho - 1) > 1e-6:
            continue
        if out and abs(out[-1][0] - s) <= 1e-9 * s and abs(out[-1][1] - ang) < 1e-6:
            continue
        out.append((float(s), float(ang)))
    return out


@dataclass(frozen=True)
class RobustLTI:
    """Verdict of :func:`robust_stability_lti` over a set of plants.

    Attributes
    ----------
    stable : bool
        Every plant's closed loop is stable.
    n_plants, n_stable : int
        Plants examined and how many are stable.
    worst_spectral_radius : float
        Largest spectral radius over the plants; ``worst_plant`` its label.
    spectral_radii : tuple of float
        Per plant, in the order of ``labels``.
    labels : tuple of str
        ``"i"`` (plant index) or ``"i@setpoint"``.
    gain_margin : float
        If stable: the largest ``s`` such that ``(s'·K_p, s'·K_i)`` is stable on
        every plant for all ``s' ∈ [1, s)`` (``inf`` if unbounded); else 0.
    gain_range : tuple or None
        Open range of factors ``s > 0`` stable on every plant, containing 1
        (if stable) or nearest to it; ``None`` if no factor is.
    """

    stable: bool
    n_plants: int
    n_stable: int
    worst_spectral_radius: float
    worst_plant: str
    spectral_radii: tuple
    labels: tuple
    gain_margin: float
    gain_range: tuple | None

    def to_dict(self) -> dict:
        """JSON-able dict."""
        d = asdict(self)
        d["spectral_radii"], d["labels"] = list(self.spectral_radii), list(self.labels)
        return d


def robust_stability_lti(kp, ki, plants, window=1, delay=0, controller="incremental", setpoints=None,
                         margins=True, draws=True):
    """Stability of one gain pair on every plant of a set (bootstrap draws, operating points), with margins.

    Parameters
    ----------
    kp, ki : float
        Gains.
    plants : plant or sequence of plants
        Anything :func:`plant_matrices` accepts.
    window, delay, controller
        Loop configuration.
    setpoints : float or sequence, optional
        Operating points at which plant objects are linearised (each plant at each).
    margins : bool
        Compute ``gain_margin`` / ``gain_range`` (one crossing search per plant).
    draws : bool
        Include the ``linearize_draws`` of plant objects (see :func:`linearize_plants`).

    Returns
    -------
    RobustLTI
    """
    cfg = check_config(window, delay, controller)
    kp, ki, _ = _gains(kp, ki, scalar=True)
    kp, ki = float(kp), float(ki)
    items = linearize_plants(plants, setpoints, draws)
    labels = tuple(lbl for lbl, _ in items)
    rhos = tuple(spectral_radius_lti(kp, ki, m, *cfg) for _, m in items)
    stable = all(r < 1 for r in rhos)
    worst = int(np.argmax(rhos))
    gain_margin, gain_range = (0.0, None)
    if margins:
        cuts = sorted({s for _, m in items for s, _ in gain_crossings(kp, ki, m, *cfg)})
        edges = [0.0] + cuts + [math.inf]
        ranges = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi <= lo:
                continue
            s = 0.5 * (lo + hi) if math.isfinite(hi) else 2 * (lo + 1)
            if all(spectral_radius_lti(s * kp, s * ki, m, *cfg) < 1 for _, m in items):
                ranges.append((lo, hi))
        # A crossing point itself is never stable, so neighbouring stable ranges stay separate.
        merged = ranges
        if merged:
            gain_range = min(merged, key=lambda r: 0.0 if r[0] < 1 < r[1] else
                             min(abs(math.log(max(r[0], 1e-300))), abs(math.log(r[1]))))
        if stable and gain_range is not None and gain_range[0] < 1 < gain_range[1]:
            gain_margin = gain_range[1]
    return RobustLTI(bool(stable), len(items), int(sum(r < 1 for r in rhos)), float(rhos[worst]), labels[worst],
                     rhos, labels, float(gain_margin), gain_range)


def check_fit(fit, kp, ki, window=1, delay=0, controller="incremental", setpoints=None, beta_range=None,
              draws=True):
    """Robust verdict of PI gains on any fit that gives its linearisations (``klcontrol check --fit``).

    The fit protocol: ``fit.linearize(setpoint) -> (A, B, C, D)`` (the
    small-signal β − β* → KL − y* at that operating point, ``dt = 1``);
    optionally ``fit.linearize_draws(setpoint) -> sequence of (A, B, C, D)``
    (bootstrap draws) and a static map ``fit.g`` with a β range for the
    default operating points (:func:`operating_points`).

    Parameters
    ----------
    fit : object
        Follows the protocol above.
    kp, ki : float
        Gains.
    window, delay, controller
        Loop configuration.
    setpoints : sequence of float, optional
        Operating points; default :func:`operating_points` over ``beta_range``.
    beta_range : (float, float), optional
        β range for the default operating points.
    draws : bool
        Include the bootstrap draws.

    Returns
    -------
    dict
        JSON-able: ``stable``, ``setpoints``, ``n_plants``, ``n_stable``,
        ``worst_spectral_radius``, ``worst_plant``, ``gain_margin``,
        ``gain_range``, ``per_plant`` (label and spectral radius).
    """
    if not callable(getattr(fit, "linearize", None)):
        raise ValueError(f"{type(fit).__name__} cannot give its linearisation: it needs linearize(setpoint)")
    sps = list(setpoints) if setpoints is not None else operating_points(fit, beta_range)
    r = robust_stability_lti(kp, ki, [fit], window, delay, controller, setpoints=sps, draws=draws)
    return {
        "stable": r.stable, "kp": float(kp), "ki": float(ki), "window": window, "delay": delay,
        "controller": controller, "setpoints": [float(c) for c in sps], "draws_included": bool(
            draws and callable(getattr(fit, "linearize_draws", None))),
        "n_plants": r.n_plants, "n_stable": r.n_stable, "worst_spectral_radius": r.worst_spectral_radius,
        "worst_plant": r.worst_plant, "gain_margin": r.gain_margin,
        "gain_range": None if r.gain_range is None else list(r.gain_range),
        "per_plant": [{"label": lbl, "spectral_radius": rho} for lbl, rho in zip(r.labels, r.spectral_radii)],
    }
