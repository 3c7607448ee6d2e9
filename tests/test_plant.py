"""First-order plant: recursion, gains, equilibrium, serialisation, validation."""
import math

import numpy as np
import pytest
import sympy as sp

from klcontrol import ExpGain, FirstOrderPlant
from klcontrol.plant import Gain, gain_from_dict, register_gain


def test_step_is_the_first_order_recursion():
    a, A, k = 1 / 5000, 26.38, 0.0476
    p = FirstOrderPlant(a, ExpGain(A, k))
    y, beta = 3.0, 10.0
    out, state = p.step((y,), beta)
    assert out == pytest.approx(y / (1 + a) + a / (1 + a) * A * math.exp(-k * beta), rel=1e-15)
    assert state == (out,)
    # At constant β the output settles at g(β) with y(t) − g = (y0 − g)/(1+a)^t.
    ys, state = [0.0], p.initial_state(0.0)
    for _ in range(50):
        y, state = p.step(state, beta)
        ys.append(y)
    g = A * math.exp(-k * beta)
    np.testing.assert_allclose(ys, g + (0 - g) / (1 + a) ** np.arange(51), rtol=1e-12)
    assert p.time_constant == pytest.approx(1 / math.log1p(a))


def test_exp_gain_derivative_inverse_sympy():
    g = ExpGain(26.38, 0.0476)
    b = np.linspace(0, 100, 11)
    h = 1e-6
    np.testing.assert_allclose(g.derivative(b), (g(b + h) - g(b - h)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(g(g.inverse(np.array([1.0, 20.0]))), [1.0, 20.0])
    x = sp.Symbol("x")
    assert sp.simplify(sp.diff(g(x), x) - (-0.0476) * g(x)) == 0
    with pytest.raises(ValueError, match="y > 0"):
        g.inverse(0.0)


def test_callable_gain_and_equilibrium():
    p = FirstOrderPlant(0.01, lambda b: 26.38 * np.exp(-0.0476 * b))
    beta_star, y_star = p.equilibrium(20.0)
    assert y_star == 20.0 and 26.38 * math.exp(-0.0476 * beta_star) == pytest.approx(20.0, rel=1e-9)
    assert p.gprime_at(20.0) == pytest.approx(-0.0476 * 20.0, rel=1e-6)
    with pytest.raises(ValueError, match="cannot be saved"):
        p.to_dict()


def test_vectorised_a_and_round_trip():
    p = FirstOrderPlant(np.array([0.01, 0.02]), ExpGain(26.38, 0.0476))
    y, _ = p.step((np.zeros(2),), 5.0)
    assert y.shape == (2,) and y[1] > y[0]
    q = FirstOrderPlant.from_dict(p.to_dict())
    np.testing.assert_array_equal(q.step(q.initial_state(0.0, (2,)), 5.0)[0], y)
    assert gain_from_dict({"kind": "exp", "A": 1.0, "k": 2.0}).k == 2.0


def test_register_gain():
    @register_gain
    class Linear(Gain):
        kind = "test_linear"

        def __init__(self, c):
            self.c = c

        def __call__(self, beta):
            return self.c - beta

        def to_dict(self):
            return {"kind": self.kind, "c": self.c}

        @classmethod
        def from_dict(cls, d):
            return cls(d["c"])

    p = FirstOrderPlant.from_dict(FirstOrderPlant(0.5, Linear(10.0)).to_dict())
    assert p.step((0.0,), 4.0)[0] == pytest.approx(0.5 / 1.5 * 6.0)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: FirstOrderPlant(0.0, ExpGain(1, 1)), "a"),
        (lambda: FirstOrderPlant(-1.0, ExpGain(1, 1)), "a"),
        (lambda: FirstOrderPlant(math.nan, ExpGain(1, 1)), "a"),
        (lambda: FirstOrderPlant(np.ones((2, 2)), ExpGain(1, 1)), "a"),
        (lambda: FirstOrderPlant(0.1, 3.0), "g"),
        (lambda: ExpGain(0.0, 1.0), "A"),
        (lambda: ExpGain(1.0, -1.0), "k"),
        (lambda: FirstOrderPlant.from_dict({"kind": "other"}), "first-order"),
        (lambda: gain_from_dict({"kind": "nope"}), "unknown gain"),
    ],
)
def test_bad_parameters(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_linearize_is_the_tangent_of_step():
    """(A, B, C, D) from linearize() match finite differences of step() at the equilibrium."""
    p = FirstOrderPlant(0.01, ExpGain(26.38, 0.0476))
    A, B, C, D = p.linearize(20.0)
    bstar, ystar = p.equilibrium(20.0)
    h = 1e-6
    y0, (x0,) = p.step((ystar,), bstar)
    yx, (xx,) = p.step((ystar + h,), bstar)
    yu, (xu,) = p.step((ystar,), bstar + h)
    np.testing.assert_allclose([A[0, 0], C[0, 0]], [(xx - x0) / h, (yx - y0) / h], rtol=1e-6)
    np.testing.assert_allclose([B[0, 0], D[0, 0]], [(xu - x0) / h, (yu - y0) / h], rtol=1e-5)
    a, gp = 0.01, p.gprime_at(20.0)
    assert A[0, 0] == pytest.approx(1 / (1 + a), rel=1e-15) and D[0, 0] == pytest.approx(a * gp / (1 + a), rel=1e-15)


def test_plant_registry_round_trip():
    from klcontrol.plant import LinearGain, plant_from_dict

    p = FirstOrderPlant(0.02, ExpGain(20.0, 0.1))
    q = plant_from_dict(p.to_dict())
    assert isinstance(q, FirstOrderPlant) and q.a == p.a and q.g.A == p.g.A
    lg = gain_from_dict(LinearGain(5.0, -0.5, 3.0).to_dict())
    assert lg(4.0) == pytest.approx(4.5) and lg.inverse(4.5) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown plant kind"):
        plant_from_dict({"kind": "nope"})
