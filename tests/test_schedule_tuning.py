"""Schedule tuning: gains chosen by simulating the fitted plant over a whole annealing run."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, StepRamp, simulate
from klcontrol.analysis import stability
from klcontrol.analysis.tuning.schedule import schedule_figures, tune_schedule
from klcontrol.cli import main
from klcontrol.simulate import response_metrics

PLANT = FirstOrderPlant(1 / 400, ExpGain(26.0, 0.12))
STEPS = 2000
SCHEDULE = StepRamp.dynamicvae_dsprites().compressed(800_000 / STEPS)


def _grange():
    b = np.linspace(1.0, 16.0, 400)
    h = 1e-6
    g = (PLANT.g(b + h) - PLANT.g(b - h)) / (2 * h)
    return float(g.min()), float(g.max())


@pytest.fixture(scope="module")
def tuned():
    return tune_schedule(PLANT, SCHEDULE, STEPS, gprime=_grange(), beta0=60.0, noise_std=0.3, max_jitter=0.2,
                         grid=15)


def test_tuned_gains_are_stable_on_a_dense_gprime_grid_and_beat_the_paper(tuned):
    lo, hi = _grange()
    gs = np.linspace(lo, hi, 400)
    rho = stability.spectral_radius(np.full(gs.shape, tuned.kp), np.full(gs.shape, tuned.ki), PLANT.a, gs, window=5)
    assert np.all(rho < 1)
    paper = tuned.references["paper"]
    assert tuned.figures.tracking_rmse < paper.tracking_rmse
    assert tuned.figures.overshoot <= 1.0 and tuned.figures.beta_jitter <= 0.2
    assert tuned.figures.robust and paper.robust


def test_figures_equal_a_separate_simulation_of_each_pair(tuned):
    kp = np.array([tuned.kp, 0.01])
    ki = np.array([tuned.ki, 0.005])
    figs = schedule_figures(kp, ki, PLANT, SCHEDULE, STEPS, beta0=60.0, noise_std=0.0)
    for f, (p, i) in zip(figs, zip(kp, ki)):
        tr = simulate(IncrementalPI(p, i, SCHEDULE, beta0=60.0, filter=5), PLANT, STEPS, y0=0.5)
        m = response_metrics(tr)
        assert f.tracking_rmse == pytest.approx(m["tracking_rmse"], rel=1e-9)
        assert f.overshoot == pytest.approx(m["overshoot"], rel=1e-9, abs=1e-12)
        assert f.beta_jitter == pytest.approx(np.std(np.diff(tr.beta)), rel=1e-9)
    # Measurement noise barely moves the tracking error of the chosen gains (it is filtered by the plant).
    assert figs[0].tracking_rmse == pytest.approx(tuned.figures.tracking_rmse, rel=0.1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="a must be"):
        tune_schedule(SimpleNamespace(a=-1e-3, g=PLANT.g), SCHEDULE, STEPS, gprime=(-3.0, -0.5))
    with pytest.raises(ValueError, match="no plant rate"):
        tune_schedule(SimpleNamespace(g=PLANT.g), SCHEDULE, STEPS, gprime=(-3.0, -0.5))
    with pytest.raises(ValueError, match="steps must be"):
        tune_schedule(PLANT, SCHEDULE, 1, gprime=(-3.0, -0.5))
    with pytest.raises(ValueError, match="noise_std"):
        tune_schedule(PLANT, SCHEDULE, STEPS, gprime=(-3.0, -0.5), noise_std=-1.0)
    with pytest.raises(ValueError, match="infeasible targets"):
        tune_schedule(PLANT, SCHEDULE, STEPS, gprime=(-3.0, -0.5), max_jitter=1e-12, grid=5)
    with pytest.raises(ValueError, match="gprime"):
        tune_schedule(PLANT, SCHEDULE, STEPS)


def test_cli_schedule_tuning_from_a_fit_file(tmp_path, capsys, fit_file):
    fit_json = fit_file(PLANT, (3.0, 12.0), 2500)
    png = tmp_path / "sched.png"
    assert main(["tune", "--fit", str(fit_json), "--window", "5", "--schedule-steps", "1500", "--beta0", "40",
                 "--max-jitter", "0.3", "--plot", str(png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["figures"]["tracking_rmse"] < r["references"]["paper"]["tracking_rmse"]
    assert r["steps"] == 1500 and png.stat().st_size > 1000
    assert main(["tune", "--a", "0.001", "--gprime", "-3", "-0.5", "--schedule-steps", "100"]) == 1
    assert "give --fit" in capsys.readouterr().err
