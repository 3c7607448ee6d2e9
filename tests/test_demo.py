"""The demo's quick path: every stage runs and writes its report, summary and figures."""
import json
import os

from klcontrol.cli import main


def test_demo_writes_report_summary_and_figures(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "20", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert len(pngs) >= 5 and "traversals.png" in pngs
    assert summary["vae_run"]["steps"] == 20
    assert summary["paper_gains"]["robust"]["stable"] is True
    assert summary["tuned"]["figures"]["robust"] is True
    # The fit recovers the plant model it was given (a = 1/2500) from noisy traces.
    assert abs(summary["fit"]["a"] - 1 / 2500) < 0.1 / 2500
    assert "Tuned gains" in (out / "report.md").read_text()
    # Running again into the same directory replaces the demo's own run instead of failing.
    assert main(["demo", "--out", str(out), "--steps", "20", "--json"]) == 0
