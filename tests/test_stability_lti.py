"""Stability on identified LTI plants, against independent computations.

* a first-order plant given as a TransferFunction / StateSpace / matrices against the generated exact path;
* random 2nd- and 3rd-order plants against python-control's ``feedback`` of the plant and a controller
  transfer function written by hand from the equations (not from the laws);
* the time indexing against :func:`klcontrol.simulate` of the controller objects on a linear plant.
"""
import math

import control
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, PositionalPI, simulate
from klcontrol.analysis.stability import (
    RobustLTI,
    eigenvalues,
    is_stable,
    plant_matrices,
    robust_stability,
    robust_stability_lti,
    spectral_radius,
)
from klcontrol.analysis.stability import lti as sl
from klcontrol.analysis.stability import numeric as sn
from klcontrol.plant import Plant

TESTED_KINDS = ("incremental", "incremental-official", "positional")


def first_order_tf(a, gp):
    """``y(t) = y(t−1)/(1+a) + a/(1+a)·g′·u(t)``: feedthrough, pole 1/(1+a)."""
    return control.tf([a / (1 + a) * gp, 0], [1, -1 / (1 + a)], dt=1)


@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("controller", TESTED_KINDS)
def test_first_order_transfer_function_matches_the_exact_path(controller, delay):
    rng = np.random.default_rng(7 + delay)
    worst = 0.0
    for T in range(1, 9):
        for a, scale in ((rng.uniform(0.02, 1.5), 1.0), (1 / 2500, 0.01)):
            gp = rng.uniform(-4, -0.1)
            kp, ki = scale * rng.uniform(-1, 3, 64), scale * rng.uniform(0.01, 1.5, 64)
            exact = sn.spectral_radius_first_order(kp, ki, a, gp, T, delay, controller)
            P = first_order_tf(a, gp)
            for plant in (P, control.ss(P), plant_matrices(P)):
                ours = spectral_radius(kp, ki, plant=plant, window=T, delay=delay, controller=controller)
                assert ours.shape == kp.shape
                worst = max(worst, float(np.max(np.abs(ours - exact))))
                verdict = is_stable(kp, ki, plant=plant, window=T, delay=delay, controller=controller)
                away = np.abs(exact - 1) > 1e-9
                assert np.array_equal(verdict[away], (exact < 1)[away])
    assert worst < 1e-10, worst


def test_broadcasting_and_scalars():
    P = first_order_tf(0.2, -1.5)
    kp = np.linspace(0.1, 2, 5)[:, None]
    ki = np.linspace(0.05, 1, 3)[None, :]
    r = spectral_radius(kp, ki, plant=P, window=3)
    assert r.shape == (5, 3)
    assert r[2, 1] == pytest.approx(spectral_radius(float(kp[2, 0]), float(ki[0, 1]), plant=P, window=3), abs=0)
    assert isinstance(spectral_radius(0.5, 0.2, plant=P), float)
    assert isinstance(is_stable(0.5, 0.2, plant=P), bool)
    ev = eigenvalues(kp, ki, plant=P, window=3, delay=1)
    assert ev.shape == (5, 3, 1 + 3 + 2 + 1)  # plant, β, integrator and p_prev, history, delayed y


# -- random higher-order plants against an independent closed loop ---------------------------------------


def random_plant(rng, order):
    """Stable plant with negative DC gain (a VAE: more β, less KL), sometimes with feedthrough."""
    poles = []
    while len(poles) < order:
        if order - len(poles) >= 2 and rng.random() < 0.5:
            r, th = rng.uniform(0.3, 0.97), rng.uniform(0.05, 2.5)
            poles += [r * np.exp(1j * th), r * np.exp(-1j * th)]
        else:
            poles.append(rng.uniform(-0.5, 0.98))
    den = np.real(np.poly(poles))
    n_zeros = int(rng.integers(0, order + 1)) if rng.random() < 0.5 else int(rng.integers(0, order))
    num = np.real(np.poly(rng.uniform(-0.8, 0.8, n_zeros))) if n_zeros else np.array([1.0])
    dc = np.polyval(num, 1.0) / np.polyval(den, 1.0)
    num = num * rng.uniform(-3, -0.2) / dc
    return control.tf(num, den, dt=1)


def hand_controller_tf(kp, ki, T, d):
    """K(z): measured KL → β, written from the equations, not from the laws.

    Linearised incremental PI (σ′(0) = 1/4): ``β(t+1) = β(t) + (Kp/4)(m(t) − m(t−1)) + Ki·m(t)``, i.e.
    ``β = [Kp/(4z) + Ki/(z − 1)]·m`` (the positional PI gives the same); the moving average
    ``m = (1/T) Σ_{k<T} z^{−k} y(t − d)``.
    """
    z = control.tf([1, 0], [1], dt=1)
    pi = kp / 4 / z + ki / (z - 1)
    fir = sum((z ** (T - 1 - k) for k in range(T)), 0 * z) / (T * z ** (T - 1)) if T > 1 else 1
    return pi * fir * (1 / z**d if d else 1)


def independent_rho(P, kp, ki, T, d):
    K = hand_controller_tf(kp, ki, T, d)
    cl = control.feedback(P, K, sign=1)  # y = P·β, β = K·y: positive feedback in python-control's sense
    return float(np.max(np.abs(cl.poles())))


@pytest.mark.parametrize("order", [2, 3])
def test_random_plants_match_python_control_feedback(order):
    rng = np.random.default_rng(100 + order)
    worst, n_both = 0.0, [0, 0]
    for i in range(60):
        P = random_plant(rng, order)
        T, d, ctrl = int(rng.integers(1, 9)), int(rng.integers(0, 2)), TESTED_KINDS[i % 3]
        kp, ki = rng.uniform(-0.3, 1.5), rng.uniform(0.01, 0.6)
        ref = independent_rho(P, kp, ki, T, d)
        ours = spectral_radius(kp, ki, plant=P, window=T, delay=d, controller=ctrl)
        worst = max(worst, abs(ours - ref))
        if abs(ref - 1) > 1e-6:
            assert is_stable(kp, ki, plant=P, window=T, delay=d, controller=ctrl) == (ref < 1)
            n_both[ref < 1] += 1
    assert worst < 1e-8, worst
    assert min(n_both) >= 10, n_both  # both verdicts are exercised


@pytest.mark.skipif(not __import__("klcontrol.analysis.stability.kernels", fromlist=["x"]).available(),
                    reason="numba not installed")
def test_a_large_map_takes_the_affine_routh_path_and_matches_python_control():
    from klcontrol.analysis.stability import kernels

    rng = np.random.default_rng(7)
    n_both = [0, 0]
    for i in range(6):
        P = random_plant(rng, 2 + i % 2)
        T, d, ctrl = int(rng.integers(1, 9)), int(rng.integers(0, 2)), TESTED_KINDS[i % 3]
        # the characteristic polynomial is affine in the gains: against np.poly of the matrix at a random pair
        c0, ck, ci = sl._affine_charpoly(P, T, d, ctrl, None)
        kp1, ki1 = rng.uniform(-0.3, 1.5), rng.uniform(0.01, 0.6)
        full = np.real(np.poly(sl.closed_loop_matrix(kp1, ki1, P, T, d, ctrl)))
        assert np.allclose(full[:len(c0)], c0 + kp1 * ck + ki1 * ci, atol=1e-12)
        assert np.allclose(full[len(c0):], 0, atol=1e-12)  # what was cut are zero roots
        kp = rng.uniform(-0.3, 1.5, kernels.MIN_POINTS)
        ki = rng.uniform(0.01, 0.6, kernels.MIN_POINTS)
        fast = is_stable(kp, ki, plant=P, window=T, delay=d, controller=ctrl)
        assert sl._affine_map(kp, ki, P, T, d, ctrl, None) is not None  # the map did take the kernel
        for j in rng.choice(kp.size, 25, replace=False):
            ref = independent_rho(P, kp[j], ki[j], T, d)
            if abs(ref - 1) > 1e-6:
                assert fast[j] == (ref < 1), (i, j, ref)
                n_both[ref < 1] += 1
        # and against the eigenvalue path on a slice (a small map takes that path)
        assert np.array_equal(fast[:500], is_stable(kp[:500], ki[:500], plant=P, window=T, delay=d, controller=ctrl)
                              ) or abs(spectral_radius(kp[:500], ki[:500], plant=P, window=T, delay=d,
                                                       controller=ctrl) - 1).min() < 1e-9
    assert min(n_both) >= 10, n_both


plants = st.tuples(
    st.lists(st.floats(-0.9, 0.98), min_size=0, max_size=3),  # real poles (order 0: a static gain)
    st.floats(-3.0, -0.2),  # DC gain (more β, less KL)
    st.booleans(),  # direct feedthrough
    st.floats(-0.8, 0.8),  # a zero
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(plants, st.floats(-0.3, 1.5), st.floats(0.01, 0.6), st.integers(1, 8), st.integers(0, 1),
       st.sampled_from(TESTED_KINDS))
def test_property_any_order_matches_python_control_feedback(plant, kp, ki, T, d, ctrl):
    poles, dc, feedthrough, zero = plant
    den = np.poly(poles) if poles else np.array([1.0])
    n = len(poles)
    if n and feedthrough:  # numerator of degree n: y(t) depends on β(t)
        num = np.concatenate([[1.0, -zero], np.zeros(n - 1)])
    elif n >= 2:
        num = np.array([1.0, -zero])
    else:
        num = np.array([1.0])  # static gain, or strictly proper first order
    num = num * dc / (np.polyval(num, 1.0) / np.polyval(den, 1.0))
    P = control.tf(num, den, dt=1)
    ref = independent_rho(P, kp, ki, T, d)
    ours = spectral_radius(kp, ki, plant=P, window=T, delay=d, controller=ctrl)
    # Repeated plant poles are ill-conditioned for both computations (error ~ √eps per multiplicity).
    tol = 1e-8 if len(set(np.round(poles, 3))) == len(poles) else 1e-5
    assert abs(ours - ref) < tol
    if abs(ref - 1) > 1e-5:
        assert is_stable(kp, ki, plant=P, window=T, delay=d, controller=ctrl) == (ref < 1)


class LinearPlant(Plant):
    """``KL = y* + P(q)(β − β*)`` as a klcontrol :class:`Plant`, so :func:`klcontrol.simulate` runs it."""

    kind = "linear_test"

    def __init__(self, P, y_star, beta_star):
        self.mats, self.y_star, self.beta_star = plant_matrices(P), y_star, beta_star

    def initial_state(self, y0, shape=()):
        """At rest at the operating point (``y0`` must be ``y*``)."""
        assert np.all(np.asarray(y0) == self.y_star)
        return tuple(np.zeros(shape) for _ in range(self.mats[0].shape[0]))

    def step(self, state, beta, ops=None):
        """``y(t) = y* + C x + D u``, ``x ← A x + B u``, ``u = β(t) − β*``."""
        A, B, C, D = self.mats
        u = beta - self.beta_star
        n = len(state)
        y = self.y_star + sum(C[0, j] * state[j] for j in range(n)) + D[0, 0] * u
        return y, tuple(sum(A[i, j] * state[j] for j in range(n)) + B[i, 0] * u for i in range(n))

    def equilibrium(self, setpoint):
        """The operating point."""
        return self.beta_star, self.y_star

    def linearize(self, setpoint):
        """The matrices themselves."""
        return self.mats


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (4, 0), (3, 1)])
@pytest.mark.parametrize("controller", ["incremental", "positional"])
def test_time_indexing_matches_klcontrol_simulate(T, d, controller):
    from klcontrol.analysis.stability import to_statespace

    P = control.tf([-0.3, 0.12, 0.0], [1, -1.2, 0.45], dt=1)  # 2nd order with feedthrough
    ystar, bstar, delta = 10.0, 2.0, -1e-4
    sp_fn = lambda t: ystar + delta * (t >= 1)  # noqa: E731
    kp, ki = 0.6, 0.2
    if controller == "positional":
        ctrl = PositionalPI(kp, ki, sp_fn, beta_min=bstar - kp / 2, filter=T, y0=ystar)  # I* = 0 at β*
    else:
        ctrl = IncrementalPI(kp, ki, sp_fn, beta0=bstar, filter=T, y0=ystar)
    steps = 150
    tr = simulate(ctrl, LinearPlant(P, ystar, bstar), steps, delay=d, y0=ystar)
    dev = tr.state - ystar
    u = np.vstack([delta * (np.arange(steps) >= 1), np.zeros(steps)])
    lin = control.forced_response(to_statespace(kp, ki, plant=P, window=T, delay=d, controller=controller),
                                  np.arange(steps), u)
    assert np.max(np.abs(dev)) > 0.5 * abs(delta)
    np.testing.assert_allclose(np.ravel(lin.outputs), dev, atol=1e-4 * abs(delta))


# -- plant protocol, sets of plants, operating points -------------------------------------------------------


class LinearizablePlant:
    """A plant object with the klcontrol protocol ``linearize(setpoint) -> (A, B, C, D)``."""

    def __init__(self, a, g):
        self.inner = FirstOrderPlant(a, g)

    def linearize(self, setpoint):
        """First-order matrices at the set point (state y(t−1), feedthrough)."""
        a, gp = self.inner.a, float(self.inner.gprime_at(setpoint))
        rho, b = 1 / (1 + a), a / (1 + a) * gp
        return np.array([[rho]]), np.array([[b]]), np.array([[rho]]), np.array([[b]])


def test_plant_objects_and_first_order_plant():
    g = ExpGain(30.0, 0.05)
    fo = FirstOrderPlant(0.05, g)
    obj = LinearizablePlant(0.05, g)
    gp = float(fo.gprime_at(12.0))
    kp, ki = np.array([0.3, 2.0, 8.0]), np.array([0.1, 0.5, 3.0])
    exact = sn.spectral_radius_first_order(kp, ki, 0.05, gp, 2, 1)
    np.testing.assert_allclose(spectral_radius(kp, ki, plant=fo, setpoint=12.0, window=2, delay=1), exact, atol=0)
    np.testing.assert_allclose(spectral_radius(kp, ki, plant=obj, setpoint=12.0, window=2, delay=1), exact,
                               atol=1e-12)
    np.testing.assert_allclose(sl.spectral_radius_lti(kp, ki, fo, 2, 1, setpoint=12.0), exact, atol=1e-12)


def test_robust_over_plants_and_operating_points():
    rng = np.random.default_rng(5)
    kp, ki = 0.5, 0.2
    # Bootstrap-like draws of a first-order fit: the set's verdict and margin against the exact path.
    draws = [(rng.uniform(0.05, 0.2), rng.uniform(-2.5, -1.0)) for _ in range(12)]
    r = robust_stability_lti(kp, ki, [first_order_tf(a, gp) for a, gp in draws], window=2, delay=1)
    assert isinstance(r, RobustLTI) and r.n_plants == 12
    exact = [robust_stability(kp, ki, a, gp, None, 2, 1) for a, gp in draws]
    assert r.stable == all(e.stable for e in exact)
    assert r.n_stable == sum(e.stable for e in exact)
    assert r.worst_spectral_radius == pytest.approx(max(e.worst_spectral_radius for e in exact), abs=1e-10)
    if r.stable:
        assert r.gain_margin == pytest.approx(min(e.gain_margin for e in exact), rel=1e-7)
        # At the margin the worst plant is on the boundary.
        s = r.gain_margin
        assert max(spectral_radius(s * kp, s * ki, plant=first_order_tf(a, gp), window=2, delay=1)
                   for a, gp in draws) == pytest.approx(1.0, abs=1e-9)
    # Operating points: a plant object linearised at several set points.
    obj = LinearizablePlant(0.1, ExpGain(30.0, 0.05))
    r2 = robust_stability_lti(kp, ki, [obj], window=1, delay=0, setpoints=[5.0, 10.0, 20.0])
    assert r2.labels == ("0@5", "0@10", "0@20")
    gps = [float(obj.inner.gprime_at(c)) for c in (5.0, 10.0, 20.0)]
    assert r2.worst_spectral_radius == pytest.approx(
        max(sn.spectral_radius_first_order(kp, ki, 0.1, g, 1, 0) for g in gps), abs=1e-12)
    d = r2.to_dict()
    assert d["labels"] == ["0@5", "0@10", "0@20"] and d["stable"] == r2.stable


def test_unstable_set_reports_the_worst_plant_and_the_stable_scaling():
    plants = [first_order_tf(0.1, -1.0), first_order_tf(0.1, -30.0)]
    r = robust_stability_lti(1.0, 0.5, plants, window=1, delay=1)
    assert not r.stable and r.n_stable == 1 and r.worst_plant == "1"
    assert r.gain_margin == 0.0
    lo, hi = r.gain_range
    assert hi < 1  # the gains must shrink
    s = 0.5 * (lo + hi)
    assert all(spectral_radius(s, s * 0.5, plant=p, window=1, delay=1) < 1 for p in plants)


def test_gain_crossings_match_the_exact_gain_range():
    rng = np.random.default_rng(2)
    for i in range(12):
        T, d, ctrl = int(rng.integers(1, 9)), int(rng.integers(0, 2)), TESTED_KINDS[i % 3]
        a, gp = rng.uniform(0.02, 1.0), rng.uniform(-4, -0.2)
        kp, ki = rng.uniform(-0.3, 2), rng.uniform(0.01, 0.8)
        exact = robust_stability(kp, ki, a, gp, None, T, d, ctrl)
        ours = robust_stability_lti(kp, ki, first_order_tf(a, gp), T, d, ctrl)
        assert ours.stable == exact.stable
        assert (ours.gain_range is None) == (exact.gain_range is None)
        if exact.gain_range is not None:
            for x, y in zip(exact.gain_range, ours.gain_range):
                assert (math.isinf(x) and math.isinf(y)) or abs(x - y) <= 1e-7 * max(1.0, abs(x))


# -- errors ---------------------------------------------------------------------------------------------------


def test_bad_plants_are_named():
    P = first_order_tf(0.1, -1.0)
    with pytest.raises(ValueError, match="continuous-time"):
        spectral_radius(0.1, 0.1, plant=control.tf([1], [1, 1]))
    with pytest.raises(ValueError, match="dt=0.5"):
        spectral_radius(0.1, 0.1, plant=control.tf([1], [1, -0.5], dt=0.5))
    with pytest.raises(ValueError, match="SISO"):
        spectral_radius(0.1, 0.1, plant=control.ss(np.eye(2) * 0.5, np.eye(2), np.eye(2), np.zeros((2, 2)), dt=1))
    with pytest.raises(ValueError, match="SISO"):
        spectral_radius(0.1, 0.1, plant=(np.eye(2) * 0.5, np.ones((2, 2)), np.ones((1, 2)), np.zeros((1, 2))))
    with pytest.raises(ValueError, match="A has NaN"):
        spectral_radius(0.1, 0.1, plant=([[np.nan]], [[1.0]], [[1.0]], [[0.0]]))
    with pytest.raises(ValueError, match="plant must be"):
        spectral_radius(0.1, 0.1, plant="first order")
    with pytest.raises(ValueError, match="either a and gprime or plant"):
        spectral_radius(0.1, 0.1, 0.1, -1.0, plant=P)
    with pytest.raises(ValueError, match="give a and gprime"):
        spectral_radius(0.1, 0.1)
    with pytest.raises(ValueError, match="setpoint applies to plant objects"):
        spectral_radius(0.1, 0.1, plant=P, setpoint=10.0)
    with pytest.raises(ValueError, match="give setpoint="):
        spectral_radius(0.1, 0.1, plant=LinearizablePlant(0.1, ExpGain(30.0, 0.05)))
    with pytest.raises(ValueError, match="give setpoint="):
        spectral_radius(0.1, 0.1, plant=FirstOrderPlant(0.1, ExpGain(30.0, 0.05)))

    class Broken:
        def linearize(self, setpoint):
            return [1.0]

    with pytest.raises(ValueError, match=r"linearize\(setpoint\) must return"):
        spectral_radius(0.1, 0.1, plant=Broken(), setpoint=1.0)
    with pytest.raises(ValueError, match="kp must be finite"):
        spectral_radius(np.nan, 0.1, plant=P)
    with pytest.raises(ValueError, match="broadcast"):
        spectral_radius(np.ones(3), np.ones(4), plant=P)
    with pytest.raises(ValueError, match="kp must be a scalar"):
        robust_stability_lti(np.ones(2), 0.1, P)
    with pytest.raises(ValueError, match="window"):
        spectral_radius(0.1, 0.1, plant=P, window=0)
    with pytest.raises(ValueError, match="plants is empty"):
        robust_stability_lti(0.1, 0.1, [])


def test_dt_true_is_accepted():
    P = first_order_tf(0.1, -1.0)
    Pt = control.tf(P.num[0][0], P.den[0][0], dt=True)
    assert spectral_radius(0.4, 0.2, plant=Pt) == pytest.approx(spectral_radius(0.4, 0.2, plant=P), abs=1e-15)


def test_controller_linearization_is_from_the_laws_and_cached():
    lin = sl.controller_linearization(3, 1, "incremental")
    assert lin.states == ("beta", "integrator", "p_prev", "h_1", "h_2", "y_delayed")
    assert sl.controller_linearization(3, 1, "incremental") is lin
    Ak, Bk = lin.matrices(0.8, 0.3)
    # β row: β(t+1) = β + Kp(σ(m − C) − p_prev) + Ki(m − C), m = (y_prev + h_1 + h_2)/3, σ′(0) = 1/4.
    # (β carries the clamped integrator: its row reads the integrator's column.)
    np.testing.assert_allclose(Ak[0], [0, 1, -0.8, (0.2 + 0.3) / 3, (0.2 + 0.3) / 3, (0.2 + 0.3) / 3])
    # y(t) and its noise enter only through the delayed measurement (columns y, C, noise).
    np.testing.assert_allclose(Bk[0], [0, -(0.2 + 0.3), 0])
    np.testing.assert_allclose(Bk[-1], [1, 0, 1])
    pos = sl.controller_linearization(2, 0, "positional")
    assert pos.states == ("beta", "integral", "h_1")


class FitWithDraws(LinearizablePlant):
    """A fit-like object: point estimate, bootstrap draws of ``a``, a static map and a β range."""

    def __init__(self, a, g, draws_a, beta_range):
        super().__init__(a, g)
        self.g, self.beta_range = g, beta_range
        self.draws = [LinearizablePlant(x, g) for x in draws_a]

    def linearize_draws(self, setpoint):
        """Each draw linearised at the set point."""
        return [d.linearize(setpoint) for d in self.draws]


def test_check_fit_covers_operating_points_and_draws():
    g = ExpGain(30.0, 0.1)
    fit = FitWithDraws(0.1, g, [0.05, 0.2], (2.0, 10.0))
    sps = sl.operating_points(fit)
    np.testing.assert_allclose([sps[0], sps[-1]], [g(10.0), g(2.0)])
    assert len(sps) == 9
    out = sl.check_fit(fit, 0.5, 0.2, window=2, delay=1)
    assert out["n_plants"] == 27 and out["draws_included"]
    ref = [sn.spectral_radius_first_order(0.5, 0.2, a, float(g.derivative(g.inverse(c))), 2, 1)
           for c in sps for a in (0.1, 0.05, 0.2)]
    assert out["worst_spectral_radius"] == pytest.approx(max(ref), abs=1e-12)
    assert out["stable"] == (max(ref) < 1)
    assert sl.check_fit(fit, 0.5, 0.2, setpoints=[5.0], draws=False)["n_plants"] == 1
    with pytest.raises(ValueError, match="needs linearize"):
        sl.check_fit(object(), 0.5, 0.2)
    with pytest.raises(ValueError, match="no β range"):
        sl.operating_points(type("F", (), {"g": g})())
