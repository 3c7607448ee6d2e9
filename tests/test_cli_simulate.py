"""``klcontrol simulate``: CSV trace, --json figures, PNG, bad arguments."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, simulate
from klcontrol.cli import main


def test_module_entry_point_writes_csv_and_json(tmp_path):
    out = tmp_path / "trace.csv"
    r = subprocess.run(
        [sys.executable, "-m", "klcontrol", "simulate", "--steps", "3000", "--setpoint", "20", "--beta0", "100",
         "--window", "5", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)
    assert {"final_kl", "overshoot", "settling_step"} <= set(figures)
    with open(out) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "beta", "kl", "setpoint"] and len(rows) == 3001
    # Same run through the API.
    tr = simulate(IncrementalPI(0.01, 0.005, 20.0, beta0=100.0, filter=5),
                  FirstOrderPlant(1 / 5000, ExpGain(26.38, 0.0476)), 3000)
    data = np.array(rows[1:], dtype=float)
    np.testing.assert_array_equal(data[:, 1], tr.beta)
    np.testing.assert_array_equal(data[:, 2], tr.kl)
    assert figures["final_kl"] == pytest.approx(tr.kl[-1])


@pytest.mark.parametrize("controller", ["incremental", "incremental-official", "positional", "capacity", "fixed"])
def test_every_controller_and_schedule(tmp_path, capsys, controller):
    out = tmp_path / "t.csv"
    rc = main(["simulate", "--controller", controller, "--steps", "200", "--step-ramp", "0.5", "20", "0.15", "50",
               "10", "--delay", "1", "--a", "0.01", "--out", str(out), "--json"])
    assert rc == 0
    figs = json.loads(capsys.readouterr().out)
    assert figs["trace"] == str(out) and np.isfinite(figs["final_kl"])
    rows = out.read_text().splitlines()
    assert len(rows) == 201 and float(rows[-1].split(",")[3]) == pytest.approx(0.5 + 0.15 * 3)  # step 199: period 3, ramp done


def test_text_output_and_plot(tmp_path, capsys):
    png = tmp_path / "fig.png"
    rc = main(["simulate", "--steps", "500", "--ramp", "0", "10", "300", "--noise-rel", "0.05", "--out",
               str(tmp_path / "t.csv"), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "final KL" in text and "overshoot" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--window", "0"], "window"),
        (["--a", "-1"], "--a -1: must be ≥ 1e-12"),
        (["--k", "0"], "--k 0: must be > 0"),
        (["--steps", "0"], "steps"),
        (["--setpoint", "5", "--ramp", "0", "1", "10"], "only one"),
        (["--beta-min", "5", "--beta-max", "1"], "beta_min"),
        (["--kp", "nan"], "kp"),
        (["--noise-rel", "-1"], "--noise-rel -1: must be ≥ 0"),
        (["--noise-std", "nan"], "--noise-std nan: not a finite number"),
        (["--ramp", "0", "25", "inf"], "--ramp inf: not a finite number"),
        (["--ramp", "0", "25", "-1e30"], "--ramp -1e30: must be ≥ 0"),
        (["--steps", "1000000000"], "~32 GB of trace"),
        (["--window", "1000000"], "--window 1000000: at most 600"),
        (["--seed", "-1"], "--seed -1: must be ≥ 0"),
    ],
)
def test_bad_arguments_exit_1_with_message(tmp_path, capsys, args, message):
    rc = main(["simulate", "--steps", "100", "--out", str(tmp_path / "t.csv"), *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("klcontrol simulate: error:") and message in err
    assert not (tmp_path / "t.csv").exists()


def test_usage_errors_from_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--delay", "2"])
    assert exc.value.code == 2 and "delay" in capsys.readouterr().err


def test_progress_only_on_a_terminal_and_never_with_no_progress(monkeypatch):
    import argparse
    import sys

    from klcontrol.commands.common import show_progress

    args = argparse.Namespace(no_progress=False, json=False)
    monkeypatch.setattr(sys, "stderr", type("Pipe", (), {"isatty": lambda self: False})())
    assert show_progress(args) is False  # redirected stderr: no bar
    monkeypatch.setattr(sys, "stderr", type("Tty", (), {"isatty": lambda self: True})())
    assert show_progress(args) is True
    assert show_progress(argparse.Namespace(no_progress=True, json=False)) is False
    assert show_progress(argparse.Namespace(no_progress=False, json=True)) is False


def test_engine_option(tmp_path, capsys):
    pytest.importorskip("numba")
    rows = {}
    for engine in ("numpy", "compiled"):
        out = tmp_path / f"{engine}.csv"
        assert main(["simulate", "--steps", "500", "--setpoint", "20", "--beta0", "100", "--window", "5",
                     "--engine", engine, "--out", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["engine"] == engine
        rows[engine] = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows["compiled"], rows["numpy"], rtol=1e-12, atol=1e-12)


def test_engine_compiled_without_numba_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    from klcontrol import compiled

    monkeypatch.setattr(compiled, "available", lambda: False)
    assert main(["simulate", "--steps", "10", "--engine", "compiled", "--out", str(tmp_path / "c.csv")]) == 1
    err = capsys.readouterr().err
    assert "klcontrol[fast]" in err and "Traceback" not in err and not (tmp_path / "c.csv").exists()


def test_simulate_never_replaces_a_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    from klcontrol.cli import main

    monkeypatch.chdir(tmp_path)
    run_trace = tmp_path / "trace.csv"
    run_trace.write_text("step,beta,kl,recon,setpoint\n0,1.0,2.0,3.0,4.0\n")  # a training run's trace
    assert main(["simulate", "--steps", "50"]) == 1
    assert "never overwrites" in capsys.readouterr().err and run_trace.read_text().startswith("step,beta,kl,recon")
    assert main(["simulate", "--steps", "50", "--out", "sim.csv"]) == 0
    assert main(["simulate", "--steps", "60", "--out", "sim.csv"]) == 0  # its own output: replaced
    assert len((tmp_path / "sim.csv").read_text().splitlines()) == 61


def test_simulate_names_the_plant_and_the_old_spellings_still_work(tmp_path, capsys):
    out = str(tmp_path / "t.csv")
    assert main(["simulate", "--steps", "200", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "plant: first order, a = 0.0002" in text and "the DynamicVAE paper's MNIST plant" in text
    assert main(["simulate", "--steps", "200", "--g0", "20", "--noise-rel", "0.05", "--out", out, "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert new["plant"].startswith("first order") and "MNIST" not in new["plant"]
    assert main(["simulate", "--steps", "200", "--A", "20", "--noise", "0.05", "--out", out, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == new
    assert captured.err.splitlines() == ["klcontrol simulate: note: --A is deprecated; use --g0 (CHANGELOG.md)",
                                         "klcontrol simulate: note: --noise is deprecated; use --noise-rel (CHANGELOG.md)"]


def test_noise_std_is_in_nats(tmp_path, capsys):
    base = ["simulate", "--steps", "300", "--setpoint", "10", "--controller", "fixed", "--json", "--seed", "3"]
    rows = {}
    for flag in ("--noise-std", "--noise-rel"):
        out = tmp_path / f"{flag}.csv"
        assert main(base + [flag, "0.5", "--out", str(out)]) == 0
        capsys.readouterr()
        rows[flag] = np.loadtxt(out, delimiter=",", skiprows=1)
    clean = simulate(*_fixed_loop(), 300)
    assert np.std(rows["--noise-std"][:, 2] - clean.kl) == pytest.approx(0.5, rel=0.15)  # nats
    assert not np.allclose(rows["--noise-std"][:, 2], rows["--noise-rel"][:, 2])


def _fixed_loop():
    from klcontrol import FixedBeta

    return FixedBeta(4.0, 10.0, filter=5), FirstOrderPlant(1 / 5000, ExpGain(26.38, 0.0476))


@pytest.mark.parametrize("command", [["simulate"], ["judge", "x.csv"], ["verify-stability", "--settled", "r",
                                                                          "--beta-star", "4"]])
def test_a_second_setpoint_where_one_is_meant_says_what_to_do(command, capsys):
    from klcontrol.cli import main

    with pytest.raises(SystemExit) as e:
        main([*command, "--setpoint", "4", "8"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--setpoint: takes one value here" in err and "klcontrol check --setpoint C [C …]" in err
