"""The demo end to end: every stage runs, and what its report and figures claim matches its numbers."""
import json
import os

import numpy as np
import pytest

from klcontrol.cli import main
from klcontrol.vae_plant.experiments import demo


def _check_story(summary, report):
    """The summary comes first, and each claim in it is the number the sections hold."""
    lines = summary["summary_lines"]
    assert len(lines) == 5
    head = report.split("## 1.")[0]
    assert head.startswith("# klcontrol demo report") and all(f"{i}. {t}" in head for i, t in enumerate(lines, 1))
    g, r = summary["gains"], summary["relay"]
    rec = g["recommended"]
    if r["available"]:
        # the recommendation is a third of the relay's critical gain on the integral ray, judged stable by it
        assert rec == {**rec, "kp": 0.0, "source": "relay"}
        assert rec["ki"] == pytest.approx(r["ki_critical"] / demo.RELAY_MARGIN)
        assert f"Ki {rec['ki']:.3g}" in lines[1] and f"{r['ki_critical']:.3g}" in lines[1]
        assert g["verdicts"]["recommended"]["relay"] == "stable"
        assert f"**Ki = {r['ki_critical']:.3g}**" in report
    else:
        assert rec["source"] == "paper" and "relay measured no boundary" in lines[1]
    # the gains the demo ran are the ones its first section and its table name
    ran = g["verdicts"]["ran"]
    assert (ran["kp"], ran["ki"]) == (summary["vae_run"]["controller"]["kp"], summary["vae_run"]["controller"]["ki"])
    own = summary["own_fit"]
    if own["available"]:
        assert ("NOT identifiable" in lines[2]) == (not own["identifiable"])
        for p in own["fit_percent"]:
            assert f"{p:.1f}" in report
    # section 5: each gain's first-order and identified verdicts in the summary are the table's
    for name, row in summary["identified"].get("verdicts", {}).items():
        assert f"identified {'stable' if row['stable'] else 'UNSTABLE'}" in lines[3].split(name)[1].split(";")[0]


@pytest.mark.slow
def test_demo_report_matches_its_numbers(tmp_path):
    out = tmp_path / "demo"
    # 150 updates (the demo trains 800): enough for the first latents to pick up the sprite's position.
    assert main(["demo", "--out", str(out), "--steps", "150", "--relay-steps", "200", "--n-boot", "10",
                 "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    pngs = {f for f in os.listdir(out) if f.endswith(".png")}
    assert {"vae_trace.png", "traversals.png", "relay.png", "fit_own.png", "fit_real_traces.png"} <= pngs
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

    _check_story(summary, report)
    assert summary["relay"]["available"] is True and 5 < summary["relay"]["period"] < 60
    assert (out / "relay_run" / "trace.csv").is_file()

    # The shipped real traces (this test runs from the repository root) are fitted, checked and tuned on.
    real = summary["real_traces"]
    assert real["available"] is True and real["dir"] == "klcontrol data cpu"
    assert len(real["files"]) == 6 and "dynamicvae_C8.csv.gz" in real["files"]
    shipped = json.loads((demo.default_traces_dir() / "fit.json").read_text())
    # the same fit as the shipped fit.json (same data, model and optimiser; the bootstrap differs in size)
    assert abs(real["fit"]["a"] - shipped["a"]) < 1e-3 * shipped["a"]
    assert real["fit"]["gain_model"] == "exp" and real["fit"]["n_boot"] > 0 and "whole-run design" in lines_5(report)
    assert real["fit"]["a_ci"][0] < real["fit"]["a"] < real["fit"]["a_ci"][1]
    assert real["paper_gains"]["a_checked"] == [real["fit"]["a"], *real["fit"]["a_ci"]]
    assert real["paper_gains"]["stable"] is True  # as README's `klcontrol check --fit …/cpu/fit.json`
    assert real["tuned"]["figures"]["robust"] is True
    assert real["tuned"]["a"] == real["fit"]["a"]
    st = real["schedule_tuned"]
    assert st["figures"]["robust"] is True and st["figures"]["beta_jitter"] <= 0.2
    assert st["figures"]["tracking_rmse"] < st["references"]["paper"]["tracking_rmse"]
    assert "first-order fit of the recorded traces" in report and "fit_real_traces.png" in report
    assert str(tmp_path) not in report  # no absolute paths in the report


def test_demo_without_the_shipped_traces_says_so(tmp_path, monkeypatch):
    # An installation without the shipped traces (here: the data folder made empty): the demo says so instead of
    # failing, and running again into the same directory replaces the demo's own run.
    from klcontrol import data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "_root", lambda: tmp_path / "no_data")
    for _ in range(2):
        s = demo.run_demo("out", steps=3, n_boot=5, progress=False, relay_steps=0)
    assert s["real_traces"]["available"] is False
    assert "no recorded traces shipped" in s["real_traces"]["reason"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Not fitted: no recorded traces" in report
    assert not (tmp_path / "out" / "fit_real_traces.png").exists()
    assert s["figures"]["traversals"] == "traversals.png"
    assert "relay.png" not in os.listdir(tmp_path / "out")
    _check_story(s, report)


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


def lines_5(report):
    return report.split("## 5.")[1]


def test_demo_keeps_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.md").write_text("my notes\n")
    assert main(["demo", "--out", str(out), "--steps", "3", "--relay-steps", "0"]) == 1
    err = capsys.readouterr().err
    assert "report.md" in err and "not written by klcontrol demo" in err and "--out" in err
    assert (out / "report.md").read_text() == "my notes\n" and sorted(os.listdir(out)) == ["report.md"]


def test_demo_relay_steps_bounds(capsys):
    with pytest.raises(ValueError, match="--relay-steps must be 0 or ≥ 100"):
        demo.run_demo("never", steps=3, relay_steps=50, progress=False)
    assert not os.path.exists("never")


def test_default_threads_is_one_on_two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert demo.default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert demo.default_threads() == 4
