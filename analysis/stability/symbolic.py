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


def _linear_rows(exprs, state, inputs, lm):
    """Jacobian rows ``∂exprs/∂(state, inputs)`` at ``lm``'s equilibrium (clamps resolved first)."""
    variables = tuple(state) + tuple(inputs)
    rows = []
    for e in exprs:
        grad = _gradient_at_equilibrium(_interior(sp.sympify(e), lm.equilibrium), variables, lm)
        rows.append([grad.get(v, sp.Integer(0)) for v in variables])
    return rows


def _transfer(rows, n_state, output_row, feedthrough):
    """``(N, D)`` in ``λ`` of ``x⁺ = A x + B u, out = C x + D u`` (one input): ``D(λ) = det(λI − A)`` and
    ``N(λ) = det([[λI − A, −B], [C, D]])``, polynomials of the realisation itself (nothing cancelled)."""
    A = sp.Matrix([r[:n_state] for r in rows]) if n_state else sp.zeros(0, 0)
    B = sp.Matrix([[r[n_state]] for r in rows]) if n_state else sp.zeros(0, 1)
    pencil = lam * sp.eye(n_state) - A
    top = pencil.row_join(-B)
    full = top.col_join(sp.Matrix([list(output_row) + [feedthrough]]))
    dom = sp.QQ.frac_field(kp, ki, a, gp)[lam]
    det = lambda M: dom.to_sympy(DomainMatrix([[dom.from_sympy(sp.sympify(e)) for e in row] for row in M.tolist()],
                                              M.shape, dom).det()) if M.shape[0] else sp.Integer(1)  # noqa: E731
    return sp.Poly(det(full), lam), sp.Poly(det(pencil), lam)


@lru_cache(maxsize=None)
def _law_transfer(controller: str):
    """The law's linearisation alone (window 1, no delay) as ``(N_c, D_c)``: measured KL → β, from the laws."""
    lm, yin = controller_map(1, 0, controller)
    rows = _linear_rows(lm.next_state, lm.state, (yin,), lm)
    out = [sp.Integer(1) if s_ == lm.output else sp.Integer(0) for s_ in lm.state]
    return _transfer(rows, len(lm.state), out, sp.Integer(0))


@lru_cache(maxsize=None)
def _plant_transfer():
    """The first-order plant's small-signal map β − β* → y − y* as ``(N_p, D_p)``, by stepping the plant itself
    (:meth:`klcontrol.FirstOrderPlant.step` with the tangent gain, deviations from 0)."""
    x, u = sp.Symbol("x_plant", real=True), sp.Symbol("u_plant", real=True)
    y, (x_next,) = FirstOrderPlant(a, LinearGain(0, gp, 0)).step((x,), u, SYMPY)
    row = [sp.diff(x_next, x), sp.diff(x_next, u)]
    return _transfer([row], 1, [sp.diff(y, x)], sp.diff(y, u))


@lru_cache(maxsize=None)
def _charpoly(window: int, delay: int, controller: str) -> sp.Poly:
    """The loop's characteristic polynomial from its structure, in polynomial arithmetic (no Jacobian of the
    whole loop): the law ``N_c/D_c`` and the plant ``N_p/D_p`` are linearised from their own code, the moving
    average is ``S_T(λ)/(T·λ^(T−1))`` with ``S_T = 1 + λ + … + λ^(T−1)`` and the delay ``λ^(−d)``; the loop
    closes through the measured KL, so

        det(λI − A) ∝ T·D_c·D_p·λ^(T−1+d) − N_c·N_p·S_T.

    Equal to the Jacobian derivation (:func:`_charpoly_jacobian`) after :func:`_normalise`: tested for
    ``T = 1 … 12``, both delays and every linear kind.
    """
    field = sp.QQ.frac_field(kp, ki, a, gp)
    nc, dc = (v.set_domain(field) for v in _law_transfer(controller))
    npl, dp = (v.set_domain(field) for v in _plant_transfer())
    s_t = sp.Poly([1] * window, lam, domain=field)
    shift = sp.Poly.from_list([1] + [0] * (window - 1 + delay), lam, domain=field)
    det = (dc * dp * shift).mul_ground(window) - nc * npl * s_t
    return _normalise(det)


@lru_cache(maxsize=None)
def _charpoly_jacobian(window: int, delay: int, controller: str) -> sp.Poly:
    """``det(λI − A)`` of the whole loop's Jacobian (the generic derivation: any loop, slow for long windows).

    Kept as the reference :func:`_charpoly` is tested against (``tests/test_stability.py``).
    """
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
    return _normalise(det)


def _normalise(det: sp.Poly) -> sp.Poly:
    """``det`` without its ``λ^k`` factors, denominators cleared, primitive, leading coefficient ``(1 + a)^k``."""
    # Drop λ^k factors (zero eigenvalues of states that only copy others).
    while det.degree() > 0 and det.eval(0) == 0:
        det = det.exquo(sp.Poly(lam, lam, domain=det.domain))
    _, poly = det.clear_denoms(convert=True)
    ring = sp.QQ[kp, ki, a, gp]
    poly = poly.set_domain(ring).primitive()[1]
    lead = sp.Poly(poly.LC(), a)
    # Normalise so the leading coefficient is a positive power of (1 + a).
    norm = lead.LC()
    scale = sp.factor(lead.as_expr() / norm)
    if not (scale.is_positive or scale == 1):
        raise RuntimeError(f"unexpected leading coefficient {lead.as_expr()}")
    return poly.exquo_ground(ring.convert(norm))


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
    dom, _, zc, _ = _coefficient_elements(*check_config(window, delay, controller))
    return tuple(_tidy(dom, cf) for cf in zc)


def _transform(p, step):
    """Apply ``step`` (a map of integer coefficient lists, ascending) to ``p``'s coefficients, monomial by monomial.

    The coefficients of ``p`` (in ``λ``) are polynomials in ``(K_p, K_i, a, g′)`` with few monomials; for each
    monomial its rational coefficients along ``λ`` are scaled to integers, transformed with Python integers (exact,
    O(n²) additions, no polynomial products) and scaled back.  Returns the ring elements, highest power first.
    """
    from math import lcm

    dom = p.domain
    n = p.degree()
    cols = {}
    for (k,), cf in p.rep.terms():
        for mono, v in dom.convert(cf).items():
            cols.setdefault(mono, [sp.QQ.zero] * (n + 1))[k] = sp.QQ.convert(v)
    out = [dict() for _ in range(n + 1)]
    for mono, col in cols.items():
        den = lcm(*(int(v.denominator) for v in col))
        ints = step([int(v.numerator) * (den // int(v.denominator)) for v in col])
        for j, v in enumerate(ints):
            if v:
                out[j][mono] = sp.QQ(v, den)
    return tuple(dom.ring.from_dict(d) if d else dom.zero for d in reversed(out))


def _taylor_shift(c):
    """Coefficients (ascending) of ``p(1 + z)`` from those of ``p(λ)``."""
    c = list(c)
    n = len(c) - 1
    for i in range(n):
        for j in range(n - 1, i - 1, -1):
            c[j] += c[j + 1]
    return c


def _bilinear(c):
    """Coefficients (ascending) of ``Σ c_k (1 + w)^k (1 − w)^(n − k)``: Horner in ``λ = (1 + w)/(1 − w)`` times
    ``(1 − w)^n``, one power at a time."""
    n = len(c) - 1
    q, minus = [c[n]], [1]
    for j in range(n):
        q = [x + y for x, y in zip(q + [0], [0] + q)]  # · (1 + w)
        minus = [x - y for x, y in zip(minus + [0], [0] + minus)]  # (1 − w)^(j + 1)
        q = [x + c[n - 1 - j] * y for x, y in zip(q, minus)]
    return q


@lru_cache(maxsize=None)
def _coefficient_elements(window: int, delay: int, controller: str):
    """``(domain, w, z, λ)``: the bilinear, shifted and plain coefficients as elements of the parameters'
    polynomial ring, highest power first (what :func:`bilinear_coefficients`, :func:`shifted_coefficients` and the
    code generator print)."""
    p = characteristic_polynomial(window, delay, controller)
    lam_c = tuple(p.domain.convert(c) for c in p.rep.to_list())
    return p.domain, _transform(p, _bilinear), _transform(p, _taylor_shift), lam_c


def _tidy(dom, cf):
    """A coefficient (an element of ``dom``, the parameters' polynomial ring) as an expression with its rational
    content and monomial factor pulled out (``a·(…)``): what ``factor`` gave for these coefficients, at a tiny
    fraction of its cost for long windows."""
    cf = dom.convert(cf)
    if not cf:
        return sp.Integer(0)
    monom = tuple(min(m) for m in zip(*cf.keys()))
    rest = cf.ring({tuple(x - y for x, y in zip(m, monom)): c for m, c in cf.items()})
    content, rest = rest.primitive()
    if rest.LC < 0:
        content, rest = -content, -rest
    out = sp.sympify(content) * rest.as_expr()
    for g, e in zip(dom.symbols, monom):
        out *= g ** e
    return out


@lru_cache(maxsize=None)
def bilinear_coefficients(window: int = 1, delay: int = 0, controller: str = "incremental") -> tuple:
    """Coefficients of ``q(w) = (1 − w)^n · p((1 + w)/(1 − w))``, highest power first.

    ``|λ| < 1`` exactly when ``Re w < 0``, so ``p`` is Schur stable iff ``q`` is
    Hurwitz stable.  This is the map of the DynamicVAE paper (its Eq. 23 with
    ``ξ = w``).
    """
    dom, wc, _, _ = _coefficient_elements(*check_config(window, delay, controller))
    return tuple(_tidy(dom, cf) for cf in wc)


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
