"""Symbolic linearisation of the executable KL loop.

The closed-loop map is built by *calling* the controller laws of
:mod:`klcontrol.laws` with sympy symbols (backend :data:`klcontrol.backend.SYMPY`),
never by retyping a Jacobian.  The plant is the first-order model with ``g``
linearised at the equilibrium::

    y(t) = y(t−1)/(1+a) + a/(1+a)·(C + g′·(β(t) − β*)),     β* = g⁻¹(C), y* = C.

State convention ("before update t"): the plant's state, the controller's
law state in the order of its state dict, the moving-average history, and for
delay 1 the measurement not yet consumed::

    incremental PI:  x(t) = (y(t−1), β(t), integrator, σ(m(t−1) − C), h_1 … h_{T−1}[, kl(t−1)])
    positional PI:   x(t) = (y(t−1), β(t), Σ(C − m) so far, h_1 … h_{T−1}[, kl(t−1)])

where ``h`` are the previous inputs of the moving-average filter, newest first.
Update ``t`` is :func:`klcontrol.loop.loop_step` — the very function
:func:`klcontrol.simulate` runs.  The output of the linear system is ``y(t)``;
copies of states (β and the clamped integrator; ``y(t−1)`` and ``kl(t−1)``)
only add zero eigenvalues.

Stability is decided on the characteristic polynomial ``p(λ)`` of the Jacobian
(factors ``λ`` dropped: they are the zero eigenvalues of copied states), via the
bilinear map ``λ = (1 + w)/(1 − w)`` (unit disc → left half plane) and the
Routh–Hurwitz criterion.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy.polys.matrices import DomainMatrix

from klcontrol.analysis.stability.config import check_config
from klcontrol.backend import SYMPY
from klcontrol.loop import LoopState, loop_step
from klcontrol.plant import FirstOrderPlant, LinearGain, Plant
from klcontrol.registry import linear_controller

__all__ = [
    "SYMBOLS",
    "LoopMap",
    "loop_map",
    "controller_map",
    "jacobian",
    "characteristic_polynomial",
    "shifted_coefficients",
    "bilinear_coefficients",
    "hurwitz_conditions",
    "conditions",
    "check_config",
]

kp, ki, gp = sp.symbols("K_p K_i gprime", real=True)
a = sp.Symbol("a", positive=True)
lam, z, w = sp.symbols("lambda z w")
#: Parameter symbols ``(K_p, K_i, a, g′)`` and the polynomial variables ``λ, z = λ − 1, w``.
SYMBOLS = {"kp": kp, "ki": ki, "a": a, "gprime": gp, "lambda": lam, "z": z, "w": w}


@dataclass(frozen=True)
class LoopMap:
    """One update of the closed loop as sympy expressions.

    Attributes
    ----------
    state : tuple of Symbol
        State ``x(t)`` (see the module docstring).
    next_state : tuple of Expr
        ``x(t+1)`` as expressions of the state, the set point ``setpoint`` and
        the measurement noise ``noise``.
    output : Expr
        ``y(t)``.
    equilibrium : dict
        Substitution putting state, set point and noise at the equilibrium.
    setpoint, noise : Symbol
        Inputs: set point ``C(t)`` used by update ``t``; additive noise on the
        measurement the filter consumes in update ``t``.
    """

    state: tuple
    next_state: tuple
    output: sp.Expr
    equilibrium: dict
    setpoint: sp.Symbol
    noise: sp.Symbol


def _symbols_like(names):
    return tuple(sp.Symbol(n, real=True) for n in names)


class _MeasuredKL(Plant):
    """A stand-in plant whose output is the symbol ``y``: isolates the controller's part of the loop step."""

    kind = "_measured_kl"

    def __init__(self, y):
        self.y = y

    def initial_state(self, y0, shape=()):
        return ()

    def step(self, state, beta, ops=SYMPY):
        return self.y, ()


def _build(window, delay, controller, plant_for):
    """Run :func:`klcontrol.loop.loop_step` on symbols; ``plant_for(ystar, bstar)`` gives the plant and its state."""
    ystar, bstar, c, noise = sp.symbols("y_star beta_star C n", real=True)
    # Clamps a positive margin below β* keep the equilibrium interior, so every
    # clamp and anti-windup branch resolves there (the positional law's offset
    # is β_min, hence a finite one).
    margin = sp.Symbol("margin", positive=True)
    ctrl = linear_controller(controller, window)
    params = {k: sp.Symbol(f"_{k}", real=True) for k in ctrl.params}
    params.update({"kp": kp, "ki": ki, "beta_min": bstar - margin, "beta_max": sp.oo, "beta0": bstar})
    plant, x_plant = plant_for(ystar, bstar)

    eq_ctrl = ctrl.equilibrium_state(bstar, ystar, params, SYMPY)
    law_keys = [k for k in eq_ctrl if k != "filter"]
    x_ctrl = {k: sp.Symbol(k, real=True) for k in law_keys}
    x_ctrl["filter"] = _symbols_like([f"h_{i}" for i in range(1, window)])
    x_delay = _symbols_like(["y_delayed"]) if delay else ()
    x = LoopState(x_plant, x_ctrl, x_delay)

    y, _, x_next = loop_step(plant, ctrl, x, c, params, noise, SYMPY)

    def flat(st: LoopState):
        return tuple(st.plant) + tuple(st.controller[k] for k in law_keys) + tuple(st.controller["filter"]) + tuple(
            st.delayed
        )

    eq = {c: ystar, noise: 0}
    eq.update({s_: ystar for s_ in tuple(x_plant) + x_ctrl["filter"] + x_delay})
    eq.update({x_ctrl[k]: sp.sympify(eq_ctrl[k]) for k in law_keys})
    return flat(x), flat(x_next), y, eq, c, noise, ystar


@lru_cache(maxsize=None)
def loop_map(window: int = 1, delay: int = 0, controller: str = "incremental") -> LoopMap:
    """Build the closed-loop update by running the loop's own step on symbols.

    :func:`klcontrol.loop.loop_step` is called with sympy symbols: the
    first-order plant's :meth:`~klcontrol.FirstOrderPlant.step` with its gain
    replaced by the tangent ``y* + g′·(β − β*)``
    (:class:`~klcontrol.plant.LinearGain`), then the controller's own filter
    and law (:meth:`~klcontrol.Controller.advance`).  Nothing of the loop is
    restated here.

    Parameters
    ----------
    window : int
        Moving-average window ``T`` (1: no filter).
    delay : {0, 1}
        0: β(t+1) from y(t) (as trained); 1: from y(t−1) (paper Eq. 15).
    controller : str
        A linearisable kind of :data:`klcontrol.registry.LINEAR_KINDS`; they
        all linearise identically inside the clamps.

    Returns
    -------
    LoopMap
    """
    window, delay, controller = check_config(window, delay, controller)

    def first_order(ystar, bstar):
        return FirstOrderPlant(a, LinearGain(ystar, gp, bstar)), _symbols_like(["y_prev"])

    state, nxt, y, eq, c, noise, _ = _build(window, delay, controller, first_order)
    return LoopMap(state, nxt, y, eq, c, noise)


def _evaluate(expr, eq):
    """``expr`` at the equilibrium ``eq``, cancelled (``xreplace``, no ``subs``)."""
    out = expr.xreplace(eq)
    out = out.replace(sp.exp, lambda x: sp.exp(sp.cancel(x)))  # the sigmoid's argument is 0 there
    return sp.cancel(out)


def _truth(cond, eq):
    """Truth value of a branch condition at the equilibrium, or None if undecidable.

    ``xreplace`` + ``cancel`` of the difference of the two sides, with the
    sign taken from the symbols' assumptions (``margin > 0``): much faster
    than ``subs`` + ``simplify``, which dominated the derivation for long
    windows.
    """
    if cond is sp.true or cond is sp.false:
        return cond is sp.true
    if isinstance(cond, (sp.And, sp.Or)):
        vals = [_truth(c, eq) for c in cond.args]
        short = isinstance(cond, sp.Or)  # Or: one True decides; And: one False decides
        if short in vals:
            return short
        return None if None in vals else not short
    if isinstance(cond, sp.Not):
        v = _truth(cond.args[0], eq)
        return None if v is None else not v
    if isinstance(cond, sp.core.relational.Relational):
        d = _evaluate(cond.lhs - cond.rhs, eq)
        pos, neg, zero = d.is_positive, d.is_negative, d.is_zero
        if cond.rel_op == ">":
            return pos
        if cond.rel_op == "<":
            return neg
        if cond.rel_op == ">=":
            return None if neg is None else not neg
        if cond.rel_op == "<=":
            return None if pos is None else not pos
        if cond.rel_op == "==":
            return zero
        return None if zero is None else not zero
    v = sp.simplify(cond.xreplace(eq))
    return (v is sp.true) if v in (sp.true, sp.false) else None


@lru_cache(maxsize=None)
def controller_map(window: int = 1, delay: int = 0, controller: str = "incremental"):
    """The controller's part of the loop update alone, on symbols: measured KL ``y`` in, β out.

    The same :func:`klcontrol.loop.loop_step` as :func:`loop_map`, with a
    stand-in plant whose output is the input symbol ``y`` (delay, filter and law
    are the controller's own).  Used to interconnect the controller with any
    LTI plant (:mod:`klcontrol.analysis.stability.lti`).

    Returns
    -------
    (LoopMap, y)
        ``LoopMap.output`` is β(t) (the state ``beta``), and ``y`` the input symbol
        (the KL after update ``t``); the equilibrium substitution includes ``y = y*``.
    """
    window, delay, controller = check_config(window, delay, controller)
    yin = sp.Symbol("y", real=True)

    def measured(ystar, bstar):
        return _MeasuredKL(yin), ()

    state, nxt, _, eq, c, noise, ystar = _build(window, delay, controller, measured)
    eq = dict(eq)
    eq[yin] = ystar
    beta = next(s_ for s_ in state if s_.name == "beta")
    return LoopMap(state, nxt, beta, eq, c, noise), yin


def _interior(expr, eq):
    """Replace clamps and branches by the branch active at the equilibrium.

    The equilibrium is interior (strict inequalities), so the active branch is
    constant in a neighbourhood and the Jacobian is that branch's Jacobian.
    """

    def holds(cond):
        v = _truth(cond, eq)
        if v is None:
            raise RuntimeError(f"cannot decide {cond} at the equilibrium")
        return v

    def pick(node):
        if isinstance(node, sp.Piecewise):
            for e, c in node.args:
                if holds(c):
                    return e
        if isinstance(node, (sp.Max, sp.Min)):
            vals = [_evaluate(arg, eq) for arg in node.args]
            best = 0
            for i in range(1, len(vals)):
                diff = sp.cancel(vals[i] - vals[best])
                if diff.is_zero or diff.is_positive is None:
                    raise RuntimeError(f"clamp {node} is active at the equilibrium")
                if diff.is_positive == isinstance(node, sp.Max):
                    best = i
            return node.args[best]
        return node

    kinds = (sp.Piecewise, sp.Max, sp.Min)
    while expr.has(*kinds):
        expr = expr.replace(lambda n: isinstance(n, kinds), pick)
    return expr


def _at_equilibrium(expr, lm: LoopMap):
    if expr == 0:
        return expr
    out = _evaluate(expr, lm.equilibrium)
    free = out.free_symbols - {kp, ki, a, gp}
    if free:
        raise RuntimeError(f"linearisation still depends on {free}: the equilibrium is not interior")
    return out


def _gradient_at_equilibrium(expr, variables, lm: LoopMap) -> dict:
    """``{v: ∂expr/∂v}`` at the equilibrium for the ``variables`` that ``expr`` depends on.

    One directional derivative instead of one derivative per variable: with
    ``v = v* + t·u_v``, ``d expr/dt`` at ``t = 0`` is ``Σ u_v·∂expr/∂v``, linear in
    the direction symbols ``u_v``, whose coefficients are read off.  For a long
    window (40 history states in one moving average) this is what keeps the
    linearisation fast.
    """
    free = expr.free_symbols
    used = [v for v in variables if v in free]
    if not used:
        return {}
    t = sp.Dummy("t")
    u = {v: sp.Dummy(f"u_{v}") for v in used}
    line = dict(lm.equilibrium)
    line.update({v: lm.equilibrium[v] + t * u[v] for v in used})
    d = _evaluate(sp.diff(expr.xreplace(line), t).xreplace({t: 0}), {})
    coeffs, rest = sp.linear_eq_to_matrix([d], [u[v] for v in used])
    if sp.cancel(rest[0]) != 0:
        raise RuntimeError("the directional derivative is not linear in the direction")
    out = {}
    for v, cf in zip(used, coeffs):
        cf = sp.cancel(cf)
        if cf.free_symbols - {kp, ki, a, gp}:
            raise RuntimeError(f"linearisation still depends on {cf.free_symbols - {kp, ki, a, gp}}: "
                               "the equilibrium is not interior")
        out[v] = cf
    return out


@lru_cache(maxsize=None)
def _interior_map(window: int, delay: int, controller: str):
    lm = loop_map(window, delay, controller)
    return lm, tuple(_interior(e, lm.equilibrium) for e in lm.next_state)


@lru_cache(maxsize=None)
def _linear(window: int, delay: int, controller: str):
    lm, f = _interior_map(window, delay, controller)
    f = sp.Matrix(f)
    x = sp.Matrix(lm.state)
    A = f.jacobian(x).applyfunc(lambda e: _at_equilibrium(e, lm))
    B = f.jacobian(sp.Matrix([lm.setpoint, lm.noise])).applyfunc(lambda e: _at_equilibrium(e, lm))
    C = sp.Matrix([lm.output]).jacobian(x).applyfunc(lambda e: _at_equilibrium(e, lm))
    return A, B, C


def jacobian(window: int = 1, delay: int = 0, controller: str = "incremental", inputs: bool = False):
    """Jacobian of the closed-loop update at the equilibrium.

    Parameters
    ----------
    window, delay, controller
        Loop configuration (see :func:`loop_map`).
    inputs : bool
        Also return the input matrix (columns: set point, measurement noise)
        and the output row (``y(t)``).

    Returns
    -------
    sympy.Matrix or (A, B, C)
        In the symbols ``K_p, K_i, a, gprime`` of :data:`SYMBOLS`.
    """
    A, B, C = _linear(*check_config(window, delay, controller))
    return (A, B, C) if inputs else A


def _copy_chains(lm: LoopMap, f):
    """States whose next value is exactly another state: ``{j: (root, depth)}``.

    Read off the loop map (the moving-average history ``h_i ← h_{i−1}``, the
    delayed measurement), not restated: ``x_j(t+1) = x_k(t)``.  Following the
    chain ``j → k → …`` to a state that is not a copy gives the root ``r`` and
    the depth ``d`` with ``x_j(t) = x_r(t − d)``.  A cycle of pure copies (none
    in this loop) leaves its states as ordinary ones.
    """
    index = {s: i for i, s in enumerate(lm.state)}
    copy_of = {j: index[e] for j, e in enumerate(f) if e in index and index[e] != j}
    chains = {}
    for j in copy_of:
        seen, r, d = {j}, j, 0
        while r in copy_of:
            r, d = copy_of[r], d + 1
            if r in seen:
                break
            seen.add(r)
        else:
            chains[j] = (r, d)
    return chains


@lru_cache(maxsize=None)
def _charpoly(window: int, delay: int, controller: str) -> sp.Poly:
    lm, f = _interior_map(window, delay, controller)
    x = lm.state
    chains = _copy_chains(lm, f)
    core = [j for j in range(len(x)) if j not in chains]
    pos = {j: i for i, j in enumerate(core)}
    # Eigenvector of a copy: λ·v_j = v_k, so v_j = v_r·λ^(−d).  The Schur complement
    # of the (nilpotent) copy block gives det(λI − A) = λ^(#copies)·det(λI − M(λ)),
    # M[c, r] = Σ_k A[c, k]·λ^(−d_k) over the states k rooted at r.  Column r is
    # scaled by λ^(D_r), D_r the deepest copy of r, so every entry is a polynomial.
    root = {j: chains.get(j, (j, 0)) for j in range(len(x))}
    depth = {r: 0 for r in core}
    for r, d in root.values():
        depth[r] = max(depth[r], d)
    n = len(core)
    N = []
    for c in core:
        row = [sp.Integer(0)] * n
        row[pos[c]] += lam ** (depth[c] + 1)
        grad = _gradient_at_equilibrium(f[c], x, lm)
        for k, xk in enumerate(x):
            if xk in grad:
                r, d = root[k]
                row[pos[r]] -= grad[xk] * lam ** (depth[r] - d)
        # Clear the row's denominators (powers of 1 + a and integers): the
        # determinant changes by a factor the normalisation below removes, and
        # the entries land in a polynomial ring where fraction-free elimination
        # needs no gcds.
        fr = [sp.fraction(sp.cancel(e)) for e in row]
        den = sp.lcm([d for _, d in fr])
        N.append([sp.cancel(num * den / d) for num, d in fr])
    dom = sp.QQ[kp, ki, a, gp, lam]
    M = DomainMatrix([[dom.from_sympy(e) for e in row] for row in N], (n, n), dom)
    det = sp.Poly(dom.to_sympy(M.det()), lam, domain=sp.QQ[kp, ki, a, gp])
    # Drop λ^k factors (zero eigenvalues of states that only copy others).
    while det.degree() > 0 and det.eval(0) == 0:
        det = det.exquo(sp.Poly(lam, lam, domain=det.domain))
    _, poly = det.clear_denoms(convert=True)
    poly = sp.Poly(poly.as_expr(), lam, domain=sp.QQ[kp, ki, a, gp]).primitive()[1]
    lead = sp.Poly(poly.LC(), a)
    # Normalise so the leading coefficient is a positive power of (1 + a).
    norm = lead.LC()
    scale = sp.factor(lead.as_expr() / norm)
    if not (scale.is_positive or scale == 1):
        raise RuntimeError(f"unexpected leading coefficient {lead.as_expr()}")
    return sp.Poly(poly.as_expr() / norm, lam, domain=sp.QQ[kp, ki, a, gp])


def characteristic_polynomial(window: int = 1, delay: int = 0, controller: str = "incremental") -> sp.Poly:
    """Characteristic polynomial ``p(λ)`` of the linearised loop, zero roots removed.

    The polynomial is ``(1 + a)^k · det(λI − A) / λ^m``: a positive multiple,
    polynomial in ``K_p, K_i, a, g′``, with the same nonzero roots.

    Returns
    -------
    sympy.Poly
        In ``λ`` (:data:`SYMBOLS` ``["lambda"]``).
    """
    return _charpoly(*check_config(window, delay, controller))


@lru_cache(maxsize=None)
def shifted_coefficients(window: int = 1, delay: int = 0, controller: str = "incremental") -> tuple:
    """Coefficients of ``p(1 + z)`` in ``z = λ − 1``, highest power first.

    The roots of the slow KL loop crowd near λ = 1; in ``z`` the coefficients
    are small products of the parameters computed without cancellation, so the
    roots keep their relative accuracy.
    """
    p = characteristic_polynomial(window, delay, controller)
    # Taylor shift in the polynomial domain: no expression expansion.
    q = sp.Poly(p.shift(1).as_expr(lam), lam, domain=p.domain)
    return tuple(sp.factor(cf) for cf in q.all_coeffs())


@lru_cache(maxsize=None)
def bilinear_coefficients(window: int = 1, delay: int = 0, controller: str = "incremental") -> tuple:
    """Coefficients of ``q(w) = (1 − w)^n · p((1 + w)/(1 − w))``, highest power first.

    ``|λ| < 1`` exactly when ``Re w < 0``, so ``p`` is Schur stable iff ``q`` is
    Hurwitz stable.  This is the map of the DynamicVAE paper (its Eq. 23 with
    ``ξ = w``).
    """
    p = characteristic_polynomial(window, delay, controller)
    n = p.degree()
    dom = p.domain
    # Σ c_k (1 + w)^k (1 − w)^(n − k) in Poly arithmetic over the parameters'
    # polynomial ring (expression `expand` is what made long windows slow).
    plus, minus = sp.Poly(1 + w, w, domain=dom), sp.Poly(1 - w, w, domain=dom)
    pw_plus, pw_minus = [sp.Poly(1, w, domain=dom)], [sp.Poly(1, w, domain=dom)]
    for _ in range(n):
        pw_plus.append(pw_plus[-1] * plus)
        pw_minus.append(pw_minus[-1] * minus)
    q = sp.Poly(0, w, domain=dom)
    for (k,), cf in p.terms():
        q += (pw_plus[k] * pw_minus[n - k]).mul_ground(cf)
    coeffs = q.all_coeffs()
    coeffs = [0] * (n + 1 - len(coeffs)) + coeffs
    return tuple(sp.factor(cf) for cf in coeffs)


def hurwitz_conditions(coeffs) -> list:
    """Liénard–Chipart conditions for ``Σ c_k w^k`` (highest first) to be Hurwitz.

    All coefficients positive and the Hurwitz determinants ``Δ_{n−1}, Δ_{n−3}, …``
    positive; this is equivalent to Routh–Hurwitz and needs fewer determinants.

    Returns
    -------
    list of sympy expressions ``e`` meaning ``e > 0``.
    """
    c = list(coeffs)
    n = len(c) - 1
    conds = list(c)

    def coef(k):  # coefficient of w^(n-k): c[k] in highest-first order
        return c[k] if 0 <= k <= n else 0

    def hurwitz_det(order):
        H = sp.Matrix(order, order, lambda i, j: coef(2 * j - i + 1))
        return H.det(method="berkowitz")

    for order in range(n - 1, 0, -2):
        conds.append(sp.factor(sp.expand(hurwitz_det(order))))
    return conds


def _readable(expr):
    """Drop factors that are positive under ``a > 0`` so the relation reads simply."""
    expr = sp.factor(expr)
    keep = sp.Integer(1)
    for f, e in sp.factor_list(expr)[1]:
        if f.is_positive:
            continue
        keep *= f**e
    sign = sp.sign(sp.factor_list(expr)[0])
    return sp.expand(sign * keep) if keep.is_Add else sign * keep


@lru_cache(maxsize=None)
def conditions(window: int = 1, delay: int = 1, controller: str = "incremental") -> tuple:
    """Exact stability conditions in ``K_p, K_i, a, g′`` (all must hold).

    Bilinear map of the characteristic polynomial, then the Liénard–Chipart form
    of Routh–Hurwitz.  Positive factors (powers of ``a`` and ``1 + a``) are
    divided out and redundant relations dropped, so for ``T = 1`` the result is
    short enough to read.

    Returns
    -------
    tuple of sympy relations (``StrictGreaterThan`` / ``StrictLessThan``)
    """
    coeffs = bilinear_coefficients(window, delay, controller)
    out = []
    seen = set()
    for e in hurwitz_conditions(coeffs):
        r = _readable(e)
        if r == 0:
            raise RuntimeError("a Routh–Hurwitz condition vanishes identically")
        if r.is_positive:
            continue
        key = sp.srepr(sp.expand(r))
        if key in seen:
            continue
        seen.add(key)
        out.append(sp.StrictGreaterThan(r, 0))
    return tuple(out)
