"""Gain design: robust stability, beating the paper's gains, predictions vs simulation, bad input."""
import math

import control
import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, simulate
from klcontrol.analysis.tuning.design import PAPER_GAINS, gain_figures, loop_transfer_functions, noise_gain, tune


def _hand_polynomials(kp, ki, a, gprime, window=1, delay=0):
    """The linearised loop derived by hand (independent of the law-built path), in powers of q = z⁻¹.

    plant P(z) = b·z/(z − r), r = 1/(1+a), b = a·g′/(1+a); controller
    K(z) = ((Kp/4 + Ki)·z − Kp/4)/(z·(z − 1)); filter F(z) = (1 + … + z^{1−T})/T; delay z^{−d};
    measurement m = D·F·(y + n), β = K·m.
    """
    r = 1.0 / (1.0 + a)
    b = a * gprime / (1.0 + a)
    n_p, d_p = np.array([b]), np.array([1.0, -r])
    n_k, d_k = np.array([0.0, kp / 4 + ki, -kp / 4]), np.array([1.0, -1.0])
    n_g = np.convolve(np.convolve(n_k, np.r_[np.zeros(delay), 1.0]), np.full(window, 1.0 / window))
    char = np.polysub(np.convolve(d_k, d_p)[::-1], np.convolve(n_g, n_p)[::-1])[::-1]
    return {"noise_to_beta": (np.convolve(n_g, d_p), char), "setpoint_to_kl": (-np.convolve(n_p, n_k), char)}


def _hand_tf(kp, ki, a, g, window, delay, which):
    num, den = _hand_polynomials(kp, ki, a, g, window, delay)[which]
    n = max(len(num), len(den))
    return control.tf(np.r_[num, np.zeros(n - len(num))], np.r_[den, np.zeros(n - len(den))], 1)


def _poles_rho(kp, ki, a, g, window, delay):
    # Independent of klcontrol.analysis.stability: the poles of the hand-derived closed loop in python-control.
    return float(np.max(np.abs(control.poles(_hand_tf(kp, ki, a, g, window, delay, "noise_to_beta")))))


@pytest.mark.parametrize("controller", ["incremental", "incremental-official", "positional"])
@pytest.mark.parametrize("window,delay", [(1, 0), (1, 1), (5, 0), (3, 1)])
def test_law_built_loop_equals_the_hand_derivation(controller, window, delay):
    """tune's loop (laws run on symbols) has the hand-derived transfer functions, for every controller kind."""
    kp, ki, a, g = 0.8, 0.3, 0.05, -1.7
    tfs = loop_transfer_functions(kp, ki, a, g, window, delay, controller)
    w = np.exp(1j * np.linspace(0.01, 3.1, 37))
    for which in ("noise_to_beta", "setpoint_to_kl"):
        mine, hand = tfs[which], _hand_tf(kp, ki, a, g, window, delay, which)
        # Noise enters before the delay in the loop step, after it in the hand form: same response up to z^{−d}
        # for noise → β, hence compare magnitudes there and full responses for the set point.
        got, ref = np.array([complex(mine(x)) for x in w]), np.array([complex(hand(x)) for x in w])
        if which == "noise_to_beta":
            got, ref = np.abs(got), np.abs(ref)
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-12)


@pytest.fixture(scope="module")
def dsprites_tuned():
    return tune(a=1 / 2500, gprime=(-3.2, -0.5), window=5, delay=0)


def test_tuned_gains_are_robustly_stable_and_beat_the_paper(dsprites_tuned):
    r = dsprites_tuned
    dense = np.linspace(-3.2, -0.5, 60)
    rhos = [_poles_rho(r.kp, r.ki, 1 / 2500, g, 5, 0) for g in dense]
    assert max(rhos) < 1
    paper = [_poles_rho(*PAPER_GAINS, 1 / 2500, g, 5, 0) for g in dense]
    assert max(rhos) < max(paper)
    assert r.figures.robust and r.figures.worst_spectral_radius < r.references["paper"].worst_spectral_radius
    assert r.figures.settling_steps < r.references["paper"].settling_steps
    assert r.figures.overshoot <= 0.05 < r.references["paper"].overshoot


def test_tuned_gains_are_the_quietest_fast_enough_candidates(dsprites_tuned):
    # Scaling the tuned gains down makes the loop quieter but no longer faster than the paper's.
    r = dsprites_tuned
    slower = gain_figures(r.kp * 0.5, r.ki * 0.5, 1 / 2500, (-3.2, -0.5), window=5)
    assert slower.noise_gain < r.figures.noise_gain
    assert slower.settling_steps > r.figures.settling_steps


def test_noise_gain_matches_simulated_beta_noise():
    # A fast loop so that a long run averages many correlation times.
    a, A, k, C, kp, ki, sd = 0.02, 26.38, 0.0476, 10.0, 2.0, 0.2, 0.02
    plant = FirstOrderPlant(a, ExpGain(A, k))
    bstar = float(plant.g.inverse(C))
    g = float(plant.g.derivative(bstar))
    pred = noise_gain(kp, ki, a, g, 3, 0) * sd
    tr = simulate(IncrementalPI(kp, ki, C, beta0=bstar, beta_min=-1e6, filter=3), plant, 120_000, y0=C,
                  noise_std=sd, seed=3)
    measured = tr.beta[5000:].std()
    assert measured == pytest.approx(pred, rel=0.08)


def test_predicted_decay_and_overshoot_match_nonlinear_simulation():
    a, A, k, C, kp, ki = 0.02, 26.38, 0.0476, 10.0, 2.0, 0.05
    plant = FirstOrderPlant(a, ExpGain(A, k))
    bstar = float(plant.g.inverse(C))
    g = float(plant.g.derivative(bstar))
    fig = gain_figures(kp, ki, a, g, window=1, delay=0)
    # Small set-point step (1 %) from equilibrium: nearly linear.
    tr = simulate(IncrementalPI(kp, ki, C * 1.01, beta0=bstar, beta_min=-1e6), plant, 20_000, y0=C)
    err = (tr.state - C * 1.01) / (C * 0.01)
    over = max(0.0, err.max())
    assert over == pytest.approx(fig.overshoot, abs=0.02)
    settled = np.flatnonzero(np.abs(err) > 0.02)
    settle_sim = settled[-1] + 1 if len(settled) else 0
    # The 2 % envelope bound of the slowest mode is an upper estimate of the actual settling time.
    assert settle_sim <= fig.settling_steps * 1.1
    assert settle_sim >= fig.settling_steps * 0.3


def test_paper_figures_are_reported_for_comparison(dsprites_tuned):
    r = dsprites_tuned
    assert set(r.references) == {"paper"}
    assert r.references["paper"].kp == 0.01 and r.references["paper"].ki == 0.005
    assert "paper" in r.table() and "tuned" in r.table()


def test_settling_target_minimises_noise():
    r = tune(a=0.01, gprime=(-1.5, -1.0), window=1, settling=3000)
    assert r.figures.settling_steps <= 3000
    assert r.figures.robust


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(a=0.0, gprime=(-1, -0.5)), "a must be"),
        (dict(a=-1.0, gprime=(-1, -0.5)), "a must be"),
        (dict(a=0.01, gprime=(-0.5, -1.0)), "empty"),
        (dict(a=0.01, gprime=(-1.0, 0.5)), "g′ must be < 0"),
        (dict(a=0.01, gprime=(-1.0, -0.5), settling=1), "infeasible"),
        (dict(a=0.01), "needs"),
    ],
)
def test_bad_input_names_the_problem(kw, msg):
    with pytest.raises(ValueError, match=msg):
        tune(**kw)


def test_unstable_gains_have_infinite_noise_gain():
    assert math.isinf(noise_gain(1e4, 1e4, 0.01, -1.0))


def test_design_gains_is_tune_in_one_call():
    from klcontrol.analysis.tuning.design import tune
    from klcontrol.analysis.tuning.recommend import design_gains

    r, problems = design_gains(a=1e-3, gprime=(-3.0, -1.0), window=5)
    ref = tune(a=1e-3, gprime=(-3.0, -1.0), window=5, compare={"paper": PAPER_GAINS})
    assert (r.kp, r.ki, problems) == (ref.kp, ref.ki, [])
    with pytest.raises(ValueError, match="simulates the fitted plant"):
        design_gains(a=1e-3, gprime=-2.0, schedule_steps=100)
    # Refusing an unidentified fit (klcontrol.analysis.verdicts.fits.Unidentified) is checked through the CLI in
    # tests/test_identification.py (exit 4).


def test_the_response_figure_simulates_the_designed_controller_kind(tmp_path):
    from klcontrol import ExpGain, FirstOrderPlant, StepRamp
    from klcontrol.analysis.stability.plots import tuned_response_figure

    plant = FirstOrderPlant(1e-3, ExpGain(26.0, 0.05))
    sp = StepRamp.dynamicvae_dsprites().compressed(400)
    from types import SimpleNamespace

    r = SimpleNamespace(kp=0.05, ki=0.01, window=1, delay=0)  # what the figure reads of a design
    traces = {}
    for kind in ("incremental", "positional"):
        traces[kind] = tuned_response_figure(r, plant, sp, 2000, controller=kind, beta0=1.0,
                                             path=tmp_path / f"{kind}.png", reference=PAPER_GAINS)
        assert (tmp_path / f"{kind}.png").stat().st_size > 1000
        assert traces[kind].beta.shape == (2000, 2)
    assert not np.allclose(traces["incremental"].beta, traces["positional"].beta)
