"""Verdicts on saved fits: the first-order check covers a's interval and the g′ band; file errors name the file."""
import json

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant
from klcontrol.analysis.identification.fits import load_fit
from klcontrol.analysis.stability import robust_stability
from klcontrol.analysis.verdicts.fits import check_first_order, check_fit_file, format_verdict

PLANT = FirstOrderPlant(1 / 2500, ExpGain(26.45, 0.121))


def test_plain_plant_verdict_equals_robust_stability(tmp_path):
    p = tmp_path / "plant.json"
    p.write_text(json.dumps(PLANT.to_dict()))
    assert type(load_fit(p)) is FirstOrderPlant  # a plain plant, no fit behind it
    out = check_fit_file(p, 0.01, 0.005, window=5, beta_range=(2.0, 10.0))
    g = PLANT.g.derivative(np.array([2.0, 10.0]))
    ref = robust_stability(0.01, 0.005, 1 / 2500, g.min(), g.max(), window=5)
    assert out["stable"] == ref.stable and out["worst_spectral_radius"] == pytest.approx(ref.worst_spectral_radius)
    assert "STABLE" in format_verdict(out)
    # Gains far beyond the loop-gain bound ((Kp + 2Ki)·a·|g′| < 4(2 + a) at T = 1): the same call must say no.
    bad = check_first_order(PLANT, 1e4, 1e4, beta_range=(2.0, 10.0))
    assert not bad["stable"] and format_verdict(bad).startswith("NOT robustly stable")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_fit(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        load_fit(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="bin.json"):
        load_fit(binary)
    with pytest.raises(ValueError, match="β range"):
        check_first_order(PLANT, 0.01, 0.005)


def test_stability_verdict_and_its_text():
    from klcontrol.analysis.verdicts.fits import format_stability, stability_verdict

    ok = stability_verdict(0.01, 0.005, 0.0004, -3.2, -1.0, window=5)
    assert ok["stable"] and ok["interval_given"] and ok["gprime_interval"] == [-3.2, -1.0]
    assert format_stability(ok).startswith("STABLE for every g′ in [-3.2, -1]")
    bad = stability_verdict(1e4, 5e3, 0.0004, -3.2)
    assert not bad["stable"] and bad["spectral_radius"] > 1
    assert format_stability(bad).startswith("UNSTABLE for g′ = -3.2")
    with pytest.raises(ValueError, match="--a must be a positive"):
        stability_verdict(0.01, 0.005, 0.0, -3.2)


def test_gains_region_figure_writes_a_png(tmp_path):
    from klcontrol.analysis.stability.plots import gains_region_figure

    out = tmp_path / "r.png"
    gains_region_figure(0.01, 0.005, 0.0004, -3.2, window=5, path=str(out))
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="nonzero"):
        gains_region_figure(0.01, 0.005, 0.0004, 0.0)
