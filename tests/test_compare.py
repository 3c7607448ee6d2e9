"""`klcontrol compare`: methods × seeds on a budget, the table, reuse of finished runs."""
import json
import math
import os
import re

import numpy as np
import pytest

from klcontrol import StepRamp
from klcontrol.cli import main
from klcontrol.vae_plant.experiments.compare import Method, aggregate, compare, parse_methods, tracking


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    return compare(out, ["fixed", "dynamicvae:kp=0.5,ki=0.01,label=fast"], budget="tiny", device="cpu",
                   progress=False)


def test_tiny_comparison_writes_every_run_the_table_and_the_figures(tiny):
    assert [(r["label"], r["seed"]) for r in tiny.rows] == [("fixed", 0), ("fixed", 1), ("fast", 0), ("fast", 1)]
    for name in ("compare.json", "table.md", "training.png", "tradeoff.png"):
        assert os.path.getsize(os.path.join(tiny.out, name)) > 500
    saved = json.load(open(os.path.join(tiny.out, "compare.json")))
    assert saved["settings"]["compress"] == pytest.approx(800_000 / 40)
    for r in tiny.rows:
        assert 0 <= r["rmig"] <= 1 and 0 <= r["mig"] <= 1 and 0 <= r["beta_vae_score"] <= 1
        assert set(r["rmig_per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
    fast = [r for r in tiny.rows if r["label"] == "fast"]
    entry = tiny.table["fast"]
    assert entry["rmig"][0] == pytest.approx(np.mean([r["rmig"] for r in fast]))
    assert entry["recon"][1] == pytest.approx(np.std([r["recon"] for r in fast], ddof=1))
    assert math.isnan(tiny.table["fixed"]["tracking_rmse"][0])  # no set point, no tracking figure
    md = tiny.markdown()
    assert "| β-VAE_H (β=4) |" in md and "| fast |" in md and "posX" in md


def test_runs_follow_the_compressed_schedule_and_the_overridden_gains(tiny):
    from klcontrol.vae_plant.training.trainer import load_run

    run = load_run(os.path.join(tiny.out, "runs", "fast", "seed0"))
    t = run.trace
    np.testing.assert_allclose(t["setpoint"], StepRamp.dynamicvae_dsprites()(t["step"] * 20_000.0))
    assert "kp=[0.5]" in run.config["settings"]["controller"] or "kp=0.5" in run.config["settings"]["controller"]


def test_finished_runs_are_reused(tiny):
    trace = os.path.join(tiny.out, "runs", "fixed", "seed0", "trace.csv")
    before = os.stat(trace).st_mtime_ns
    again = compare(tiny.out, ["fixed"], budget="tiny", seeds=1, device="cpu", progress=False)
    assert os.stat(trace).st_mtime_ns == before
    assert again.rows[0]["rmig"] == tiny.rows[0]["rmig"]


def test_method_specs():
    m = Method.parse("dynamicvae:kp=2.5,ki=1e-3,label=tuned")
    assert (m.preset, m.overrides, m.label, m.display) == ("dynamicvae", {"kp": 2.5, "ki": 1e-3}, "tuned", "tuned")
    assert Method.parse("capacity").display == "β-VAE_B (γ=1000)"
    ctrl = m.controller(compress=10.0)
    assert ctrl.gains["kp"] == 2.5 and ctrl.setpoint(600) == pytest.approx(StepRamp.dynamicvae_dsprites()(6000))
    for spec, msg in [("nope", "unknown method"), ("dynamicvae:kp", "malformed"), ("dynamicvae:kp=x", "not a number"),
                      ("fixed:kp=1", "has no parameter kp"), ("fixed:label=a/b", "cannot name a directory")]:
        with pytest.raises(ValueError, match=msg):
            Method.parse(spec)
    with pytest.raises(ValueError, match="share the label"):
        parse_methods(["fixed", "fixed"])
    with pytest.raises(ValueError, match="no methods"):
        parse_methods([])


def test_tracking_figures_of_a_known_trace():
    t = np.arange(400)
    c = np.full(400, 5.0)
    kl = np.where(t < 100, 5.0 * t / 100, 5.0) + np.where((t >= 200) & (t < 260), 1.0, 0.0)
    beta = np.where(t % 2 == 0, 1.0, 1.5)
    f = tracking({"step": t, "beta": beta, "kl": kl, "setpoint": c}, smooth=1)
    assert f["overshoot"] == pytest.approx(1.0)
    assert f["tracking_rmse"] == pytest.approx(np.sqrt(np.mean((kl - c) ** 2)))
    assert f["beta_jitter"] == pytest.approx(0.5, rel=1e-4) and f["final_beta"] == pytest.approx(1.25)
    smooth = tracking({"step": t, "beta": beta, "kl": kl, "setpoint": c}, smooth=21)
    assert smooth["overshoot"] == pytest.approx(1.0)  # a 60-step excess survives a 21-step average
    none = tracking({"step": t, "beta": beta, "kl": kl, "setpoint": np.full(400, np.nan)})
    assert math.isnan(none["tracking_rmse"]) and none["final_beta"] == pytest.approx(1.25)
    # GECO tracks the reconstruction loss: the same figures on that column, the KL ignored.
    geco = tracking({"step": t, "beta": beta, "kl": np.zeros(400), "recon": kl + 95, "setpoint": c + 95},
                    smooth=1, measured="recon")
    assert geco["overshoot"] == pytest.approx(1.0) and geco["tracking_rmse"] == pytest.approx(f["tracking_rmse"])


def test_aggregate_of_one_seed_has_zero_spread():
    row = {"label": "a", "display": "A", "seed": 0, "recon": 3.0, "kl": 1.0, "mig": 0.1, "mig_tcvae": 0.2, "rmig": 0.3,
           "beta_vae_score": 0.5, "tracking_rmse": 1.0, "overshoot": 0.0, "beta_jitter": 0.1, "final_beta": 2.0,
           "rmig_per_factor": {"posX": 0.4, "posY": 0.5, "shape": None, "scale": 0.1, "orientation": 0.0}}
    e = aggregate([row])["a"]
    assert e["rmig"] == (0.3, 0.0) and math.isnan(e["shape"][0]) and e["posY"] == (0.5, 0.0)


def test_cli_runs_jobs_in_processes_and_rejects_bad_budgets(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "--budget", "tiny", "--methods", "fixed", "capacity", "--seeds", "1",
                 "--jobs", "2", "--no-beta-vae", "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r["table"]) == ["fixed", "capacity"] and r["settings"]["jobs"] == 2
    assert r["table"]["capacity"]["beta_vae_score"][0] is None or math.isnan(r["table"]["capacity"]["beta_vae_score"][0])
    assert main(["compare", "--out", str(out), "--budget", "huge"]) == 1
    assert "unknown budget" in capsys.readouterr().err
    assert main(["compare", "--out", str(out), "--budget", "tiny", "--seeds", "0"]) == 1
    assert re.search(r"seeds( 0:)? must be (a positive integer|≥ 1)", capsys.readouterr().err)


def test_transcribed_paper_rows_average_to_their_rmig():
    from klcontrol.vae_plant.experiments.compare import PAPER_TABLES, paper_table_markdown

    for name, vals in PAPER_TABLES.items():
        assert np.mean(vals[:5]) == pytest.approx(vals[5], abs=6e-4), name  # the papers round to 4 digits
    assert paper_table_markdown().count("\n") == len(PAPER_TABLES) + 2


def test_a_label_reused_for_other_gains_is_refused(tiny):
    with pytest.raises(ValueError, match="holds a run of another experiment.*label="):
        compare(tiny.out, ["dynamicvae:kp=0.7,ki=0.01,label=fast"], budget="tiny", seeds=1, device="cpu",
                progress=False)


def test_ray_resources_request_a_gpu_per_run_on_cuda_only():
    from klcontrol.vae_plant.experiments.compare import ray_resources

    assert ray_resources("cuda") == {"cpus_per_run": 1, "gpus_per_run": 1.0}
    assert ray_resources("cpu", threads=2) == {"cpus_per_run": 2, "gpus_per_run": 0.0}
    assert ray_resources("cuda", 0.5)["gpus_per_run"] == 0.5


def test_missing_ray_is_one_clear_error_before_any_run(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "--budget", "tiny", "--methods", "fixed", "--executor", "ray",
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "klcontrol[ray]" in err and "Traceback" not in err
    assert not (out / "runs").exists()
    with pytest.raises(ValueError, match="need executor='ray'"):
        compare(out, ["fixed"], budget="tiny", device="cpu", address="auto")
    with pytest.raises(ValueError, match="unknown executor"):
        compare(out, ["fixed"], budget="tiny", device="cpu", executor="dask")


@pytest.fixture(scope="module")
def local_ray(ray_alone):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_results_and_reuses_finished_runs(tiny, local_ray, tmp_path):
    on_ray = compare(tmp_path / "ray", ["fixed", "dynamicvae:kp=0.5,ki=0.01,label=fast"], budget="tiny",
                     device="cpu", progress=False, executor="ray")
    assert on_ray.settings["executor"] == "ray"
    timing = {"run_dir", "train_seconds", "eval_seconds", "tracking_rmse", "overshoot"}  # NaN ≠ NaN for "fixed"
    for a, b in zip(tiny.rows, on_ray.rows, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
        assert a["tracking_rmse"] == b["tracking_rmse"] or math.isnan(a["tracking_rmse"])
    # The same directory again on Ray: every run is found finished, nothing is retrained.
    traces = [os.path.join(r["run_dir"], "trace.csv") for r in tiny.rows]
    before = [os.stat(t).st_mtime_ns for t in traces]
    again = compare(tiny.out, ["fixed", "dynamicvae:kp=0.5,ki=0.01,label=fast"], budget="tiny", device="cpu",
                    progress=False, executor="ray")
    assert [os.stat(t).st_mtime_ns for t in traces] == before
    assert [r["rmig"] for r in again.rows] == [r["rmig"] for r in tiny.rows]


def test_a_failing_ray_task_raises_the_runs_own_error(tiny, local_ray):
    with pytest.raises(ValueError, match="holds a run of another experiment"):
        compare(tiny.out, ["dynamicvae:kp=0.7,ki=0.01,label=fast"], budget="tiny", seeds=1, device="cpu",
                progress=False, executor="ray")


def test_cli_ray_executor_and_its_flags(tmp_path, capsys, local_ray):
    out = tmp_path / "c"
    assert main(["compare", "--out", str(out), "--budget", "tiny", "--methods", "fixed", "--seeds", "1",
                 "--no-beta-vae", "--device", "cpu", "--executor", "ray", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings"]["executor"] == "ray" and list(r["table"]) == ["fixed"]
    assert main(["compare", "--out", str(out), "--budget", "tiny", "--address", "auto"]) == 1
    assert "need executor='ray'" in capsys.readouterr().err


def test_a_partial_metrics_json_is_named_and_the_outputs_are_written_atomically(tiny, tmp_path, monkeypatch):
    import shutil

    import klcontrol.fileio as fileio

    out = tmp_path / "copy"
    shutil.copytree(tiny.out, out)
    metrics = out / "runs" / "fixed" / "seed0" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])  # as a crash of an older, non-atomic klcontrol left it
    with pytest.raises(ValueError, match=r"seed0/metrics.json: the cached metrics file is damaged or not JSON"):
        compare(out, ["fixed"], budget="tiny", seeds=1, device="cpu", progress=False)
    metrics.unlink()
    table = (out / "table.md").read_text()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)  # a full disk at the first output written
    with pytest.raises(OSError, match="No space left"):
        compare(out, ["fixed"], budget="tiny", seeds=1, device="cpu", progress=False)
    assert (out / "table.md").read_text() == table  # the old table is intact, no temporary left beside it
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")] and not metrics.exists()
