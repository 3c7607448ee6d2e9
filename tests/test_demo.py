"""The demo end to end: every stage runs, and what its report and figures claim matches its numbers."""
import json
import os
import re

import numpy as np
import pytest

from klcontrol.cli import main
from klcontrol.vae_plant.experiments import demo


def _check_step_test_claims(summary, report):
    """The report's tuned-vs-paper sentence and table say what the simulated numbers say."""
    st = summary["step_test"]
    names = {"settling_step": "settling time", "overshoot": "overshoot", "tracking_rmse": "tracking RMSE",
             "beta_step_noise": "β noise"}
    sentence = demo.comparison_sentence(st)
    assert sentence in report
    better_part = sentence.split("; worse on")[0]
    for key, name in names.items():
        t, p = st["tuned"][key], st["paper"][key]
        assert t is not None and p is not None  # both settle within the simulated step
        # An independent reading of the numbers: lower is better for every figure.
        if t < p:
            assert name in better_part, (key, t, p)
        elif t > p:
            assert name not in better_part and name in sentence, (key, t, p)
    # The table rows carry the same numbers, and the step the text names is the one simulated and drawn.
    for who in ("tuned", "paper"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {who} (Kp="))
        assert f"{st[who]['overshoot']:.4f}" in row and f"{st[who]['tracking_rmse']:.4f}" in row
    assert st["final_setpoint"] == st["c1"]
    assert f"set-point step from {st['c0']:g} to {st['c1']:g} nats" in report
    # The paper's gains overshoot this step by far more than the 5 % the tuned design allows.
    assert st["tuned"]["overshoot"] < st["paper"]["overshoot"]


@pytest.mark.slow
def test_demo_report_matches_its_numbers(tmp_path):
    out = tmp_path / "demo"
    # 150 updates (the demo trains 800): enough for the first latents to pick up the sprite's position.
    assert main(["demo", "--out", str(out), "--steps", "150", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    pngs = {f for f in os.listdir(out) if f.endswith(".png")}
    assert {"vae_trace.png", "traversals.png", "fit.png", "fit_real_traces.png", "stability_region.png",
            "tuned_vs_paper.png"} <= pngs
    assert set(summary["figures"].values()) == pngs  # named relative to the report
    assert summary["vae_run"]["steps"] == 150 and summary["vae_run"]["lr"] == 1e-3

    # Traversals: rows ordered by KL, the most informative latent visibly changes the decoded image (its row's
    # two ends differ by more than 1 % of the pixel range on average), and the report's numbers are these.
    tv = summary["traversals"]
    assert tv["kl"] == sorted(tv["kl"], reverse=True) and sorted(tv["order"]) == list(range(10))
    assert tv["active"] == sum(k > tv["active_threshold_nats"] for k in tv["kl"]) >= 1
    assert tv["row_change"][0] > 0.01
    assert f"{tv['active']} of 10 latents carry more than" in report
    active = np.array(tv["kl"]) > tv["active_threshold_nats"]
    if 0 < active.sum() < 10:
        assert f"by {100 * np.mean(np.array(tv['row_change'])[active]):.1f} % of the pixel range" in report

    assert summary["paper_gains"]["robust"]["stable"] is True
    assert summary["tuned"]["figures"]["robust"] is True
    # The fit recovers the plant model it was given (a = 1/2500) from noisy traces.
    assert abs(summary["fit"]["a"] - 1 / 2500) < 0.1 / 2500
    _check_step_test_claims(summary, report)

    # The shipped real traces (this test runs from the repository root) are fitted, checked and tuned on.
    real = summary["real_traces"]
    assert real["available"] is True and real["dir"] == "klcontrol data cpu"
    assert len(real["files"]) == 6 and "dynamicvae_C8.csv.gz" in real["files"]
    shipped = json.loads((demo.default_traces_dir() / "fit.json").read_text())
    # the same fit as the shipped fit.json (same data, model and optimiser; the bootstrap differs in size)
    assert abs(real["fit"]["a"] - shipped["a"]) < 1e-3 * shipped["a"]
    assert real["fit"]["gain_model"] == "exp" and real["fit"]["n_boot"] > 0
    assert real["fit"]["a_ci"][0] < real["fit"]["a"] < real["fit"]["a_ci"][1]
    assert real["paper_gains"]["a_checked"] == [real["fit"]["a"], *real["fit"]["a_ci"]]
    assert real["paper_gains"]["stable"] is True  # as README's `klcontrol check --fit …/cpu/fit.json`
    assert real["tuned"]["figures"]["robust"] is True
    assert real["tuned"]["a"] == real["fit"]["a"]
    st = real["schedule_tuned"]
    assert st["figures"]["robust"] is True and st["figures"]["beta_jitter"] <= 0.2
    assert st["figures"]["tracking_rmse"] < st["references"]["paper"]["tracking_rmse"]
    assert "Recorded β-VAE training traces" in report and "fit_real_traces.png" in report
    assert str(tmp_path) not in report  # no absolute paths in the report


def test_demo_without_the_shipped_traces_says_so(tmp_path, monkeypatch):
    # An installation without the shipped traces (here: the data folder made empty): the demo says so instead of
    # failing, and running again into the same directory replaces the demo's own run.
    from klcontrol import data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "_root", lambda: tmp_path / "no_data")
    for _ in range(2):
        s = demo.run_demo("out", steps=3, n_boot=5, progress=False)
    assert s["real_traces"]["available"] is False
    assert "no recorded traces shipped" in s["real_traces"]["reason"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Not fitted: no recorded traces" in report
    assert not (tmp_path / "out" / "fit_real_traces.png").exists()
    assert s["figures"]["traversals"] == "traversals.png"
    _check_step_test_claims(s, report)


def test_demo_rejects_a_traces_dir_without_traces(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--traces", str(tmp_path)]) == 1
    assert "no *.csv.gz" in capsys.readouterr().err
    assert not out.exists()


def test_demo_controller_reaches_its_stop_within_the_run():
    # The compressed schedule reaches DEMO_STOP at 5/8 of the run and starts at the paper's 0.5 nats.
    for steps in (40, 800):
        c = demo.demo_controller(steps)
        sp = c.setpoint
        assert float(sp(0)) == 0.5
        assert float(sp(int(0.625 * steps) + 1)) == pytest.approx(demo.DEMO_STOP)
        assert float(sp(int(0.5 * steps))) < demo.DEMO_STOP
    assert float(np.asarray(c.beta)) == demo.DEMO_BETA0


def test_comparison_sentence_reads_the_numbers():
    st = {"tuned": {"settling_step": 10, "overshoot": 0.1, "tracking_rmse": 0.5, "beta_step_noise": 0.2},
          "paper": {"settling_step": 20, "overshoot": 0.1, "tracking_rmse": 0.3, "beta_step_noise": None}}
    st["comparison"] = demo._compare(st["tuned"], st["paper"])
    s = demo.comparison_sentence(st)
    assert s.startswith("The tuned gains are better than the paper's on settling time (10 vs 20 steps)")
    assert "β noise (0.2 vs never)" in s.split("; worse on")[0]
    assert re.search(r"worse on tracking RMSE \(0\.5 vs 0\.3 nats\)", s)
    assert "level on overshoot" in s
