"""The demo's quick path: every stage runs and writes its report, summary and figures."""
import json
import os

from klcontrol.cli import main
from klcontrol.commands import demo


def test_demo_writes_report_summary_and_figures(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "20", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert len(pngs) >= 6 and {"traversals.png", "fit_real_traces.png"} <= set(pngs)
    assert summary["vae_run"]["steps"] == 20
    assert summary["paper_gains"]["robust"]["stable"] is True
    assert summary["tuned"]["figures"]["robust"] is True
    # The fit recovers the plant model it was given (a = 1/2500) from noisy traces.
    assert abs(summary["fit"]["a"] - 1 / 2500) < 0.1 / 2500
    report = (out / "report.md").read_text()
    assert "Tuned gains" in report

    # The shipped real traces (this test runs from a clone) are fitted, checked and tuned on.
    real = summary["real_traces"]
    assert real["available"] is True and real["dir"] == os.path.join("data", "traces", "cpu")
    assert len(real["files"]) == 6 and "dynamicvae_C8.csv.gz" in real["files"]
    shipped = json.loads((demo.shipped_traces_dir() / "fit.json").read_text())
    # the same fit as the shipped fit.json (same data, model and optimiser; the bootstrap differs in size)
    assert abs(real["fit"]["a"] - shipped["a"]) < 1e-3 * shipped["a"]
    assert real["fit"]["gain_model"] == "exp" and real["fit"]["n_boot"] > 0
    assert real["fit"]["a_ci"][0] < real["fit"]["a"] < real["fit"]["a_ci"][1]
    assert len(real["paper_gains"]["per_a"]) == 3
    assert real["paper_gains"]["stable"] is True  # as README's `klcontrol check --fit data/traces/cpu/fit.json`
    assert real["tuned"]["figures"]["robust"] is True
    assert real["tuned"]["a"] == real["fit"]["a"]
    st = real["schedule_tuned"]
    assert st["figures"]["robust"] is True and st["figures"]["beta_jitter"] <= 0.2
    assert st["figures"]["tracking_rmse"] < st["references"]["paper"]["tracking_rmse"]
    assert "Real β-VAE training traces" in report and "fit_real_traces.png" in report

    # Without the shipped traces (a wheel install) the demo says so instead of failing; running again into the
    # same directory replaces the demo's own run.
    monkeypatch.setattr(demo, "shipped_traces_dir", lambda: None)
    assert main(["demo", "--out", str(out), "--steps", "20", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["real_traces"]["available"] is False
    assert "not found" in summary["real_traces"]["reason"]
    assert "Not fitted: the shipped real traces" in (out / "report.md").read_text()


def test_demo_rejects_a_traces_dir_without_traces(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--traces", str(tmp_path)]) == 1
    assert "no *.csv.gz" in capsys.readouterr().err
    assert not out.exists()
