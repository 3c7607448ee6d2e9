"""``klcontrol stability``."""
import json

import pytest

from klcontrol.cli import main


def test_json_contract(capsys):
    rc = main(["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2", "--delay", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stable"] is True
    assert isinstance(out["spectral_radius"], float) and 0.99 < out["spectral_radius"] < 1
    assert out["gain_margin"] == pytest.approx(124.9, abs=0.05)


def test_text_interval_and_plot(tmp_path, capsys):
    png = tmp_path / "region.png"
    rc = main(["stability", "--kp", "2", "--ki", "1", "--a", "0.0004", "--gprime", "-3.2", "--gprime-max", "-1",
               "--window", "2", "--delay", "1", "--controller", "positional", "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "UNSTABLE" in text and "gain factors" in text
    assert png.stat().st_size > 1000


def test_bad_input_is_an_error_line(capsys):
    assert main(["stability", "--kp", "0.1", "--ki", "0.1", "--a", "-1", "--gprime", "-1"]) == 1
    assert "a must be > 0" in capsys.readouterr().err
