"""Plant identification: recovery of known plants from noisy synthetic traces, model choice, intervals, JSON."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.identification import MonotoneSplineGain, PlantFit, _ExpParam, _Problem, _Series, _SplineParam, fit_plant, rise_time_a, simulate_plant
from klcontrol import Constant, ExpGain, FirstOrderPlant, FixedBeta, IncrementalPI, LinearRamp, Trace, simulate
from klcontrol.plant import gain_from_dict

DSPRITES = FirstOrderPlant(1 / 400, ExpGain(3.2 / 0.121, 0.121))  # paper's g, a faster a to keep traces short


def _errors(fit, plant, betas):
    return (abs(fit.a / plant.a - 1),
            float(np.max(np.abs(fit.g(betas) / plant.g(betas) - 1))),
            float(np.max(np.abs(fit.gprime(betas) / plant.g.derivative(betas) - 1))))


def _within_must_hold(fit, plant, betas):
    ea, eg, ep = _errors(fit, plant, betas)
    assert ea < 0.10 and eg < 0.05 and ep < 0.15, (ea, eg, ep)


@pytest.fixture(scope="module")
def open_loop_csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("open")
    paths = []
    for i, b in enumerate((2.0, 10.0)):
        simulate(FixedBeta(b), DSPRITES, 2500, noise_rel=0.05, seed=i).to_csv(d / f"run{i + 1}.csv")
        paths.append(str(d / f"run{i + 1}.csv"))
    return paths


@pytest.fixture(scope="module")
def open_fit(open_loop_csvs):
    return fit_plant(open_loop_csvs, n_boot=40, seed=0)


def test_must_hold_two_open_loop_csvs(open_fit):
    _within_must_hold(open_fit, DSPRITES, np.linspace(2, 10, 9))
    assert isinstance(open_fit, FirstOrderPlant) and open_fit.gain_model == "exp"
    assert open_fit.beta_range == (2.0, 10.0)
    assert abs(open_fit.noise_rel - 0.05) < 0.005  # the residuals are the measurement noise


def test_intervals_cover_the_truth_and_are_ordered(open_fit):
    lo, hi = open_fit.a_ci
    assert lo < open_fit.a < hi and lo < DSPRITES.a < hi
    b = np.linspace(2, 10, 5)
    glo, ghi = open_fit.g_ci(b)
    dlo, dhi = open_fit.gprime_ci(b)
    assert np.all(glo <= ghi) and np.all(dlo <= dhi)
    assert np.all(np.abs(ghi - glo) / DSPRITES.g(b) < 0.05)  # 5 % noise on 5000 samples: tight
    gmin, gmax = open_fit.gprime_range()
    np.testing.assert_allclose([gmin, gmax], DSPRITES.g.derivative(np.array([2.0, 10.0])), rtol=0.05)
    cmin, cmax = open_fit.gprime_range(ci=True)
    assert cmin <= gmin and cmax >= gmax


def test_rise_time_estimate_reported(open_fit):
    # the paper's eyeball method, from open-loop traces only 6 time constants long: same order as a
    assert len(open_fit.a_rise_time) == 2
    assert 0.8 < open_fit.a_rise_time_mean / DSPRITES.a < 1.3


def test_closed_loop_recovery():
    trs = [simulate(IncrementalPI(0.01, 0.005, Constant(c), beta0=15.0, filter=5), DSPRITES, 4000,
                    noise_rel=0.05, seed=s) for s, c in enumerate((8.0, 15.0))]
    fit = fit_plant(trs, n_boot=0)
    lo, hi = fit.beta_range
    assert hi - lo > 5  # β moved: g is seen over a range
    _within_must_hold(fit, DSPRITES, np.linspace(lo, hi, 9))
    assert fit.a_rise_time == [None, None]


def test_mixed_open_and_closed_loop_and_stride():
    plant = FirstOrderPlant(1 / 1000, ExpGain(26.38, 0.0476))  # the paper's MNIST g
    closed = simulate(IncrementalPI(0.01, 0.005, LinearRamp(2.0, 15.0, 6000), beta0=40.0), plant, 8000,
                      noise_rel=0.05, seed=3)
    opened = simulate(FixedBeta(30.0), plant, 8000, noise_rel=0.05, seed=4)
    every10 = Trace(opened.step[9::10], opened.beta[9::10], opened.kl[9::10], opened.setpoint[9::10])
    fit = fit_plant([closed, every10], n_boot=0)
    assert fit.info["traces"][1]["stride"] == 10
    _within_must_hold(fit, plant, np.linspace(*fit.beta_range, 9))


def test_kl_lag_option_recovers_the_same_plant(tmp_path):
    # a fast plant in closed loop: β moves every step, so a one-row shift of the KL is visible
    fast = FirstOrderPlant(1 / 20, ExpGain(26.0, 0.12))
    trs = [simulate(IncrementalPI(0.05, 0.02, LinearRamp(c, 2 * c, 1500), beta0=15.0), fast, 2000,
                    noise_rel=0.05, seed=i) for i, c in enumerate((4.0, 8.0))]
    paths = []
    for i, tr in enumerate(trs):  # logged in the forward pass: row t holds y(t−1)
        p = tmp_path / f"fwd{i}.csv"
        lagged = np.r_[0.0, tr.kl[:-1]]
        p.write_text("step,beta,kl\n" + "".join(f"{s},{float(b)!r},{float(k)!r}\n"
                                                for s, b, k in zip(tr.step, tr.beta, lagged)))
        paths.append(p)
    good = fit_plant(paths, kl_lag=1, n_boot=0)
    _within_must_hold(good, fast, np.linspace(*good.beta_range, 7))
    # realigned rows are exactly the simulator's (β(t), y(t)) pairs, less the last row
    cut = [Trace(t.step[:-1], t.beta[:-1], t.kl[:-1], t.setpoint[:-1]) for t in trs]
    ref = fit_plant(cut, n_boot=0)
    assert good.a == pytest.approx(ref.a, rel=1e-9)
    np.testing.assert_allclose(good.y_init, ref.y_init, rtol=1e-6)


def _logistic(b):
    return 20.0 / (1.0 + np.exp((np.asarray(b, dtype=float) - 8.0) / 1.5))


def test_auto_chooses_exp_on_exp_data(open_loop_csvs):
    fit = fit_plant(open_loop_csvs, g="auto", n_boot=0)
    assert fit.gain_model == "exp" and fit.bic["exp"] < fit.bic["spline"]


def test_auto_chooses_spline_on_non_exponential_data():
    plant = FirstOrderPlant(1 / 300, _logistic)
    tr = simulate(IncrementalPI(0.01, 0.005, LinearRamp(1.0, 19.0, 6000), beta0=20.0), plant, 7000,
                  noise_rel=0.05, seed=0)
    fit = fit_plant([tr], g="auto", n_boot=10)
    assert fit.gain_model == "spline" and isinstance(fit.g, MonotoneSplineGain)
    assert fit.bic["spline"] < fit.bic["exp"] - 100
    assert abs(fit.a / plant.a - 1) < 0.05
    b = np.linspace(3, 11, 9)  # where g is large enough to be measured at 5 % noise
    assert np.max(np.abs(fit.g(b) / _logistic(b) - 1)) < 0.05
    assert np.all(np.diff(fit.g(np.linspace(-5, 40, 400))) <= 1e-12)  # monotone, extrapolation included


def test_json_round_trip(open_fit, tmp_path):
    open_fit.save(tmp_path / "fit.json")
    back = PlantFit.load(tmp_path / "fit.json")
    b = np.linspace(0, 20, 11)
    assert back.a == open_fit.a and back.a_ci == open_fit.a_ci and back.beta_range == open_fit.beta_range
    np.testing.assert_array_equal(back.g(b), open_fit.g(b))
    np.testing.assert_array_equal(back.g_ci(b), open_fit.g_ci(b))
    assert back.gprime_range(ci=True) == open_fit.gprime_range(ci=True)
    plain = FirstOrderPlant.from_dict(open_fit.to_dict())  # the core loader reads a fit as a plant
    assert type(plain) is FirstOrderPlant and plain.a == open_fit.a
    with pytest.raises(ValueError, match="not a plant fit"):
        PlantFit.from_dict(DSPRITES.to_dict())
    with pytest.raises(ValueError, match="fit file not found"):
        PlantFit.load(tmp_path / "none.json")


def test_spline_fit_json_round_trip():
    tr = simulate(IncrementalPI(0.01, 0.005, LinearRamp(2.0, 15.0, 3000), beta0=20.0), DSPRITES, 3000,
                  noise_rel=0.05, seed=5)
    fit = fit_plant([tr], g="spline", n_boot=5)
    back = PlantFit.from_dict(fit.to_dict())
    b = np.linspace(*fit.beta_range, 7)
    np.testing.assert_allclose(back.gprime(b), fit.gprime(b))
    np.testing.assert_allclose(back.gprime_ci(b), fit.gprime_ci(b))
    assert FirstOrderPlant.from_dict(fit.to_dict()).g.to_dict() == fit.g.to_dict()


# -- the spline gain -----------------------------------------------------------------------------------------

coefs = st.lists(st.floats(0, 10), min_size=4, max_size=12).map(lambda c: np.cumsum(c)[::-1] + 0.5)


@given(coefs, st.floats(-5, 5), st.floats(0.5, 30))
def test_spline_gain_monotone_derivative_inverse(c, lo, width):
    g = MonotoneSplineGain(lo, lo + width, c)
    b = np.linspace(lo - width, lo + 2 * width, 301)
    assert np.all(np.diff(g(b)) <= 1e-9) and np.all(g(b) >= 0)
    h = 1e-6 * width
    inner = np.linspace(lo + 0.01 * width, lo + 0.99 * width, 23)
    np.testing.assert_allclose(g.derivative(inner), (g(inner + h) - g(inner - h)) / (2 * h), atol=1e-4 * (1 + c[0]))
    strict = inner[g.derivative(inner) < -1e-6]
    np.testing.assert_allclose(g.inverse(g(strict)), strict, atol=1e-6 * width)
    assert gain_from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_spline_gain_rejects_bad_input():
    with pytest.raises(ValueError, match="non-increasing"):
        MonotoneSplineGain(0, 1, [1, 2, 1, 0])
    with pytest.raises(ValueError, match="beta_lo < beta_hi"):
        MonotoneSplineGain(1, 1, [4, 3, 2, 1])
    with pytest.raises(ValueError, match="≥ 4 finite"):
        MonotoneSplineGain(0, 1, [2, 1])


# -- pieces cross-checked against independent computations ------------------------------------------------


def test_simulate_plant_equals_klcontrol_simulate():
    tr = simulate(IncrementalPI(0.01, 0.005, 10.0, beta0=20.0), DSPRITES, 500, y0=3.0)
    np.testing.assert_allclose(simulate_plant(DSPRITES, tr.beta, 3.0), tr.state, rtol=1e-12)


@pytest.mark.parametrize("param", ["exp", "spline"])
def test_analytic_jacobian_matches_finite_differences(param):
    tr = simulate(IncrementalPI(0.01, 0.005, 10.0, beta0=20.0), DSPRITES, 300, noise_rel=0.05, seed=1)
    sub = Trace(tr.step[::3], tr.beta[::3], tr.kl[::3], tr.setpoint[::3])
    series = [_Series(tr, "a"), _Series(sub, "b")]
    lo, hi = float(tr.beta.min()), float(tr.beta.max())
    p = _ExpParam(10.0) if param == "exp" else _SplineParam(lo, hi, 4, 10.0, 1.0)
    prob = _Problem(series, p)
    rng = np.random.default_rng(0)
    x = np.r_[math.log(0.01), rng.uniform(0.1, 1.0, p.n), 2.0, 1.0]
    J = prob.jacobian(x)
    num = np.empty_like(J)
    for j in range(len(x)):
        h = 1e-6 * max(1.0, abs(x[j]))
        e = np.zeros_like(x)
        e[j] = h
        num[:, j] = (prob.residuals(x + e) - prob.residuals(x - e)) / (2 * h)
    np.testing.assert_allclose(J, num, rtol=1e-5, atol=1e-6 * np.abs(num).max())


def test_rise_time_a_on_a_clean_step_response():
    tr = simulate(FixedBeta(4.0), FirstOrderPlant(1 / 300, ExpGain(20.0, 0.1)), 4000)
    assert abs(rise_time_a(tr) * 300 - 1) < 0.02
    assert rise_time_a(simulate(IncrementalPI(0.01, 0.005, 10.0), DSPRITES, 100)) is None


# -- bad input --------------------------------------------------------------------------------------------


def test_fit_errors(tmp_path, open_loop_csvs):
    same = [simulate(FixedBeta(4.0), DSPRITES, 100, noise_rel=0.05, seed=s) for s in range(2)]
    with pytest.raises(ValueError, match="every trace has β = 4: g.* identifiable only across several β"):
        fit_plant(same)
    with pytest.raises(ValueError, match="g must be one of"):
        fit_plant(open_loop_csvs, g="poly")
    with pytest.raises(ValueError, match="loss must be one of"):
        fit_plant(open_loop_csvs, loss="l2")
    with pytest.raises(ValueError, match="n_boot must be"):
        fit_plant(open_loop_csvs, n_boot=-1)
    with pytest.raises(ValueError, match="at least one trace"):
        fit_plant([])
    with pytest.raises(ValueError, match="expected a path or a klcontrol.Trace"):
        fit_plant([3])
    with pytest.raises(ValueError, match="trace file not found"):
        fit_plant([tmp_path / "missing.csv"])
    many = simulate(FixedBeta(np.array([1.0, 2.0])), DSPRITES, 10)
    with pytest.raises(ValueError, match="one loop per trace"):
        fit_plant([many])
