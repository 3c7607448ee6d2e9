"""klcontrol.analysis.verdicts.observed: the observed-stability criterion on synthetic loops of known verdict."""
import numpy as np
import pytest

from klcontrol import Constant, ExpGain, FirstOrderPlant, IncrementalPI, simulate
from klcontrol.analysis.stability import spectral_radius
from klcontrol.analysis.verdicts.observed import observed_stability

PLANT = FirstOrderPlant(0.05, ExpGain(29.0, 0.1))
BSTAR = 4.0
C = float(PLANT.g(BSTAR))


def _run(kp, ki, seed, steps=1500):
    ctrl = IncrementalPI(kp, ki, Constant(C), beta0=1.25 * BSTAR, filter=5)
    return simulate(ctrl, PLANT, steps, y0=C, noise_std=0.6, seed=seed).beta


def _rho(kp, ki):
    return spectral_radius(kp, ki, PLANT.a, PLANT.g.derivative(BSTAR), window=5, delay=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kp, ki", [(0.0, 0.01), (0.0, 0.1), (4.0, 0.3), (8.0, 0.3), (0.0, 0.4), (0.0, 0.6), (1.0, 0.5)])
def test_verdict_matches_the_linear_analysis_away_from_the_boundary(kp, ki, seed):
    rho = _rho(kp, ki)
    assert abs(rho - 1) > 0.005  # the cases are chosen away from the boundary
    v = observed_stability(_run(kp, ki, seed), BSTAR)
    assert v["stable"] == (rho < 1), (rho, v)
    if not v["stable"]:
        assert v["reasons"]


def test_rules_fire_on_their_own():
    t = np.arange(2000)
    quiet = 4 + 0.05 * np.sin(t / 3)
    assert observed_stability(quiet, 4)["stable"]
    grow = 4 + 0.01 * np.exp(t / 400) * np.sin(t / 5)
    v = observed_stability(grow, 4)
    assert not v["stable"] and "growth" in v["reasons"]
    cycle = np.clip(4 + 6 * np.sin(t / 10), 0, None)
    v = observed_stability(cycle, 4)
    assert set(v["reasons"]) >= {"saturation", "large_oscillation"}


def test_bad_input():
    with pytest.raises(ValueError, match="beta_star"):
        observed_stability(np.ones(500), 0)
    with pytest.raises(ValueError, match="140 rows"):
        observed_stability(np.ones(100), 4)
    with pytest.raises(ValueError, match="finite"):
        observed_stability(np.array([1.0, np.nan] * 100), 4)


def test_shipped_stability_summary_is_consistent_with_its_traces():
    """docs/results/stability_real/summary.json: each verdict recomputed from its trace and the shipped fits."""
    import json
    from pathlib import Path

    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.identification.traces import read_trace

    root = Path(__file__).resolve().parents[1]
    s = json.loads((root / "docs/results/stability_real/summary.json").read_text())
    runs = s["runs"]
    assert len(runs) >= 8
    assert sum(r["observed_stable"] for r in runs) >= 2 and sum(not r["observed_stable"] for r in runs) >= 2
    fits = {k: load_fit(root / v) for k, v in s["fits"].items()}
    for r in runs:
        tr = read_trace(root / r["trace"])
        assert observed_stability(tr.beta, r["beta_star"])["stable"] == r["observed_stable"]
        np.testing.assert_allclose(tr.setpoint, r["setpoint"])
        for name, fit in fits.items():
            rho = spectral_radius(r["kp"], r["ki"], plant=fit, setpoint=r["setpoint"], window=r["window"],
                                  delay=r["delay"])
            assert (rho < 1) == r[f"predicted_stable_{name}"]
