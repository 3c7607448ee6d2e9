"""Robust verdicts over g′ intervals, margins, and python-control interop."""
import math

import control
import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, PositionalPI, simulate
from klcontrol.analysis.stability import (
    RobustStability,
    crossings,
    eigenvalues,
    is_stable,
    robust_stability,
    spectral_radius,
    to_statespace,
    to_transfer_function,
)


def _grid_verdict(kp, ki, a, g1, g2, T, d, n=4001):
    return bool(np.all(spectral_radius(kp, ki, a, np.linspace(g1, g2, n), T, d) < 1))


def test_robust_verdict_matches_dense_grid():
    rng = np.random.default_rng(11)
    both = [0, 0]
    for _ in range(40):
        T, d = int(rng.integers(1, 6)), int(rng.integers(0, 2))
        kp, ki, a = rng.uniform(-0.5, 2), rng.uniform(0.01, 1), rng.uniform(0.05, 1)
        g1, g2 = sorted(rng.uniform(-6, -0.05, 2))
        r = robust_stability(kp, ki, a, g1, g2, T, d)
        assert isinstance(r, RobustStability)
        assert r.stable == _grid_verdict(kp, ki, a, g1, g2, T, d)
        both[r.stable] += 1
        grid_worst = np.max(spectral_radius(kp, ki, a, np.linspace(g1, g2, 2001), T, d))
        assert r.worst_spectral_radius >= grid_worst - 1e-12
        assert r.worst_spectral_radius == pytest.approx(grid_worst, abs=1e-4)
    assert min(both) > 3


def test_crossings_lie_on_the_unit_circle_and_flip_the_verdict():
    for T, d in ((1, 1), (5, 0), (3, 1)):
        cr = [c for c in crossings(0.5, 0.3, 0.2, T, d) if c.gprime != 0]
        assert cr
        for c in cr:
            lam = eigenvalues(0.5, 0.3, 0.2, c.gprime, T, d)
            assert np.min(np.abs(np.abs(lam) - 1)) < 1e-7
            assert np.min(np.abs(np.angle(lam[np.argmin(np.abs(np.abs(lam) - 1))])) - c.angle) < 1e-5
            e = 1e-6 * abs(c.gprime)
            assert is_stable(0.5, 0.3, 0.2, c.gprime - e, T, d) != is_stable(0.5, 0.3, 0.2, c.gprime + e, T, d)


def test_interval_with_an_interior_crossing_is_unstable_although_one_end_is_stable():
    r = robust_stability(0.01, 0.005, 1 / 2500, -1.0, -500.0, delay=1)
    assert not r.stable and r.gain_margin == 0.0
    lo, hi = r.stable_gprime_range
    assert lo == pytest.approx(-399.68, abs=0.01) and hi == 0.0
    assert is_stable(0.01, 0.005, 1 / 2500, -1.0, delay=1)


def test_gain_margin_is_the_scaling_limit():
    for T, d in ((1, 1), (5, 1), (2, 0)):
        r = robust_stability(0.01, 0.005, 1 / 2500, -3.2, -1.0, T, d)
        assert r.stable and r.gain_margin > 1
        s = r.gain_margin
        assert _grid_verdict(0.01 * s * 0.999, 0.005 * s * 0.999, 1 / 2500, -3.2, -1.0, T, d, 201)
        assert not _grid_verdict(0.01 * s * 1.001, 0.005 * s * 1.001, 1 / 2500, -3.2, -1.0, T, d, 201)
    assert robust_stability(0.01, 0.005, 1 / 2500, -3.2, delay=1).gain_margin == pytest.approx(124.9, abs=0.05)


def test_unstable_gains_report_the_stable_scaling_range():
    r = robust_stability(2.0, 1.0, 1 / 2500, -3.2, -1.0, delay=1)
    assert not r.stable and r.gain_margin == 0.0
    lo, hi = r.gain_range
    assert hi < 1
    assert robust_stability(2.0 * hi * 0.99, 1.0 * hi * 0.99, 1 / 2500, -3.2, -1.0, delay=1).stable


def test_to_dict_and_bad_input():
    d = robust_stability(0.1, 0.05, 0.01, -2.0).to_dict()
    assert isinstance(d["crossings"], list) and isinstance(d["stable"], bool)
    with pytest.raises(ValueError, match="finite"):
        robust_stability(0.1, math.nan, 0.01, -2.0)
    with pytest.raises(ValueError, match="a must be"):
        robust_stability(0.1, 0.1, -0.01, -2.0)


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (4, 0), (3, 1)])
@pytest.mark.parametrize("controller", ["incremental", "positional"])
def test_python_control_poles_equal_ours(T, d, controller):
    sys_ = to_statespace(0.8, 0.4, 0.1, -1.5, T, d, controller)
    assert sys_.dt == 1
    poles = sys_.poles()
    ours = eigenvalues(0.8, 0.4, 0.1, -1.5, T, d, controller)
    nz = poles[np.abs(poles) > 1e-7]
    assert len(nz) == len(ours)
    for p in ours:
        assert np.min(np.abs(nz - p)) < 1e-7
    tf = to_transfer_function(0.8, 0.4, 0.1, -1.5, T, d, controller, input="noise")
    assert isinstance(tf, control.TransferFunction)
    assert max(abs(tf.poles())) == pytest.approx(spectral_radius(0.8, 0.4, 0.1, -1.5, T, d), abs=1e-6)


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (5, 0), (2, 1)])
@pytest.mark.parametrize("controller", ["incremental", "positional"])
def test_linear_step_response_matches_simulate_near_equilibrium(T, d, controller):
    a, c0, k, A = 0.05, 10.0, 0.05, 30.0
    g = ExpGain(A, k)
    bstar = float(g.inverse(c0))
    gp = float(g.derivative(bstar))
    delta = -1e-4  # set point steps down at t = 1 (β rises, away from the positional clamp)
    sp_fn = lambda t: c0 + delta * (t >= 1)  # noqa: E731
    if controller == "positional":
        ctrl = PositionalPI(0.6, 0.2, sp_fn, beta_min=bstar - 0.3, filter=T)  # I* = 0 at β*
    else:
        ctrl = IncrementalPI(0.6, 0.2, sp_fn, beta0=bstar, filter=T)
    steps = 300
    tr = simulate(ctrl, FirstOrderPlant(a, g), steps, delay=d, y0=c0)
    u = delta * (np.arange(steps) >= 1)
    lin = control.forced_response(to_statespace(0.6, 0.2, a, gp, T, d, controller, input="setpoint"),
                                  np.arange(steps), u)
    dev = tr.state - c0
    assert np.max(np.abs(dev)) > 0.5 * abs(delta)
    np.testing.assert_allclose(lin.outputs, dev, atol=1e-3 * abs(delta))


@pytest.mark.parametrize("window", [12, 20, 40])
def test_long_windows_have_a_finite_verified_gain_margin(window):
    """The ω-polynomial of high degree loses its roots to rounding; the sweep must still find the crossing."""
    from klcontrol.analysis.stability import is_stable

    r = robust_stability(0.01, 0.005, 0.0004, -3.2, window=window)
    gm = r.gain_margin
    assert r.stable and math.isfinite(gm) and gm > 1
    assert is_stable(0.01 * gm * 0.999, 0.005 * gm * 0.999, 0.0004, -3.2, window=window)
    assert not is_stable(0.01 * gm * 1.001, 0.005 * gm * 1.001, 0.0004, -3.2, window=window)


def test_robust_map_equals_robust_stability_pair_by_pair():
    from klcontrol.analysis.stability.robust import robust_stable_map

    rng = np.random.default_rng(0)
    n_stable = 0
    for ctrl, (T, d) in [("incremental", (1, 0)), ("positional", (5, 1)), ("incremental-official", (5, 0)),
                         ("incremental", (8, 1))]:
        a = 1 / float(rng.uniform(50, 3000))
        kp, ki = 0.3 * rng.uniform(-0.5, 3, 60), rng.uniform(0.001, 0.6, 60)
        m = robust_stable_map(kp, ki, a, -0.71, -2.24, T, d, ctrl)
        each = [robust_stability(p, i, a, -2.24, -0.71, T, d, ctrl).stable for p, i in zip(kp, ki)]
        assert m.tolist() == each
        n_stable += sum(each)
    assert 40 < n_stable < 200  # both verdicts exercised
    assert robust_stable_map(0.01, 0.005, 1 / 791, -2.24, -0.71, 5) is True  # scalars give a bool
    assert robust_stable_map(0.01, 0.005, 1 / 791, -1.0, -1.0, 5) == is_stable(0.01, 0.005, 1 / 791, -1.0, 5)
    with pytest.raises(ValueError, match="finite"):
        robust_stable_map(0.01, 0.005, 1 / 791, float("nan"), -0.71)


def test_the_segment_test_finds_an_unstable_interior_between_two_stable_ends():
    # two stable quartics whose convex combination leaves the half-plane somewhere inside: found by dense
    # sampling with numpy.roots, the independent check
    from klcontrol.analysis.stability.robust import _segment_hurwitz

    rng = np.random.default_rng(0)
    stable = lambda c: bool(np.all(np.roots(c).real < 0))  # noqa: E731
    seen = {True: 0, False: 0}
    while min(seen.values()) < 5:
        z = [complex(-rng.uniform(0.01, 0.3), rng.uniform(0.5, 5)) for _ in range(2)]
        c0, c1 = (np.real(np.poly([w, w.conjugate(), -rng.uniform(0.01, 3), -rng.uniform(0.01, 3)])) for w in z)
        whole = all(stable((1 - t) * c0 + t * c1) for t in np.linspace(0, 1, 4001))
        assert _segment_hurwitz(c0[None], c1[None])[0] == whole
        seen[whole] += 1
