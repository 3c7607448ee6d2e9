"""klcontrol.analysis.identification.models: static map, filters, estimators, figures of merit, persistence, cross-checks."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import FirstOrderPlant, Trace
from klcontrol.analysis.identification import models as pm


def _trace(beta, kl):
    n = len(beta)
    return Trace(step=np.arange(n), beta=np.asarray(beta, float), kl=np.asarray(kl, float), setpoint=np.full(n, np.nan))


G = pm.LogPchipGain([1, 2, 4, 8], [22.0, 17.5, 13.0, 9.9], [(21.8, 22.2), (17.3, 17.7), (12.9, 13.1), (9.8, 10.0)])


def _excitation(n=3000, seed=0, beta_star=4.0, delta=0.5):
    rng = np.random.default_rng(seed)
    out, s = [], 1
    while len(out) < n:
        out += [beta_star * math.exp(s * delta)] * int(math.exp(rng.uniform(math.log(5), math.log(500))))
        s = -s
    return np.array(out[:n])


# -- static map ------------------------------------------------------------------------------------------------


def test_log_pchip_gain_interpolates_is_monotone_and_inverts():
    b = np.geomspace(0.3, 40, 400)
    v = G(b)
    np.testing.assert_allclose(G(np.array([1, 2, 4, 8.0])), [22, 17.5, 13, 9.9], rtol=1e-12)
    assert np.all(np.diff(v) <= 1e-12) and np.all(v >= 0)
    # derivative: central differences (an independent computation)
    h = 1e-6 * b
    np.testing.assert_allclose(G.derivative(b), (G(b + h) - G(b - h)) / (2 * h), rtol=1e-5, atol=1e-7)
    for y in (21.0, 13.0, 10.5, 5.0):
        assert G(G.inverse(y)) == pytest.approx(y, abs=1e-9)
    assert G.from_dict(json.loads(json.dumps(G.to_dict()))).to_dict() == G.to_dict()


def test_static_map_bad_input():
    with pytest.raises(ValueError, match="decrease"):
        pm.LogPchipGain([1, 2], [3, 4])
    with pytest.raises(ValueError, match="increasing"):
        pm.LogPchipGain([2, 1], [4, 3])
    with pytest.raises(ValueError, match="y > 0"):
        G.inverse(0.0)
    g = pm.fit_static_map([dict(beta=4, level=13, level_ci=[12.9, 13.1]), dict(beta=2, level=17.5),
                           dict(beta=4, level=13.2, level_ci=[13.0, 13.4])])
    np.testing.assert_allclose(g.levels, [17.5, 13.1])
    assert g.level_ci[1] == (12.9, 13.4)


# -- figures of merit ------------------------------------------------------------------------------------------


def test_fit_percent_against_a_direct_computation():
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=500))
    yh = y + rng.normal(size=500)
    m = np.array([y[i - 49:i + 1].mean() for i in range(49, 500)])
    mh = np.array([yh[i - 49:i + 1].mean() for i in range(49, 500)])
    expect = 100 * (1 - np.linalg.norm(m - mh) / np.linalg.norm(m - m.mean()))
    assert pm.fit_percent(y, yh) == pytest.approx(expect, rel=1e-10)
    assert pm.fit_percent(y, y) == 100.0
    assert pm.fit_percent(y, np.full(500, y[49:].mean()), window=1) < 1.0
    with pytest.raises(ValueError, match="constant"):
        pm.fit_percent(np.ones(100), np.zeros(100))


def test_residual_tests_tell_white_from_coloured_and_correlated():
    rng = np.random.default_rng(2)
    u = rng.normal(size=3000)
    white = pm.residual_tests(rng.normal(size=3000), u)
    assert white["ljung_box_p"] > 0.01 and white["xcorr_max"] < 0.08
    col = pm.residual_tests(np.convolve(rng.normal(size=3000), np.ones(10), "same"), u)
    assert col["ljung_box_p"] < 1e-6
    leak = pm.residual_tests(np.roll(u, 3) + 0.5 * rng.normal(size=3000), u)
    assert leak["xcorr_max"] > 0.5 and np.argmax(np.abs(leak["xcorr"])) == 3


# -- filters and the plant protocol -----------------------------------------------------------------------------


def test_first_order_structure_equals_the_papers_plant():
    """The first-order Hammerstein filter is FirstOrderPlant.step run from equilibrium."""
    a = 0.02
    b, f = pm._polys("first_order", [math.log(a)], None)
    fit = pm.HammersteinFit("first_order", b, f, G)
    beta = _excitation(400)
    plant = FirstOrderPlant(a, G)
    state, out = plant.initial_state(float(G(beta[0]))), []
    for bt in beta:
        y, state = plant.step(state, bt)
        out.append(y)
    np.testing.assert_allclose(fit.simulate(beta), out, rtol=1e-12)


def test_two_time_constant_filter_is_the_sum_of_its_modes():
    th = [math.log(0.2), math.log(0.004), math.log(0.6 / 0.4)]
    b, f = pm._polys("two_time_constant", th, None)
    u = G(_excitation(800))
    parts = [pm._simulate(*pm._first_order_poly(a), u) for a in (0.2, 0.004)]
    np.testing.assert_allclose(pm._simulate(b, f, u), 0.6 * parts[0] + 0.4 * parts[1], rtol=1e-10)
    assert np.sum(b) == pytest.approx(np.sum(f))


def test_step_linearize_and_transfer_function_agree_with_simulation():
    fit = pm.HammersteinFit("oe", [0.05, 0.02], [1.0, -1.5, 0.57], G, orders=(2, 2))
    beta = _excitation(600)
    # step(): the plant protocol reproduces simulate()
    st_ = fit.initial_state(float(G(beta[0])))
    ys = []
    for bt in beta:
        y, st_ = fit.step(st_, bt)
        ys.append(float(y))
    np.testing.assert_allclose(ys, fit.simulate(beta), rtol=1e-9, atol=1e-9)
    # linearize(): small steps of β around β* follow the linear model to first order
    import control

    C = 13.0
    bstar, _ = fit.equilibrium(C)
    u = 1e-4 * np.sign(np.sin(np.arange(300) / 7.0))
    lin = control.forced_response(fit.statespace(C), T=np.arange(300), U=u).outputs
    nonlin = fit.simulate(bstar + u) - C
    np.testing.assert_allclose(nonlin, lin, atol=1e-7)
    assert control.dcgain(fit.transfer_function()) == pytest.approx(1.0)
    # vectorised initial state: one row per loop
    assert fit.initial_state([13.0, 10.0], (2,))[0].shape == (2, 2)


def test_loop_verdicts_through_the_lti_api_match_the_exact_first_order_path():
    """A first-order Hammerstein fit given to klcontrol.analysis.stability (plant=) agrees with the symbolic-code path."""
    from klcontrol.analysis.stability import spectral_radius
    from klcontrol.plant import plant_from_dict

    a = 0.03
    fit = pm.HammersteinFit("first_order", *pm._polys("first_order", [math.log(a)], None), G)
    assert isinstance(plant_from_dict(fit.to_dict()), pm.HammersteinFit)
    C = 13.0
    gp = G.derivative(G.inverse(C))
    for kp, ki, T in [(0.01, 0.005, 5), (1.0, 0.3, 5), (0.0, 0.5, 1), (3.0, 0.2, 3)]:
        r_lti = spectral_radius(kp, ki, plant=fit, setpoint=C, window=T, delay=0)
        r_exact = spectral_radius(kp, ki, a, gp, window=T, delay=0)
        assert r_lti == pytest.approx(r_exact, abs=1e-10)


def test_hammerstein_bad_input_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="unit DC"):
        pm.HammersteinFit("oe", [0.1], [1.0, -0.5], G, (1, 1))
    with pytest.raises(ValueError, match="unstable"):
        pm.HammersteinFit("oe", [-0.1], [1.0, -1.1], G, (1, 1))
    with pytest.raises(ValueError, match="structure"):
        pm.HammersteinFit("arx", [1.0], [1.0], G)
    fit = pm.HammersteinFit("oe", [0.05, 0.02], [1.0, -1.5, 0.57], G, orders=(2, 2), info={"x": 1})
    p = tmp_path / "m.json"
    fit.save(p)
    back = pm.HammersteinFit.from_dict(json.loads(p.read_text()))
    beta = _excitation(300)
    np.testing.assert_array_equal(back.simulate(beta), fit.simulate(beta))
    with pytest.raises(ValueError, match="spacing"):
        fit.predict(Trace(step=np.arange(0, 400, 2), beta=beta[:200], kl=beta[:200], setpoint=np.zeros(200)))


# -- estimation ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    """A two-time-constant plant with drift and coloured noise of the real trace's size (σ ≈ 0.6 nats)."""
    th = [math.log(0.1), math.log(0.005), math.log(0.7 / 0.3)]
    b, f = pm._polys("two_time_constant", th, None)
    true = pm.HammersteinFit("two_time_constant", b, f, G)
    rng = np.random.default_rng(5)
    out = []
    for seed in (0, 1):
        beta = _excitation(3000, seed)
        noise = np.convolve(rng.normal(scale=0.5, size=3000), [1, 0.5, 0.3], "same")
        kl = true.simulate(beta) + noise - 0.0001 * np.arange(3000)
        out.append(_trace(beta, kl))
    return true, out


def test_two_time_constant_estimate_recovers_the_modes(synthetic):
    true, (fit_tr, val_tr) = synthetic
    fit = pm.fit_dynamics([fit_tr], G, "two_time_constant")
    assert fit.params["tau_fast"] == pytest.approx(1 / math.log1p(0.1), rel=0.25)
    assert fit.params["tau_slow"] == pytest.approx(1 / math.log1p(0.005), rel=0.5)
    assert fit.params["w_fast"] == pytest.approx(0.7, abs=0.1)
    v = pm.validate(fit, [val_tr], names=["val"])[0]
    one = pm.validate(pm.fit_dynamics([fit_tr], G, "first_order"), [val_tr])[0]
    assert v["fit_percent"] > 85 and v["fit_percent"] > one["fit_percent"]


def test_oe_order_selection_prefers_a_model_that_explains_two_modes(synthetic):
    true, (fit_tr, val_tr) = synthetic
    best, table = pm.fit_oe_orders([fit_tr], G, max_nf=2)
    assert best.orders[1] == 2 and len(table) == 5
    assert [r["aic"] for r in table] == sorted(r["aic"] for r in table)
    assert pm.validate(best, [val_tr])[0]["fit_percent"] > 85


@settings(max_examples=20, deadline=None)
@given(st.floats(0.001, 0.5), st.floats(-3, 3))
def test_level_matching_only_shifts(a, shift):
    b, f = pm._polys("first_order", [math.log(a)], None)
    fit = pm.HammersteinFit("first_order", b, f, G)
    beta = _excitation(300, 3)
    y = fit.simulate(beta) + shift
    np.testing.assert_allclose(fit.predict(_trace(beta, y)), y, atol=1e-9)


# -- the shipped validation on the real VAE ---------------------------------------------------------------------


def test_shipped_validation_summary_is_reproduced_by_load_fit_predict():
    """docs/results/plant_validation/summary.json: load_fit(fit).predict(read_trace(trace)) gives each fit % (±2)."""
    from pathlib import Path

    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.identification.traces import read_trace

    root = Path(__file__).resolve().parents[1]
    summary = json.loads((root / "docs/results/plant_validation/summary.json").read_text())
    rows = summary["held_out"]
    assert len(rows) >= 3 and any(r["closed_loop"] for r in rows)
    for r in rows:
        tr = read_trace(root / r["trace"])
        got = pm.fit_percent(tr.kl, load_fit(root / r["fit"]).predict(tr))
        assert got == pytest.approx(r["fit_percent"], abs=2.0)
        first = pm.fit_percent(tr.kl, load_fit(root / r["first_order_fit"]).predict(tr))
        assert first == pytest.approx(r["first_order_fit_percent"], abs=2.0)
        assert r["closed_loop"] == bool(np.any(np.isfinite(tr.setpoint)))
