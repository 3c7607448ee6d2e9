"""klcontrol.vae_plant.experiments.stability_runs: a closed-loop gain run from a settled checkpoint and its summary row."""
import json
import os

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant
from klcontrol.analysis.stability import spectral_radius
from klcontrol.analysis.verdicts.observed import observed_stability
from klcontrol.vae_plant.experiments import identify as idf
from klcontrol.vae_plant.experiments import stability_runs as sr
from klcontrol.vae_plant.training.trace_log import read_trace_csv


def test_ray_gains():
    g = sr.ray_gains(5, [0.1, 0.3], window=3, seeds=(0, 1))
    assert [(x["kp"], x["ki"], x["seed"]) for x in g] == [(0.5, 0.1, 0), (0.5, 0.1, 1), (1.5, 0.3, 0), (1.5, 0.3, 1)]
    assert all(x["window"] == 3 for x in g)


def test_observed_brackets():
    rows = [dict(kp=0, ki=k, observed_stable=s) for k, s in [(0.1, True), (0.2, False), (0.15, True), (0.4, False)]]
    rows += [dict(kp=10 * k, ki=k, observed_stable=s) for k, s in [(0.1, True), (0.5, True), (0.2, False)]]
    rows += [dict(kp=0, ki=0.2, observed_stable=True)]
    b = sr.observed_brackets(rows)
    assert b[0.0] == dict(stable_below=0.15, unstable_from=0.2, mixed=[0.2], monotone=True, n=5)
    assert b[10.0]["stable_below"] == 0.1 and b[10.0]["unstable_from"] == 0.2 and not b[10.0]["monotone"]


def test_gain_run_and_summary(tmp_path):
    settled = idf.settle(str(tmp_path / "settle"), 4.0, 20, 0, batch_size=2)
    out = sr.gain_run(str(tmp_path / "g"), settled, 4.0, 13.0, 0.5, 0.2, window=3, seed=1, steps=150, batch_size=2)
    tr = read_trace_csv(os.path.join(out, "trace.csv"))
    assert tr["beta"][0] == pytest.approx(5.0) and np.all(tr["setpoint"] == 13.0)
    plant = FirstOrderPlant(0.1, ExpGain(29.0, 0.1))
    rows = sr.summarize([out], [plant], ["m"], export=str(tmp_path / "exp"))
    r = rows[0]
    assert (r["kp"], r["ki"], r["window"], r["delay"], r["seed"]) == (0.5, 0.2, 3, 0, 1)
    assert r["spectral_radius_m"] == pytest.approx(spectral_radius(0.5, 0.2, plant=plant, setpoint=13.0, window=3))
    assert r["predicted_stable_m"] == (r["spectral_radius_m"] < 1)
    assert r["observed_stable"] == observed_stability(tr["beta"], 4.0)["stable"]
    assert os.path.isfile(r["trace"]) and r["trace"].endswith(".csv.gz")
    cfg = json.load(open(r["trace"].replace(".csv.gz", ".config.json")))
    assert cfg["settings"]["init_from"]["step"] == 20
