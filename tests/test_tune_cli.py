"""`klcontrol tune` from a fit file written by `klcontrol fit`, and from a and a g′ range."""
import json

from klcontrol import ExpGain, FirstOrderPlant
from klcontrol.cli import main


def test_tune_reads_the_fit_file_that_fit_writes(tmp_path, capsys, fit_file):
    fit_json = fit_file(FirstOrderPlant(1 / 500, ExpGain(26.0, 0.12)), (5.0, 15.0), 3000)
    png = tmp_path / "tune.png"
    assert main(["tune", "--fit", str(fit_json), "--window", "5", "--plot", str(png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    lo, hi = r["gprime_range"]
    assert lo < hi < 0 and r["figures"]["robust"]
    assert r["figures"]["settling_steps"] < r["references"]["paper"]["settling_steps"]
    assert png.stat().st_size > 1000


def test_tune_from_a_and_gprime_prints_the_table(capsys):
    assert main(["tune", "--a", "0.0004", "--gprime", "-3.2", "-0.5", "--window", "5"]) == 0
    out = capsys.readouterr().out
    assert "tuned" in out and "paper" in out


def test_tune_needs_a_plant(capsys):
    assert main(["tune", "--a", "0.0004"]) == 1
    assert "give --fit" in capsys.readouterr().err


def test_tune_rejects_nan_bounds(capsys):
    base = ["tune", "--a", "0.0004", "--gprime", "-3.2", "-0.5"]
    for extra, message in ((["--max-overshoot", "nan"], "--max-overshoot nan: not a finite number"),
                           (["--max-overshoot", "-0.1"], "--max-overshoot -0.1: must be ≥ 0")):
        assert main(base + extra) == 1
        assert message in capsys.readouterr().err
    import pytest

    from klcontrol.analysis.tuning.schedule import tune_schedule
    from klcontrol.setpoints import Constant

    for kw in ({"max_overshoot": float("nan")}, {"max_jitter": float("nan")}):
        with pytest.raises(ValueError, match="must be a number ≥ 0"):
            tune_schedule(FirstOrderPlant(1 / 500, ExpGain(26.0, 0.12)), Constant(10.0), 100, gprime=(-3.0, -1.0), **kw)


def test_a_design_that_never_settles_is_refused_with_the_fix(capsys):
    from klcontrol.cli import main

    # a g′ range reaching toward 0, as a fit whose β range runs up to 150 gives
    assert main(["tune", "--a", "0.0004", "--gprime", "-3.2", "-0.00001", "--window", "5"]) == 1
    err = capsys.readouterr().err
    assert "no design settles within a run" in err and "--beta-range" in err


def test_one_gprime_and_your_gains_labelled_yours(capsys):
    assert main(["tune", "--a", "0.0004", "--gprime", "-3.2", "--window", "5"]) == 0  # the one-value form
    assert "paper" in capsys.readouterr().out
    assert main(["tune", "--a", "0.0004", "--gprime", "-3.2", "-0.5", "--window", "5", "--compare", "0.02", "0.005",
                 "--json"]) == 0
    refs = json.loads(capsys.readouterr().out)["references"]
    assert set(refs) == {"yours"}
    assert main(["tune", "--a", "0.0004", "--gprime", "-3.2", "-0.5", "--window", "5", "--compare", "0.02", "0.005"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["tuned", "yours"]


def test_positive_gprime_refused_with_the_hint(capsys):
    assert main(["tune", "--a", "0.0004", "--gprime", "3.2"]) == 1
    err = capsys.readouterr().err
    assert "g′ < 0: pass −G" in err and "--gprime -3.2" in err
