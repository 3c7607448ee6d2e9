"""python-control objects of the loop: named signals, both inputs, the open loop L(z) and its margins."""
import math
import warnings

import control
import numpy as np
import pytest

from klcontrol.analysis.stability import eigenvalues, open_loop, spectral_radius, to_statespace, to_transfer_function
from klcontrol.analysis.stability.control import loop_margins, state_names

P2 = control.tf([-0.3, 0.12, 0.0], [1, -1.2, 0.45], dt=1)  # 2nd-order plant with feedthrough


def test_named_states_and_both_inputs():
    S = to_statespace(0.8, 0.3, 0.1, -1.5, window=3, delay=1)
    assert S.input_labels == ["setpoint", "noise"] and S.output_labels == ["y"]
    assert S.state_labels == ["y_prev", "beta", "integrator", "p_prev", "h_1", "h_2", "y_delayed"] == state_names(3, 1)
    assert to_statespace(0.8, 0.3, 0.1, -1.5, controller="positional").state_labels == ["y_prev", "beta", "integral"]
    one = [to_statespace(0.8, 0.3, 0.1, -1.5, 3, 1, input=k) for k in ("setpoint", "noise")]
    np.testing.assert_array_equal(S.B, np.hstack([o.B for o in one]))
    assert one[1].input_labels == ["noise"]
    T = to_transfer_function(0.8, 0.3, 0.1, -1.5, 3, 1)
    assert (T.noutputs, T.ninputs) == (1, 2)
    L = to_statespace(0.8, 0.3, plant=P2, window=2, delay=1)
    assert L.state_labels == ["plant_0", "plant_1", "beta", "integrator", "p_prev", "h_1", "y_delayed"]
    assert L.input_labels == ["setpoint", "noise"]
    # Signals are addressable by name in python-control.
    assert control.ss2tf(S[0, "noise"]).ninputs == 1


def test_setpoint_step_settles_at_the_new_setpoint():
    # Integral action: a unit set-point step moves y by exactly 1 at steady state, on any plant.
    for S in (to_statespace(0.8, 0.3, 0.1, -1.5, 2, 1), to_statespace(0.1, 0.05, plant=P2, window=2, delay=0)):
        assert control.dcgain(S[0, "setpoint"]) == pytest.approx(1.0, abs=1e-9)
        assert control.dcgain(S[0, "noise"]) == pytest.approx(-1.0, abs=1e-9)  # noise is taken for KL


def hand_K(kp, ki, T, d, z):
    """Controller measured-KL → β from the equations: [Kp/(4z) + Ki/(z − 1)]·(1/T)Σz^{−k}·z^{−d}."""
    fir = sum(z ** (-k) for k in range(T)) / T
    return (kp / (4 * z) + ki / (z - 1)) * fir * z ** (-d)


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (4, 0), (3, 1)])
@pytest.mark.parametrize("controller", ["incremental", "positional"])
def test_open_loop_is_minus_K_P_and_closes_to_our_poles(T, d, controller):
    kp, ki, a, gp = 0.8, 0.3, 0.1, -1.5
    z = np.exp(1j * np.array([0.01, 0.3, 1.0, 2.5, math.pi]))
    L = open_loop(kp, ki, a, gp, T, d, controller)
    assert L.input_labels == ["beta"] and L.output_labels == ["beta_fb"] and L.dt == 1
    P = a / (1 + a) * gp * z / (z - 1 / (1 + a))
    np.testing.assert_allclose(L(z), -hand_K(kp, ki, T, d, z) * P, rtol=1e-12, atol=1e-14)
    # Closing L with negative unity feedback gives the loop's eigenvalues.
    cl = np.sort_complex(control.feedback(L, 1).poles())
    ours = eigenvalues(kp, ki, a, gp, T, d, controller)  # nonzero roots of the exact polynomial
    for lam in ours:
        assert np.min(np.abs(cl - lam)) < 1e-8
    assert np.max(np.abs(cl)) == pytest.approx(spectral_radius(kp, ki, a, gp, T, d, controller), abs=1e-10)
    L2 = open_loop(0.1, 0.05, plant=P2, window=T, delay=d, controller=controller)
    np.testing.assert_allclose(L2(z), -hand_K(0.1, 0.05, T, d, z) * P2(z), rtol=1e-10, atol=1e-14)
    assert np.max(np.abs(control.feedback(L2, 1).poles())) == pytest.approx(
        spectral_radius(0.1, 0.05, plant=P2, window=T, delay=d, controller=controller), abs=1e-10)


def test_gain_margin_equals_the_hand_derived_one():
    # T = 1, first-order plant, G = −g′. Delay 0 (exact conditions Ki > 0, Kp·G > −4, (Kp + 2Ki)·a·G < 4(2 + a)):
    # scaling both gains by s, the last fails first at s = 4(2 + a)/((Kp + 2Ki)·a·G), with λ = −1.
    # Delay 1 (corrected Theorem 3.1): s·(Kp + Ki)·a·G < 4(1 + a) and
    # 16(1 + a)(1 − s·Ki·G) + 4s·Kp·G − a·s²·Kp²·G² > 0: the smaller of the linear bound and the quadratic's root.
    rng = np.random.default_rng(4)
    for _ in range(20):
        a, G = rng.uniform(0.01, 1.0), rng.uniform(0.2, 4.0)
        kp, ki = rng.uniform(0.0, 1.0) / G, rng.uniform(0.01, 0.5) / G
        m0 = loop_margins(kp, ki, a, -G, 1, 0)
        assert m0["gain_margin"] == pytest.approx(4 * (2 + a) / ((kp + 2 * ki) * a * G), rel=1e-10)
        assert m0["phase_crossover_angle"] == pytest.approx(math.pi)
        quad = max(np.roots([-a * kp**2 * G**2, 4 * kp * G - 16 * (1 + a) * ki * G, 16 * (1 + a)]).real)
        hand1 = min(4 * (1 + a) / ((kp + ki) * a * G), quad)
        m1 = loop_margins(kp, ki, a, -G, 1, 1)
        assert m1["gain_margin"] == pytest.approx(hand1, rel=1e-10)
        # At the margin the closed loop from L is on the unit circle.
        s = m1["gain_margin"]
        assert np.max(np.abs(control.feedback(s * open_loop(kp, ki, a, -G, 1, 1), 1).poles())) == pytest.approx(
            1.0, abs=1e-9)


@pytest.mark.parametrize("T,d", [(1, 1), (3, 1), (2, 0), (5, 0)])
def test_python_control_margins_agree_where_the_crossover_is_inside(T, d):
    # Phase crossovers strictly inside (0, π): python-control's own stability_margins agrees with ours.
    kp, ki, a, gp = 0.8, 0.3, 0.1, -1.5
    ours = loop_margins(kp, ki, a, gp, T, d)
    assert 0 < ours["phase_crossover_angle"] < math.pi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm, pm, _, wpc, wgc, _ = control.stability_margins(open_loop(kp, ki, a, gp, T, d), method="frd")
    assert gm == pytest.approx(ours["gain_margin"], rel=1e-6)
    assert pm == pytest.approx(ours["phase_margin"], abs=1e-5)
    assert wgc == pytest.approx(ours["gain_crossover_angle"], rel=1e-6)


def test_unstable_loop_margins():
    m = loop_margins(5.0, 3.0, 0.1, -1.5, 1, 1)
    assert m["stable"] is False and m["gain_margin"] == 0.0 and m["gain_range"][1] < 1
    assert spectral_radius(5.0, 3.0, 0.1, -1.5, 1, 1) > 1


def test_array_gains_are_rejected_naming_the_parameter():
    with pytest.raises(ValueError, match="kp must be a scalar"):
        to_statespace(np.ones(2), 0.3, 0.1, -1.5)
    with pytest.raises(ValueError, match="ki must be a scalar"):
        open_loop(0.8, np.array([0.1, 0.2]), 0.1, -1.5)
    with pytest.raises(ValueError, match="gprime must be a scalar"):
        to_transfer_function(0.8, 0.3, 0.1, np.array([-1.0, -2.0]))
    with pytest.raises(ValueError, match="a must be a scalar"):
        loop_margins(0.8, 0.3, np.array([0.1]), -1.5)
    with pytest.raises(ValueError, match="kp must be a scalar"):
        to_statespace(np.ones(3), 0.3, plant=P2)
    with pytest.raises(ValueError, match="a must be > 0"):
        open_loop(0.8, 0.3, -0.1, -1.5)
    with pytest.raises(ValueError, match="input must be"):
        to_statespace(0.8, 0.3, 0.1, -1.5, input="disturbance")
    with pytest.raises(ValueError, match="either a and gprime or plant"):
        open_loop(0.8, 0.3, 0.1, -1.5, plant=P2)
