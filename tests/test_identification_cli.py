"""``klcontrol fit`` and ``klcontrol check`` end to end on files the test writes."""
import json

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, FixedBeta, simulate
from klcontrol.cli import EXIT_UNIDENTIFIED, EXIT_UNSTABLE, main

PLANT = FirstOrderPlant(1 / 400, ExpGain(3.2 / 0.121, 0.121))


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out = []
    for i, b in enumerate((2.0, 10.0)):
        p = d / f"run{i}.csv"
        simulate(FixedBeta(b), PLANT, 2000, noise_rel=0.05, seed=i).to_csv(p)
        out.append(str(p))
    return out


@pytest.fixture(scope="module")
def fitted(csvs, tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    rc = main(["fit", *csvs, "--n-boot", "20", "--out", str(d / "fit.json"), "--plot", str(d / "fit.png")])
    assert rc == 0
    return d


def test_fit_writes_json_and_png_and_prints(fitted, csvs, capsys):
    assert (fitted / "fit.png").stat().st_size > 10_000
    d = json.loads((fitted / "fit.json").read_text())
    assert d["kind"] == "first_order" and abs(d["a"] / PLANT.a - 1) < 0.1
    assert main(["fit", *csvs, "--n-boot", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert abs(s["a"] / PLANT.a - 1) < 0.1 and abs(s["k"] / 0.121 - 1) < 0.05 and s["beta_range"] == [2.0, 10.0]
    np.testing.assert_allclose(s["gprime_range"], PLANT.g.derivative(np.array([2.0, 10.0])), rtol=0.05)


def test_check_stable_and_unstable(fitted, capsys):
    f = str(fitted / "fit.json")
    assert main(["check", "--fit", f, "--kp", "0.01", "--ki", "0.005", "--window", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stable"] is True and out["widened_to_ci"] is True and len(out["a_checked"]) == 3
    assert out["worst_spectral_radius"] < 1
    # Ki < 0: Algorithm 1's sign taken literally, positive feedback
    assert main(["check", "--fit", f, "--kp", "0.01", "--ki", "-0.005", "--json"]) == EXIT_UNSTABLE
    out = json.loads(capsys.readouterr().out)
    assert out["stable"] is False and out["worst_spectral_radius"] > 1
    assert main(["check", "--fit", f, "--kp", "0.01", "--ki", "0.005", "--point"]) == 0
    assert "STABLE" in capsys.readouterr().out


def test_check_plain_plant_needs_a_beta_range(tmp_path, capsys):
    p = tmp_path / "plant.json"
    p.write_text(json.dumps(PLANT.to_dict()))
    assert main(["check", "--fit", str(p), "--kp", "0.01", "--ki", "0.005"]) == 1
    assert "give --beta-range" in capsys.readouterr().err
    assert main(["check", "--fit", str(p), "--kp", "0.01", "--ki", "0.005", "--beta-range", "2", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["gprime_range"], PLANT.g.derivative(np.array([2.0, 10.0])), rtol=1e-9)


def test_cli_errors(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.csv")]) == 1
    assert "trace file not found" in capsys.readouterr().err
    assert main(["check", "--fit", str(tmp_path / "none.json"), "--kp", "1", "--ki", "1"]) == 1
    assert "fit file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["check", "--fit", str(tmp_path / "bad.json"), "--kp", "1", "--ki", "1"]) == 1
    assert "not JSON" in capsys.readouterr().err
