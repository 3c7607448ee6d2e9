"""Backends: the primitives the laws are written with agree across NumPy, torch and sympy."""
import math
import warnings

import numpy as np
import pytest
import sympy as sp
import torch

from klcontrol import backend
from klcontrol.backend import NUMPY, ops_for


def exact_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def test_numpy_sigmoid_accurate_and_silent_at_extremes():
    xs = np.concatenate([np.linspace(-50, 50, 2001), [-1e308, -800.0, 800.0, 1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = NUMPY.sigmoid(xs)
    ref = np.array([exact_sigmoid(x) for x in xs])
    assert np.max(np.abs(got - ref)) <= 2.3e-16  # one ulp of 1
    assert got[-4] == 0.0 and got[-1] == 1.0
    assert isinstance(NUMPY.sigmoid(0.3), (float, np.floating, np.ndarray))
    assert float(NUMPY.sigmoid(0.0)) == 0.5


def test_backends_agree_on_every_primitive():
    x = np.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    t = torch.tensor(x, dtype=torch.float64)
    T = backend._torch_ops()
    assert np.allclose(T.sigmoid(t).numpy(), NUMPY.sigmoid(x), atol=1e-15)
    assert np.array_equal(T.clip(t, -1.0, math.inf).numpy(), NUMPY.clip(x, -1.0, math.inf))
    assert np.array_equal(T.sign(t).numpy(), NUMPY.sign(x))
    assert np.array_equal(T.where(T.gt(t, 0.0), t, -t).numpy(), np.abs(x))
    assert np.array_equal(T.and_(T.gt(t, -1.0), T.lt(t, 1.0)).numpy(), (x > -1) & (x < 1))
    assert np.array_equal(T.or_(T.gt(t, 1.0), T.lt(t, -1.0)).numpy(), (x > 1) | (x < -1))
    S = backend.SYMPY
    for v in x:
        assert float(S.sigmoid(sp.Float(v))) == pytest.approx(exact_sigmoid(v), abs=1e-15)
        assert float(S.clip(sp.Float(v), -1, 1)) == float(NUMPY.clip(v, -1, 1))


def test_sympy_infinite_clamps_vanish():
    S = backend.SYMPY
    x = sp.Symbol("x")
    assert S.clip(x, -sp.oo, sp.oo) == x
    assert S.clip(x, -math.inf, math.inf) == x
    assert S.clip(x, 0, sp.oo) == sp.Max(0, x)
    assert S.gt(x, sp.oo) is sp.false and S.lt(x, -math.inf) is sp.false
    assert S.where(sp.false, 1, x) == x and S.where(sp.true, 1, x) == 1


def test_ops_for_picks_backend():
    assert ops_for(1.0, np.ones(2)) is NUMPY
    assert ops_for(np.ones(2), torch.ones(2)).name == "torch"
    assert ops_for(sp.Symbol("x"), 1.0).name == "sympy"


def test_numpy_fast_paths_match_the_plain_formulas():
    # sigmoid works on its own temporary (the input is untouched) and equals the tanh formula;
    # clip skips infinite Python-float bounds and otherwise equals np.clip.
    rng = np.random.default_rng(0)
    x = rng.normal(0, 30, 257)
    x0 = x.copy()
    assert np.array_equal(NUMPY.sigmoid(x), 0.5 * np.tanh(0.5 * x0) + 0.5)
    assert np.array_equal(x, x0)
    assert NUMPY.sigmoid(0.3) == 0.5 * np.tanh(0.15) + 0.5 and NUMPY.sigmoid(np.array(0.3)) == NUMPY.sigmoid(0.3)
    for lo, hi in ((-math.inf, math.inf), (0.0, math.inf), (-math.inf, 2.0), (np.array(-1.0), np.array(math.inf)),
                   (rng.normal(size=257), math.inf)):
        assert np.array_equal(NUMPY.clip(x, lo, hi), np.clip(x, lo, hi))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_numbers = st.one_of(st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True, width=64))


@settings(max_examples=300, deadline=None)
@given(x=_numbers, lo=_numbers, hi=_numbers)
def test_clip_of_python_numbers_equals_the_ufunc_clip(x, lo, hi):
    """Python numbers skip NumPy (a set point at one step); the value must be NumPy's, NaN included."""
    fast = NUMPY.clip(x, lo, hi)
    ref = np.minimum(np.maximum(np.float64(x), lo), hi)
    assert (math.isnan(fast) and math.isnan(ref)) or fast == ref
