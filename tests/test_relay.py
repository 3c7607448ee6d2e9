"""The relay experiment (analysis/identification/relay.py) against the exact critical gain of a known plant."""
import numpy as np
import pytest

from klcontrol import data
from klcontrol.analysis.identification.fits import load_fit
from klcontrol.analysis.identification.relay import RelayProbe, relay_critical_gain
from klcontrol.analysis.stability import critical_gain
from klcontrol.analysis.stability.lti import plant_matrices


def _run(fit, c, beta_star, h, steps, noise=0.0, seed=0):
    A, B, C, D = plant_matrices(fit, c)
    x = np.zeros(A.shape[0])
    probe = RelayProbe(0.0, h, c, beta_star, window=5)
    rng = np.random.default_rng(seed)
    betas, kls = [], []
    beta = probe.beta
    for _ in range(steps):
        u = beta - beta_star
        y = c + (C @ x).item() + D.item() * u + noise * rng.normal()
        x = A @ x + B[:, 0] * u
        betas.append(beta)
        kls.append(y)
        beta = probe.step(y)
    return probe, betas, kls


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_the_integral_ray_relay_finds_the_critical_gain_of_a_ringing_plant(noise):
    fit = load_fit(data.path("identify/fit.json"))  # a plant that rings (period 44)
    want = critical_gain(0.0, plant=fit, setpoint=14.0, window=5)
    _, betas, kls = _run(fit, 14.0, 4.0, 0.04, 1500, noise)
    got = relay_critical_gain(betas, kls, 0.0, 0.04, 14.0, window=5)
    assert got["ki"] == pytest.approx(want.ki, rel=0.1) and got["period"] == pytest.approx(want.period, rel=0.1)
    assert got["cycles"] >= 20


def test_too_short_a_run_says_so_and_state_round_trips():
    fit = load_fit(data.path("identify/fit.json"))
    probe, betas, kls = _run(fit, 14.0, 4.0, 0.04, 60)
    with pytest.raises(ValueError, match="whole cycles"):
        relay_critical_gain(betas, kls, 0.0, 0.04, 14.0, window=5)
    twin = RelayProbe(0.0, 0.04, 14.0, 4.0, window=5)
    twin.load_state_dict(probe.state_dict())
    assert [twin.step(14.5), twin.step(13.0)] == [probe.step(14.5), probe.step(13.0)]
    with pytest.raises(ValueError, match="positive"):
        RelayProbe(0.0, 0.0, 14.0, 4.0)
