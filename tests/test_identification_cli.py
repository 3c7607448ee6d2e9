"""``klcontrol fit`` and ``klcontrol check`` end to end on files the test writes."""
import json

import numpy as np
import pytest

from klcontrol import ExpGain, FirstOrderPlant, FixedBeta, simulate
from klcontrol.cli import EXIT_UNSTABLE, main
from klcontrol.plant import gain_from_dict, register_plant

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


@register_plant
class TwoPoleFit:
    """A fit kind other than first order, following the check protocol (built and registered here, so load_fit
    reads it as it reads the toolkit's own kinds).

    ``KL − y* = g′(β*)·G(q)(β − β*)`` with ``G`` two real poles, unit DC gain, plus perturbed bootstrap draws.
    """

    kind = "two_pole_test"

    def __init__(self, poles, g, beta_range, draws=()):
        self.poles, self.g, self.beta_range, self.draws = tuple(poles), g, tuple(beta_range), list(draws)

    @staticmethod
    def _matrices(poles, gp):
        p1, p2 = poles
        A = np.array([[p1 + p2, -p1 * p2], [1.0, 0.0]])
        B = np.array([[1.0], [0.0]])
        C = np.array([[(1 - p1) * (1 - p2), 0.0]])  # G(z) = (1−p1)(1−p2)·z⁻¹ … unit DC gain, one-step lag
        return A, B * gp, C, np.zeros((1, 1))

    def linearize(self, setpoint):
        """Small-signal matrices at the set point."""
        return self._matrices(self.poles, float(self.g.derivative(self.g.inverse(setpoint))))

    def linearize_draws(self, setpoint):
        """The same for each bootstrap draw of the poles."""
        gp = float(self.g.derivative(self.g.inverse(setpoint)))
        return [self._matrices(p, gp) for p in self.draws]

    def to_dict(self):
        """JSON-able description."""
        return {"kind": self.kind, "poles": list(self.poles), "g": self.g.to_dict(),
                "beta_range": list(self.beta_range), "draws": [list(d) for d in self.draws]}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict`."""
        return cls(d["poles"], gain_from_dict(d["g"]), d["beta_range"], [tuple(p) for p in d["draws"]])


@pytest.fixture
def two_pole_fit(tmp_path):
    fit = TwoPoleFit((0.9, 0.5), ExpGain(30.0, 0.1), (2.0, 10.0), draws=[(0.92, 0.5), (0.88, 0.55), (0.95, 0.4)])
    p = tmp_path / "two_pole.json"
    p.write_text(json.dumps(fit.to_dict()))
    return p, fit


def test_check_any_fit_kind_through_its_linearisations(two_pole_fit, capsys):
    from klcontrol.analysis.stability import spectral_radius

    path, fit = two_pole_fit
    assert main(["check", "--fit", str(path), "--kp", "0.05", "--ki", "0.02", "--window", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fit_kind"] == "two_pole_test" and out["draws_included"] is True
    assert len(out["setpoints"]) == 9 and out["n_plants"] == 9 * 4
    np.testing.assert_allclose([min(out["setpoints"]), max(out["setpoints"])], [fit.g(10.0), fit.g(2.0)])
    rhos = [spectral_radius(0.05, 0.02, plant=m, window=2)
            for c in out["setpoints"] for m in [fit.linearize(c)] + fit.linearize_draws(c)]
    assert out["worst_spectral_radius"] == pytest.approx(max(rhos), abs=1e-12)
    assert out["stable"] is (max(rhos) < 1) is True and out["gain_margin"] > 1
    # Large gains: some linearisation goes unstable; explicit set points; no draws with --point.
    assert main(["check", "--fit", str(path), "--kp", "2", "--ki", "1.5", "--setpoint", "5", "20", "--point",
                 "--json"]) == EXIT_UNSTABLE
    out = json.loads(capsys.readouterr().out)
    assert out["setpoints"] == [5.0, 20.0] and out["n_plants"] == 2 and out["draws_included"] is False
    assert out["stable"] is False and out["worst_spectral_radius"] > 1
    assert main(["check", "--fit", str(path), "--kp", "0.05", "--ki", "0.02"]) == 0
    text = capsys.readouterr().out
    assert "STABLE" in text and "two_pole_test" in text and "36 linearisations" in text


def test_check_setpoint_on_a_first_order_fit_and_unknown_kinds(fitted, tmp_path, capsys):
    """--setpoint on a first-order fit checks the β range g⁻¹ maps the set points to (one β for one set point)."""
    from klcontrol.analysis.identification.fits import load_fit

    fit = load_fit(fitted / "fit.json")
    c = float(fit.g((fit.beta_range[0] + fit.beta_range[1]) / 2))
    assert main(["check", "--fit", str(fitted / "fit.json"), "--kp", "0.01", "--ki", "0.005", "--setpoint", str(c),
                 "--json", "--point"]) == 0
    out = json.loads(capsys.readouterr().out)
    lo, hi = out["beta_range"]
    assert lo == pytest.approx(hi) and float(fit.g(lo)) == pytest.approx(c, rel=1e-9)
    assert out["gprime_range"][0] == pytest.approx(float(fit.g.derivative(lo)), rel=1e-6)
    assert main(["check", "--fit", str(fitted / "fit.json"), "--kp", "0.01", "--ki", "0.005", "--setpoint", "1e6"]) == 1
    assert "never reaches" in capsys.readouterr().err
    assert main(["check", "--fit", str(fitted / "fit.json"), "--kp", "0.01", "--ki", "0.005", "--setpoint", str(c),
                 "--beta-range", "1", "2"]) == 1
    assert "not both" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"kind": "mystery"}))
    assert main(["check", "--fit", str(tmp_path / "other.json"), "--kp", "1", "--ki", "1"]) == 1
    assert "kind 'mystery'" in capsys.readouterr().err


def test_fit_hammerstein_and_verify_stability_bad_input(capsys):
    """One-line errors, exit 1, no traceback."""

    from klcontrol import data
    from klcontrol.cli import main

    d = str(data.path("identify"))
    assert main(["fit", f"{d}/ol_b4_s1.csv.gz", "--model", "hammerstein"]) == 1
    assert "--static" in capsys.readouterr().err
    assert main(["fit", f"{d}/ol_b4_s1.csv.gz", "--model", "hammerstein", "--static", f"{d}/settle_b4.csv.gz",
                 f"{d}/settle_b2.csv.gz", "--summary", "x.json"]) == 1
    assert "--summary needs" in capsys.readouterr().err
    assert main(["verify-stability", "--settled", "nowhere", "--beta-star", "4", "--fit", "x"]) == 1
    assert "fit file not found: x" in capsys.readouterr().err  # --fit takes [NAME=]JSON: x is the file
    assert main(["verify-stability", "--settled", "nowhere", "--beta-star", "4",
                 "--fit", f"a={d}/fit.json"]) == 1
    assert "--ray or --gain" in capsys.readouterr().err


def test_fit_hammerstein_cli_reproduces_the_shipped_validation(tmp_path, capsys):
    """The README's identification command (klcontrol.analysis.identification.files) gives the shipped held-out figures."""
    import json
    from pathlib import Path

    from klcontrol import data
    from klcontrol.cli import main

    d, cpu = data.path("identify"), data.path("cpu")
    # The shipped summary was recorded with the first selection rule (it chose OE(4, 3)); today's rule may choose
    # another ringing candidate, so the recorded figures are checked on the candidate of the shipped fit's orders.
    report = tmp_path / "report.json"
    summary = tmp_path / "summary.json"
    assert main(["fit", str(d / "ol_b4_s1.csv.gz"), "--model", "hammerstein", "--static",
                 str(d / "settle_b2.csv.gz"), str(d / "settle_b4.csv.gz"),
                 *(str(cpu / f"fixed_beta{b}.csv.gz") for b in (1, 8, 16)),
                 "--validate", *(str(d / n) for n in ("ol_b4_s2.csv.gz", "cl_b4_s3.csv.gz", "ol_b4_s4.csv.gz")),
                 "--compare-fit", str(cpu / "fit.json"), "--out", str(tmp_path / "fit.json"),
                 "--report", str(report), "--summary", str(summary), "--no-progress"]) == 0
    assert "← chosen" in capsys.readouterr().out
    orders = json.loads((d / "fit.json").read_text())["orders"]
    cand = [c for c in json.loads(report.read_text())["candidates"] if c["orders"] == orders]
    assert len(cand) == 1 and cand[0]["ring_period"] is not None
    shipped = json.loads((Path(__file__).resolve().parents[1] / "docs/results/plant_validation/summary.json").read_text())["held_out"]
    for g, s in zip(cand[0]["held_out"], shipped, strict=True):
        assert abs(g["fit_percent"] - s["fit_percent"]) < 1e-6
    for g, s in zip(json.loads(summary.read_text())["held_out"], shipped, strict=True):
        assert abs(g["first_order_fit_percent"] - s["first_order_fit_percent"]) < 1e-6


def _lagged_copy(src, dst, rows):
    """The first ``rows`` rows of a trainer trace, with the KL logged one row late (row s holds y(s−1))."""
    import csv
    import gzip

    with gzip.open(src, "rt", newline="") as fh:
        r = list(csv.reader(fh))
    head, body = r[0][:3], [x[:3] for x in r[1:rows + 1]]
    lag = [[b[0], b[1], (body[i - 1] if i else body[0])[2]] for i, b in enumerate(body)]
    for path, data in ((dst / "aligned.csv", body[:-1]), (dst / "lagged.csv", lag)):
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows([head, *data])
    return dst / "aligned.csv", dst / "lagged.csv"


def test_kl_lag_is_honoured_by_the_hammerstein_fit_and_validate(tmp_path):
    """A log whose KL column is one row late, read with --kl-lag 1, fits exactly as the aligned log (and not
    as the same log read without it); --validate realigns too."""
    import json

    from klcontrol import data
    from klcontrol.cli import main

    d = data.path("identify")
    aligned, lagged = _lagged_copy(d / "ol_b4_s1.csv.gz", tmp_path, 700)
    static = ["--static", str(d / "settle_b2.csv.gz"), str(d / "settle_b4.csv.gz")]
    runs = {}
    for name, path, lag in (("aligned", aligned, "0"), ("lagged", lagged, "1"), ("ignored", lagged, "0")):
        out = tmp_path / f"{name}.json"
        rep = tmp_path / f"{name}_report.json"
        assert main(["fit", str(path), "--model", "hammerstein", *static, "--kl-lag", lag, "--out", str(out),
                     "--validate", str(path), "--report", str(rep), "--no-progress"]) == 0
        runs[name] = (json.loads(out.read_text()), json.loads(rep.read_text()))
    def strip(fit):  # the file names differ, nothing else may
        return dict(fit, info={k: v for k, v in fit["info"].items() if k != "traces"})

    assert strip(runs["aligned"][0]) == strip(runs["lagged"][0])
    assert strip(runs["aligned"][0])["params"] != strip(runs["ignored"][0])["params"]

    def held(rep):
        return [[{k: v for k, v in h.items() if k != "trace"} for h in c["held_out"]] for c in rep["candidates"]]

    assert held(runs["aligned"][1]) == held(runs["lagged"][1]) != held(runs["ignored"][1])
