"""klcontrol.vae_plant.experiments.identify: excitation design, noise measurement, the settle → excite experiment end to end."""
import gzip
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klcontrol import ScheduledBeta
from klcontrol.analysis.identification import experiment as ex
from klcontrol.vae_plant.experiments import identify as idf


@given(st.integers(1, 3000), st.integers(1, 50), st.integers(0, 200), st.integers(0, 10_000))
def test_random_binary_levels_hold_times_and_alternation(length, hmin, extra, seed):
    hmax = hmin + extra
    lv, holds = ex.random_binary_levels(length, hmin, hmax, seed)
    assert len(lv) == length and set(np.unique(lv)) <= {-1.0, 1.0}
    assert sum(h for _, h in holds) == length
    assert all(hmin <= h <= hmax for _, h in holds[:-1]) and 1 <= holds[-1][1] <= hmax
    assert all(a[0] == -b[0] for a, b in zip(holds, holds[1:]))
    np.testing.assert_array_equal(lv, ex.random_binary_levels(length, hmin, hmax, seed)[0])


def test_beta_schedule_drives_scheduled_beta_exactly():
    sched, beta = ex.beta_schedule(4.0, 0.4, 500, 50, 5, 80, seed=3)
    assert len(beta) == 550 and np.all(beta[:50] == 4.0)
    np.testing.assert_allclose(np.unique(beta[50:]), [4 * math.exp(-0.4), 4 * math.exp(0.4)])
    c = ScheduledBeta(sched)
    got = [c.beta] + [c.step(1.0) for _ in range(549)]
    np.testing.assert_allclose(got, beta, rtol=1e-15)
    with pytest.raises(ValueError, match="delta"):
        ex.beta_schedule(4.0, 0.0, 10, 0, 1, 2, 0)


def test_settled_noise_recovers_level_drift_and_mean_noise():
    rng = np.random.default_rng(0)
    t = np.arange(4000)
    kl = 13.0 - 3e-4 * t + rng.normal(scale=0.6, size=4000)
    nz = ex.settled_noise(kl)
    assert nz["slope"] == pytest.approx(-3e-4, abs=1e-4)
    assert nz["sigma"] == pytest.approx(0.6, rel=0.05)
    assert nz["sigma_mean"] == pytest.approx(0.6 / math.sqrt(50), rel=0.3)
    assert nz["level_ci"][0] < nz["level"] < nz["level_ci"][1]
    with pytest.raises(ValueError, match="at least"):
        ex.settled_noise(kl[:50])


def test_design_amplitude_rule():
    assert ex.design_amplitude(0.13, -7.8) == pytest.approx(0.5)  # capped
    assert ex.design_amplitude(0.05, -7.8) == pytest.approx(30 * 0.05 / 7.8)
    assert ex.design_amplitude(0.0, -7.8) == 0.1
    with pytest.raises(ValueError):
        ex.design_amplitude(0.1, 0.0)


def test_plan_names_seeds_and_roles():
    settles, excites = idf.plan(betas=(2, 4, 8), main=4, other_betas_excited=True)
    assert [s["name"] for s in settles] == ["settle_b2", "settle_b4", "settle_b8"]
    assert [(e["name"], e["role"]) for e in excites] == [
        ("ol_b4_s1", "fit"), ("ol_b4_s2", "held_out"), ("cl_b4_s3", "held_out"), ("ol_b4_s4", "held_out"),
        ("relay_b4_s50", "relay"), ("ol_b2_s5", "held_out"), ("ol_b8_s6", "held_out")]
    assert len(idf.plan()[1]) == 5 and len(idf.plan(relay_steps=0)[1]) == 4
    with pytest.raises(ValueError, match="main"):
        idf.plan(betas=(2,), main=4)
    with pytest.raises(ValueError, match="lead-in"):
        idf.plan(fit_steps=150)


def test_experiment_end_to_end_tiny(tmp_path):
    """Settle, excite (open and closed loop) with tiny runs; export with provenance; runs are reused."""
    root, exp = str(tmp_path / "runs"), str(tmp_path / "export")
    kw = dict(betas=(4.0,), main=4.0, settle_steps=100, fit_steps=60, val_steps=40, closed_steps=40, lead=20, relay_steps=100,
              hold_min=3, hold_max=20)
    # another plant with one level and no prior: no slope, so the rule's upper bound, said aloud
    said = []
    other = idf.run_experiment(str(tmp_path / "other"), jobs=1, batch_size=2, progress=said.append,
                               plant=f"{os.path.dirname(__file__)}/tiny_plant.py:make", **kw)
    assert any("gives no slope" in s for s in said)
    assert other["plan"]["amplitude_rule"]["source"].startswith("one settled level")
    # klcontrol's own VAE with one level: its own shipped fit gives the slope
    res = idf.run_experiment(root, export=exp, jobs=1, batch_size=2, progress=lambda s: None, **kw)
    assert res["plan"]["amplitude_rule"]["source"].endswith("fit.json")
    names = sorted(os.listdir(exp))
    assert "experiment.json" in names and "ol_b4_s1.csv.gz" in names and "cl_b4_s3.config.json" in names
    with gzip.open(os.path.join(exp, "ol_b4_s1.csv.gz"), "rt") as fh:
        rows = fh.read().splitlines()
    assert len(rows) == 61 and rows[0].startswith("step,beta,kl")
    beta = np.array([float(r.split(",")[1]) for r in rows[1:]])
    cfg = json.load(open(os.path.join(exp, "ol_b4_s1.config.json")))
    assert np.all(beta[:20] == 4.0) and len(np.unique(beta)) == 3
    assert np.allclose(sorted(np.unique(beta[20:])), [4 * math.exp(-cfg["excitation"]["delta"]), 4 * math.exp(cfg["excitation"]["delta"])])
    assert cfg["settings"]["init_from"]["checkpoint"] == os.path.join("settle_b4", "checkpoints", "step_00000100.pt")
    assert cfg["provenance"]["git_commit"] is not None and cfg["settings"]["seed"] == 1
    cl = json.load(open(os.path.join(exp, "cl_b4_s3.config.json")))
    assert cl["excitation"]["kind"] == "closed_loop" and cl["excitation"]["hold"] == 10
    assert res["static_points"][0]["beta"] == 4.0
    mtime = os.path.getmtime(os.path.join(root, "ol_b4_s1", "trace.csv"))
    idf.run_experiment(root, jobs=1, batch_size=2, progress=lambda s: None, **kw)
    assert os.path.getmtime(os.path.join(root, "ol_b4_s1", "trace.csv")) == mtime


def _tree(d):
    """Every file under ``d`` with its size and modification time (to show a run was only read)."""
    return {os.path.relpath(os.path.join(r, f), d): (os.path.getsize(os.path.join(r, f)),
                                                     os.path.getmtime(os.path.join(r, f)))
            for r, _, fs in os.walk(d) for f in fs}


def test_experiment_from_the_users_settled_run(tmp_path):
    """--settled: the user's run stands for the settle run at main, is only read, and starts every other run."""
    from klcontrol import FixedBeta
    from klcontrol.vae_plant.training.trainer import train

    mine = str(tmp_path / "my_run")
    train(mine, preset="tiny", controller=FixedBeta(4.0), steps=100, batch_size=2, progress=False)
    before = _tree(mine)
    root = str(tmp_path / "runs")
    kw = dict(betas=(2.0, 4.0), main=4.0, settle_steps=100, fit_steps=50, val_steps=30, closed_steps=20, lead=10,
              relay_steps=0, hold_min=3, hold_max=10)
    res = idf.run_experiment(root, export=str(tmp_path / "export"), jobs=1, batch_size=2,
                             progress=lambda s: None, settled=mine, **kw)
    assert _tree(mine) == before  # read, never written
    assert sorted(os.listdir(root)) == ["cl_b4_s3", "ol_b4_s1", "ol_b4_s2", "ol_b4_s4", "settle_b2"]
    assert res["plan"]["settled_from"]["run"] == os.path.abspath(mine)
    assert res["plan"]["settled_from"]["checkpoint"] == "step_00000100.pt"
    assert [p["beta"] for p in res["static_points"]] == [2.0, 4.0]
    assert res["plan"]["amplitude_rule"]["source"] == "own settle runs"  # two levels: the user's and settle_b2
    for name in ("settle_b2", "ol_b4_s1"):
        cfg = json.load(open(os.path.join(root, name, "config.json")))
        assert cfg["settings"]["init_from"]["checkpoint"] == os.path.join(os.path.abspath(mine), "checkpoints",
                                                                         "step_00000100.pt"), name
    design = json.load(open(os.path.join(root, "ol_b4_s1", "excitation.json")))
    assert design["settled_from"]["run"] == os.path.abspath(mine)
    assert "settle_b4.csv.gz" in os.listdir(tmp_path / "export")  # the user's run exported under its role
    # a rerun from another checkpoint does not reuse runs started from this one
    other = str(tmp_path / "other_run")
    train(other, preset="tiny", controller=FixedBeta(4.0), steps=100, batch_size=2, seed=7, progress=False)
    with pytest.raises(ValueError, match="settled_from"):
        idf.run_experiment(root, jobs=1, batch_size=2, progress=lambda s: None, settled=other, **kw)
    # refused before any training: the wrong β, a run without a checkpoint, a run inside --out
    with pytest.raises(ValueError, match=r"--settled .*ran at β 4.*not at --main 2"):
        idf.run_experiment(str(tmp_path / "x"), jobs=1, batch_size=2, progress=lambda s: None, settled=mine,
                           **dict(kw, main=2.0))
    with pytest.raises(ValueError, match="no trace.csv"):
        idf.run_experiment(str(tmp_path / "x"), jobs=1, settled=str(tmp_path), progress=lambda s: None, **kw)
    with pytest.raises(ValueError, match="is inside --out"):
        idf.run_experiment(str(tmp_path), jobs=1, settled=mine, progress=lambda s: None, **kw)
    assert not os.path.exists(tmp_path / "x")
