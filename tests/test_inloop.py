"""The identification experiment played inside a user's own loop (analysis/identification/inloop.py)."""
import csv
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol.analysis.identification.experiment import beta_schedule
from klcontrol.analysis.identification.inloop import InLoopExperiment, plan_segments, split_log

HERE = os.path.dirname(__file__)
SMALL = dict(betas=(1.0, 2.0), main=2.0, settle_steps=300, fit_steps=200, val_steps=150, closed_steps=120, lead=20,
             hold_min=3, hold_max=30)


def _synthetic_kl(beta, state):
    """A first-order stand-in plant: the KL relaxes toward 10·exp(−β/3)."""
    state[0] += 0.05 * (10 * math.exp(-beta / 3) - state[0])
    return state[0]


def _play(exp, n, state=None):
    state = state if state is not None else [8.0]
    out = []
    kl = state[0]
    for _ in range(n):
        b = exp.step(kl)
        out.append(b)
        kl = _synthetic_kl(b, state)
    return out


def test_the_phases_play_identifys_design():
    exp = InLoopExperiment(**SMALL)
    seg = {s["name"]: s for s in exp.segments}
    betas = _play(exp, exp.total)
    assert [s["name"] for s in exp.segments] == ["settle_b1", "settle_b2", "ol_b2_s1", "ol_b2_s2", "cl_b2_s3", "ol_b2_s4"]
    assert all(b == 1.0 for b in betas[:300]) and all(b == 2.0 for b in betas[300:600])
    d = exp.plan()["derived"]
    assert 0.1 <= d["delta"] <= 0.5 and d["sensitivity"] < 0
    s = seg["ol_b2_s1"]
    _, ref = beta_schedule(2.0, d["delta"], 200 - 20, 20, 3, 30, 1)  # identify's run ol_b2_s1: seed 1
    np.testing.assert_array_equal(betas[s["start"]:s["stop"]], ref)
    c = seg["cl_b2_s3"]
    assert betas[c["start"]] == 2.0 and len(set(betas[c["start"]:c["stop"]])) > 10  # the PI moves β
    assert exp.phase == "done" and not exp.done  # one more update measures the last KL
    _play(exp, 1)
    assert exp.done and exp.updates == exp.total + 1


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=1, max_value=1040))
def test_state_dict_resumes_exactly(cut):
    a = InLoopExperiment(**SMALL)
    ref = _play(a, 1060)
    b = InLoopExperiment(**SMALL)
    state = [8.0]
    first = _play(b, cut, state)
    c = InLoopExperiment(**SMALL)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))  # survives JSON, as a checkpoint would
    rest = _play(c, 1060 - cut, state)
    assert first + rest == ref


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="betas"):
        InLoopExperiment(betas=(2.0,), main=4.0)
    with pytest.raises(ValueError, match="two settled levels"):
        InLoopExperiment(betas=(4.0,), main=4.0)
    with pytest.raises(ValueError, match="settle_steps"):
        plan_segments(settle_steps=10)
    exp = InLoopExperiment(**SMALL)
    with pytest.raises(ValueError, match="nan"):
        exp.step(float("nan"))
    assert exp.state_dict()["calls"] == 0


def test_fit_plan_on_a_real_torch_loop(tmp_path):
    """A protocol plant trained by the user's own loop with the in-loop experiment; its log, read with --kl-lag 1,
    is fitted by `klcontrol fit --plan` and judged by `klcontrol judge`."""
    import importlib.util

    from klcontrol.cli import main

    spec = importlib.util.spec_from_file_location("tiny_plant", os.path.join(HERE, "tiny_plant.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    plant = mod.make(seed=0)
    exp = InLoopExperiment(**SMALL)
    log = tmp_path / "log.csv"
    with open(log, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "beta", "kl"])
        for t in range(exp.updates):
            row = {}

            def beta_of(kl, row=row):
                row["kl"] = kl
                row["beta"] = exp.step(kl)  # the five-line loop: β of this update from this pass's KL
                return row["beta"]

            plant.step(beta_of)
            w.writerow([t, row["beta"], row["kl"]])  # the KL of step t's forward pass: --kl-lag 1
    exp.save(tmp_path / "plan.json")
    assert main(["fit", str(log), "--plan", str(tmp_path / "plan.json"), "--kl-lag", "1", "--out",
                 str(tmp_path / "fit.json"), "--no-progress"]) == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["kind"] == "hammerstein" and len(fit["g"]["betas"]) >= 2
    # the plan's phases are what split_log cut
    from klcontrol.analysis.identification.traces import aligned, read_trace

    parts = split_log(exp.plan(), aligned(read_trace(log, kl_lag=1)))
    assert sorted(parts) == sorted(s["name"] for s in exp.segments)
    # a wrong plan for this log is refused with the phase named
    bad = dict(exp.plan(), segments=[dict(s, beta=9.0) if s["kind"] == "settle" else s for s in exp.segments])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["fit", str(log), "--plan", str(tmp_path / "bad.json"), "--kl-lag", "1"]) == 1
    # the closed-loop phase judged as a log of its own
    cl = next(s for s in exp.segments if s["kind"] == "closed_loop")
    rows = list(csv.reader(open(log)))[1:]
    with open(tmp_path / "cl.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["step", "beta", "kl"], *([int(r[0]) - cl["start"], *r[1:]]
                                                             for r in rows[cl["start"]:cl["stop"]])])
    rc = main(["judge", str(tmp_path / "cl.csv"), "--beta-star", "2", "--skip", "20", "--kl-lag", "1",
               "--fit", f"identified={tmp_path / 'fit.json'}", "--kp", "0.01", "--ki", "0.005",
               "--setpoint", str(round(exp.plan()["derived"]["level"], 2))])
    assert rc in (0, 3)
