"""The pure laws: symbolic evaluation, derivatives against finite differences, filters against NumPy."""
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from klcontrol import laws
from klcontrol.backend import NUMPY, SYMPY

INF = math.inf


def points(rng, n, k, first=None):
    """``n`` random points in (0.2, 2)^k; ``first`` overrides the range of coordinate 0."""
    x = rng.uniform(0.2, 2.0, (n, k))
    if first is not None:
        x[:, 0] = rng.uniform(*first, n)
    return x


def fd_check(expr, symbols, numeric, rng, first=None, h=1e-6, rtol=1e-5, atol=1e-8):
    """Compare every partial derivative of ``expr`` with central differences of ``numeric``."""
    grads = [sp.lambdify(symbols, sp.diff(expr, s), "mpmath") for s in symbols]
    value = sp.lambdify(symbols, expr, "mpmath")
    for x in points(rng, 5, len(symbols), first):
        assert float(value(*x)) == pytest.approx(float(numeric(*x)), rel=1e-12, abs=1e-12)
        for i, g in enumerate(grads):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            fd = (numeric(*xp) - numeric(*xm)) / (2 * h)
            assert float(g(*x)) == pytest.approx(float(fd), rel=rtol, abs=atol), (symbols[i], x)


@pytest.mark.parametrize("mode", laws.ANTI_WINDUP_MODES)
def test_incremental_pi_symbolic_derivatives(mode):
    b, pp, m, c, kp, ki = syms = sp.symbols("beta p_prev m c kp ki", real=True)
    expr, (state, p) = laws.incremental_pi((b, pp), m, c, kp, ki, -sp.oo, sp.oo, SYMPY, mode=mode)
    # With infinite clamps the law is the smooth Eq. 10 (feedback sign of docs/design.md).
    assert sp.simplify(expr - (b + kp * (1 / (1 + sp.exp(c - m)) - pp) - ki * (c - m))) == 0
    assert sp.simplify(sp.diff(expr, m) - (kp * sp.exp(c - m) / (1 + sp.exp(c - m)) ** 2 + ki)) == 0

    def numeric(*x):
        return laws.incremental_pi((x[0], x[1]), x[2], x[3], x[4], x[5], -INF, INF, NUMPY, mode=mode)[0]

    fd_check(expr, syms, numeric, np.random.default_rng(0))
    fd_check(p, syms, lambda *x: laws.incremental_pi((x[0], x[1]), *x[2:], -INF, INF, NUMPY)[1][1],
             np.random.default_rng(1))


def test_positional_pi_symbolic_derivatives():
    # β_min is the law's offset as well as its lower clamp, so it stays a finite symbol;
    # a negative integral I puts the points drawn well above it (unsaturated).
    i, m, c, kp, ki, bmin = syms = sp.symbols("I m c kp ki beta_min", real=True)
    expr, new_i = laws.positional_pi(i, m, c, kp, ki, bmin, sp.oo, SYMPY)
    smooth = kp / (1 + sp.exp(c - m)) - ki * (i + c - m) + bmin
    neg = (-20.0, -5.0)
    for x in points(np.random.default_rng(2), 5, 6, neg):
        sub = dict(zip(syms, x))
        assert float(expr.subs(sub)) == pytest.approx(float(smooth.subs(sub)), rel=1e-12)
        assert float(new_i.subs(sub)) == pytest.approx(x[0] + x[2] - x[1], rel=1e-12)

    def numeric(*x):
        return laws.positional_pi(x[0], x[1], x[2], x[3], x[4], x[5], INF, NUMPY)[0]

    fd_check(smooth, syms, numeric, np.random.default_rng(3), first=neg)
    for x in points(np.random.default_rng(4), 3, 6, neg):
        sub = dict(zip(syms, x))
        for s in syms:
            d = sp.diff(expr, s).subs(sub)
            assert float(d) == pytest.approx(float(sp.diff(smooth, s).subs(sub)), rel=1e-9, abs=1e-12)


def test_positional_pi_official_on_every_backend():
    # One law, three backends: NumPy arrays, torch tensors and sympy agree, branch by branch.
    import torch

    from klcontrol.backend import ops_for

    rng = np.random.default_rng(5)
    integ, raw, m, c = (rng.uniform(-30, 30, 64), rng.uniform(0.5, 1.5, 64), rng.uniform(0, 30, 64),
                        rng.uniform(0, 20, 64))
    args = (0.01, 0.001, 1.0, INF)
    b_np, (i_np, r_np) = laws.positional_pi_official((integ, raw), m, c, *args, NUMPY)
    t = [torch.from_numpy(v) for v in (integ, raw, m, c)]
    b_t, (i_t, r_t) = laws.positional_pi_official((t[0], t[1]), t[2], t[3], *args, ops_for(t[0]))
    np.testing.assert_allclose(b_t.numpy(), b_np, rtol=1e-15)
    np.testing.assert_allclose(i_t.numpy(), i_np, rtol=1e-15)
    frozen = raw < 1.0
    np.testing.assert_array_equal(i_np[frozen], integ[frozen])  # frozen whichever way the error points
    np.testing.assert_allclose(i_np[~frozen], (integ + c - m)[~frozen], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r_np, 0.01 / (1 + np.exp(c - m)) - 0.001 * i_np + 1.0, rtol=1e-12)
    assert np.all(b_np == np.maximum(r_np, 1.0))
    I, R, M, C = sp.symbols("I R m c", real=True)
    b_s, (i_s, r_s) = laws.positional_pi_official((I, R), M, C, *args[:3], sp.oo, SYMPY)
    for k in range(5):
        sub = {I: integ[k], R: raw[k], M: m[k], C: c[k]}
        assert float(b_s.subs(sub)) == pytest.approx(b_np[k], rel=1e-12)
        assert float(i_s.subs(sub)) == pytest.approx(i_np[k], rel=1e-12)


def test_capacity_relay_and_fixed_symbolic():
    m, c, g, b = syms = sp.symbols("m c gamma beta", real=True)
    relay = laws.capacity_relay(m, c, g, SYMPY)
    assert relay == g * sp.sign(m - c)
    for x in np.random.default_rng(5).uniform(-2, 2, (5, 4)):
        sub = dict(zip(syms, x))
        assert float(sp.diff(relay, g).subs(sub)) == np.sign(x[0] - x[1])
        # Away from m = C the relay is flat in m: zero derivative, as finite differences say.
        assert float(sp.diff(relay, m).subs(sub)) == 0.0
        h = 1e-6
        fd = (laws.capacity_relay(x[0] + h, x[1], x[2]) - laws.capacity_relay(x[0] - h, x[1], x[2])) / (2 * h)
        assert fd == 0.0
    assert sp.diff(laws.fixed_beta(b, m, c, SYMPY), b) == 1


def test_filters_symbolic_are_linear():
    y, h1, h2, prev, a = sp.symbols("y h1 h2 prev alpha", real=True)
    m, hist = laws.moving_average((h1, h2), y, SYMPY)
    assert sp.simplify(m - (y + h1 + h2) / 3) == 0 and hist == (y, h1)
    e, _ = laws.exponential_average(prev, y, a, SYMPY)
    assert sp.diff(e, y) == a and sp.simplify(sp.diff(e, prev) - (1 - a)) == 0


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="anti-windup mode"):
        laws.incremental_pi((1.0, 0.5), 1.0, 2.0, 0.1, 0.1, 0.0, INF, NUMPY, mode="bogus")


@given(
    ys=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    window=st.integers(1, 8),
    y0=st.floats(-10, 10),
)
def test_moving_average_equals_convolution(ys, window, y0):
    hist = tuple(y0 for _ in range(window - 1))
    got = []
    for y in ys:
        m, hist = laws.moving_average(hist, y)
        got.append(m)
    padded = np.concatenate([np.full(window - 1, y0), ys])
    ref = np.convolve(padded, np.ones(window) / window, mode="valid")
    assert np.allclose(got, ref, rtol=1e-12, atol=1e-9)
