"""``klcontrol stability``."""
import json

import pytest

from klcontrol.cli import EXIT_UNSTABLE, main


def test_json_contract(capsys):
    rc = main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2", "--delay", "1",
               "--window", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stable"] is True
    assert isinstance(out["spectral_radius"], float) and 0.99 < out["spectral_radius"] < 1
    assert out["gain_margin"] == pytest.approx(124.9, abs=0.05)


def test_text_interval_and_plot(tmp_path, capsys):
    png = tmp_path / "region.png"
    rc = main(["stability", "--kp", "2", "--ki", "1", "--a", "0.0004", "--gprime", "-3.2", "-1",
               "--window", "2", "--delay", "1", "--controller", "positional", "--plot", str(png)])
    assert rc == EXIT_UNSTABLE == 3  # the verdict is in the exit status too
    text = capsys.readouterr().out
    assert "UNSTABLE" in text and "gain factors" in text
    assert png.stat().st_size > 1000


def test_exit_status_is_the_verdict(capsys):
    stable = ["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2"]
    assert main(stable) == 0 and main(stable + ["--json"]) == 0
    unstable = ["stability", "--kp", "0.01", "--ki", "-0.005", "--a", "0.0004", "--gprime", "-3.2"]
    assert main(unstable) == EXIT_UNSTABLE
    capsys.readouterr()
    assert main(unstable + ["--json"]) == EXIT_UNSTABLE
    assert json.loads(capsys.readouterr().out)["stable"] is False


def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("klcontrol ")
    with pytest.raises(SystemExit):
        main(["stability", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 success" in text and "3 check, stability: not (robustly) stable" in text
    with pytest.raises(SystemExit) as e:
        main(["stability", "--kp", "x"])
    assert e.value.code == 2  # argparse usage errors keep their status


def test_bad_input_is_an_error_line(capsys):
    assert main(["stability", "--kp", "0.1", "--ki", "0.1", "--a", "-1", "--gprime", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--a" in err and ("positive, finite rate" in err or "must be ≥" in err), err
    # the paper's G typed as g′: refused with the fix; negative numbers in e-notation are values
    assert main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "3.2"]) == 1
    assert "--gprime -3.2" in capsys.readouterr().err  # the fix, spelled out
    assert main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2e0"]) == 0
    assert main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-32e-1"]) == 0
    capsys.readouterr()
    # 1/a typed: questioned, not refused
    main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "2500", "--gprime", "-3.2"])
    assert "did you mean --a 0.0004" in capsys.readouterr().err


def test_every_command_states_its_exit_status_and_no_none_default():
    from klcontrol.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "exit status:" in text, name
        assert "(default: None)" not in text, name


def test_progress_only_on_a_terminal_and_not_with_no_progress(tmp_path, monkeypatch, capsys):
    import argparse
    import sys

    from klcontrol.analysis.commands.stability import _progress
    from klcontrol.analysis.stability.codegen import coefficient_functions

    class Tty:
        def __init__(self):
            self.lines = []

        def isatty(self):
            return True

        def write(self, s):
            self.lines.append(s)

        def flush(self):
            pass

    args = argparse.Namespace(no_progress=False, json=False)
    assert _progress(args) is None  # pytest's stderr is not a terminal
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert _progress(argparse.Namespace(no_progress=True, json=False)) is None
    assert _progress(argparse.Namespace(no_progress=False, json=True)) is None
    report = _progress(args)
    # a window outside the shipped ones is derived: each stage is reported on the terminal
    monkeypatch.setenv("KLCONTROL_CACHE", str(tmp_path))
    coefficient_functions.cache_clear()
    try:
        coefficient_functions("incremental", 9, 1, progress=report)
    finally:
        coefficient_functions.cache_clear()
    text = "".join(tty.lines)
    assert text.count("deriving the stability code") >= 3 and "T=9, delay 1" in text
    monkeypatch.undo()
    assert main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_a_latin1_terminal_gets_ascii_names_and_the_exit_status(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONIOENCODING="latin-1")
    r = subprocess.run([sys.executable, "-m", "klcontrol", "stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004",
                        "--gprime", "-3.2"], env=env, capture_output=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"STABLE for g' = -3.2" in r.stdout
    r = subprocess.run([sys.executable, "-m", "klcontrol", "stability", "--kp", "1e4", "--ki", "5e3", "--a", "0.0004",
                        "--gprime", "-3.2"], env=env, capture_output=True, cwd=tmp_path)
    assert r.returncode == 3


def test_fit_refuses_to_write_over_an_input_before_any_work(tmp_path, capsys):
    from klcontrol import data

    src = str(data.path("cpu/fixed_beta4.csv.gz"))
    assert main(["fit", src, "--out", src]) == 1
    assert "is one of the inputs" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["fit", src, "--plot", str(tmp_path / "file" / "x.png")]) == 1  # a folder that cannot be made
    assert "checked before any work" in capsys.readouterr().err


def test_gprime_interval_one_spelling_and_the_old_one_still_works(capsys):
    base = ["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--window", "5", "--json"]
    assert main(base + ["--gprime", "-3.2", "-1"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(base + ["--gprime", "-3.2", "--gprime-max", "-1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == new
    assert "--gprime-max is deprecated; use --gprime LO HI" in captured.err and len(captured.err.splitlines()) == 1
    assert main(base + ["--gprime", "-3.2", "-1", "-0.5"]) == 1
    assert "one value or two" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--a", "1e154", "analysis cannot stay finite"),
    ("--a", "1e-310", "analysis cannot stay finite"),
    ("--a", "nan", "not a finite number"),
    ("--kp", "inf", "not a finite number"),
    ("--gprime", "0", "g′ < 0: pass −G"),
    ("--gprime", "3.2", "g′ < 0: pass −G"),
    ("--window", "1000000000", "at most 600"),
    ("--window", "0", "must be ≥ 1"),
])
def test_numbers_refused_at_parse_time_naming_the_flag(capsys, flag, value, message):
    args = {"--kp": "0.01", "--ki": "0.005", "--a": "0.0004", "--gprime": "-3.2"}
    args[flag] = value
    argv = ["stability"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klcontrol stability: error: {flag} {value}:") and message in err
    assert len(err.splitlines()) == 1
