"""Critical gains from a measured frequency response (analysis/identification/frequency.py,
analysis/stability/critical.py): cross-checked against the laws run step by step and against model eigenvalues."""
import math

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, ScheduledBeta, simulate
from klcontrol.analysis.identification.experiment import beta_schedule
from klcontrol.analysis.identification.frequency import critical_gain_interval, frequency_response
from klcontrol.analysis.stability.critical import controller_response, critical_gain, critical_gain_from_response
from klcontrol.analysis.stability.lti import plant_matrices


@pytest.mark.parametrize("kp, ki, window", [(0.0, 0.1, 5), (0.5, 0.05, 1), (1.0, 0.1, 3)])
def test_controller_response_equals_the_law_run_on_a_sinusoid(kp, ki, window):
    f, eps, c = 1 / 37, 1e-3, 10.0
    ctrl = IncrementalPI(kp, ki, c, beta0=100.0, beta_min=-math.inf, filter=window)
    ctrl.prime(c)
    t = np.arange(3000)
    y = c + eps * np.cos(2 * np.pi * f * t)
    out = np.array([ctrl.step(float(v)) for v in y])  # out[t] = β(t + 1)
    beta = np.concatenate([[100.0], out[:-1]]) - 100.0
    # fit β(t) = Re(K·ε·e^{iωt}) + drift (the integrator accumulates the mean error: none here)
    tt = t[1000:]
    X = np.column_stack([np.cos(2 * np.pi * f * tt), -np.sin(2 * np.pi * f * tt), np.ones_like(tt, dtype=float)])
    (re, im, _), *_ = np.linalg.lstsq(X, beta[1000:], rcond=None)
    K = controller_response([f], kp, ki, window)[0]
    assert abs(complex(re, im) / eps - K) < 1e-6 * max(1, abs(K))


@pytest.mark.parametrize("ratio", [0.0, 2.0, 10.0])
def test_critical_gain_from_an_exact_response_equals_the_eigenvalue_one(ratio):
    from klcontrol import data
    from klcontrol.analysis.identification.fits import load_fit

    fit = load_fit(data.path("identify/fit.json"))
    A, B, C, D = plant_matrices(fit, 14.0)
    f = np.linspace(1e-4, 0.5, 20001)
    n = A.shape[0]
    P = np.array([(C @ np.linalg.solve(np.exp(2j * np.pi * x) * np.eye(n) - A, B) + D).item() for x in f])
    a = critical_gain(ratio, plant=fit, setpoint=14.0, window=5)
    b = critical_gain_from_response(f, P, ratio, window=5)
    assert b.ki == pytest.approx(a.ki, rel=1e-3) and b.period == pytest.approx(a.period, rel=1e-2)


def test_measured_response_of_a_simulated_plant_gives_its_critical_gain():
    """A first-order plant with a fast rate (the kind of loop the estimate is for), excited like identify does."""
    from klcontrol.simulate import Trace

    plant = FirstOrderPlant(0.08, ExpGain(30.0, 0.25))
    traces = []
    for seed in (1, 2, 4):
        sched, beta = beta_schedule(4.0, 0.3, 2000, 100, 5, 200, seed)
        tr = simulate(ScheduledBeta(sched), plant, steps=len(beta), noise_std=0.05, seed=seed, y0=float(plant.g(4.0)),
                      engine="numpy")
        traces.append(Trace(np.arange(len(beta)), np.asarray(tr.beta, float), np.asarray(tr.kl, float),
                            np.full(len(beta), np.nan)))
    fr = frequency_response(traces, 4.0, 256)
    assert np.median(fr.coherence[fr.freqs < 0.1]) > 0.9
    for ratio in (0.0, 10.0):
        want = critical_gain(ratio, a=0.08, gprime=float(plant.g.derivative(4.0)), window=5)
        got = critical_gain_interval(traces, 4.0, ratio, window=5)
        assert got["interval"][0] / 1.1 <= want.ki <= got["interval"][1] * 1.1
        assert got["ki"] == pytest.approx(want.ki, rel=0.15)


def test_refusals():
    from klcontrol.simulate import Trace

    nan = np.full(100, np.nan)
    tr = Trace(np.arange(100), np.full(100, 4.0), np.ones(100), nan)
    with pytest.raises(ValueError, match="longer than a segment"):
        frequency_response([tr], 4.0, 256)
    lag = Trace(np.arange(100), np.full(100, 4.0), np.ones(100), nan, meta={"kl_lag": 1})
    with pytest.raises(ValueError, match="aligned"):
        frequency_response([lag], 4.0, 64)
