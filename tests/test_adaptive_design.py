"""AdaptivePI: the online RLS estimate, the offline gain table (exact analysis), the fallback, and a drifting plant."""
import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import AdaptivePI, IncrementalPI, adaptive_table, laws
from klcontrol.analysis.stability import spectral_radius
from klcontrol.analysis.tuning import adaptive as ad
from klcontrol.backend import NUMPY, TorchOps


def test_shipped_table_is_the_design_and_robustly_stable():
    t = ad.design_table()
    assert adaptive_table.A_EDGES == t["a_edges"] and adaptive_table.KP_N == t["kp_n"]
    assert adaptive_table.KI_N == t["ki_n"] and adaptive_table.G_FACTOR == t["g_factor"]
    for k, (lo, hi) in enumerate(zip(t["a_edges"][:-1], t["a_edges"][1:])):
        # independently of the design loop: a finer uncertainty set, every point stable
        a = np.geomspace(lo, hi, 7)[:, None]
        m = np.geomspace(1 / ad.G_FACTOR, ad.G_FACTOR, 15)[None, :]
        rho = spectral_radius(t["kp_n"][k], t["ki_n"][k], a, -m, 1, 0, "incremental")
        assert np.all(rho < 1), (k, rho.max())


def test_rls_equals_weighted_batch_least_squares():
    rng = np.random.default_rng(1)
    n, lam = 300, 0.98
    beta = 5 + rng.standard_normal(n)
    y = np.empty(n)
    y_prev = 10.0
    for t in range(n):
        y[t] = 0.9 * y_prev + (-0.2) * beta[t] + 1.5 + 0.01 * rng.standard_normal()
        y_prev = y[t]
    p0 = 1e6
    state = (0.0, 0.0, 0.0, p0, 0.0, 0.0, p0, 0.0, p0, 0.0, 10.0)
    for t in range(n):
        state = laws.rls_first_order(state, y[t], beta[t], lam, 1e30, NUMPY)
    X = np.column_stack([np.concatenate([[10.0], y[:-1]]), beta, np.ones(n)])
    w = lam ** np.arange(n - 1, -1, -1)
    # RLS with P0 = p0·I minimises Σ λ^(n−t) e_t² + λ^n·|θ|²/p0
    theta = np.linalg.solve(X.T @ (w[:, None] * X) + lam ** n / p0 * np.eye(3), X.T @ (w * y))
    np.testing.assert_allclose(state[:3], theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(state[:3], (0.9, -0.2, 1.5), atol=0.05)  # and it is near the truth


def test_rls_runs_on_torch_as_on_numpy():
    rng = np.random.default_rng(2)
    st_n = (0.5, 0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 0.0, 10.0, 0.0, 3.0)
    st_t = tuple(torch.tensor(v, dtype=torch.float64) for v in st_n)
    for _ in range(20):
        y, b = rng.normal(3, 1), rng.normal(2, 1)
        st_n = laws.rls_first_order(st_n, y, b, 0.99, 1e6, NUMPY)
        st_t = laws.rls_first_order(st_t, torch.tensor(y, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                    0.99, 1e6, TorchOps())
    np.testing.assert_allclose([float(v) for v in st_t], st_n, rtol=1e-12)


def test_table_lookup():
    edges, values = (1.0, 2.0, 4.0, 8.0), (10.0, 20.0, 30.0)
    x = np.array([0.5, 1.0, 1.9, 2.0, 3.9, 4.0, 100.0])
    np.testing.assert_array_equal(laws.table_lookup(x, edges, values), [10, 10, 10, 20, 20, 30, 30])


def test_falls_back_to_fixed_gains_when_the_estimate_is_poor():
    c = AdaptivePI(20.0, kp0=0.02, ki0=0.003, beta0=10.0, n_min=5, a_prior=0.05)
    p = c.params
    # wrong sign of g′, far too steep, not enough updates, too uncertain: fixed gains
    # wrong sign of g′, far too steep, too few updates, b uncertain, φ uncertain, a outside the table: fixed gains
    for phi, b, s2, p11, p22, n in [(0.95, +0.01, 0, 0, 0, 50), (0.95, -5.0, 0, 0, 0, 50), (0.95, -0.05, 0, 0, 0, 3),
                                    (0.95, -0.05, 1.0, 0, 1.0, 50), (0.95, -0.05, 1.0, 1.0, 0, 50),
                                    (1.2, -0.05, 0, 0, 0, 50)]:
        kp, ki, ok = c.design(phi, b, s2, p11, p22, n, p)
        assert not ok and kp == 0.02 and ki == 0.003
    assert not c.design(1 / 1.5, -0.5 / 1.5, 1e-4, 1e-3, 1e-3, 50, p)[2]  # â = 0.5: ten times the prior
    kp, ki, ok = c.design(1 / 1.05, -0.05 / 1.05, 1e-4, 1e-3, 1e-3, 50, p)  # a = 0.05, g′ = −1: the table's bin
    assert ok and kp == pytest.approx(adaptive_table.KP_N[8]) and ki == pytest.approx(adaptive_table.KI_N[8])


def _run(steps=6000):
    kpn, kin = adaptive_table.KP_N[8], adaptive_table.KI_N[8]  # a = 0.05 lies in bin 8
    args = dict(steps=steps, period=600)
    fixed = IncrementalPI([kpn / 0.05, kpn / 3.0], [kin / 0.05, kin / 3.0], 20.0, beta0=30.0, beta_max=200.0)
    adaptive = AdaptivePI(20.0, kp0=kpn / 3.0, ki0=kin / 3.0, beta0=30.0, beta_max=200.0, a_prior=0.05)
    return ad.drift_run(fixed, **args), ad.drift_run(adaptive, **args)


def _rmse(r, sl):
    c = r["setpoint"][sl]
    return np.sqrt(np.mean((r["y"][sl] - (c[:, None] if r["y"].ndim == 2 else c)) ** 2, axis=0))


def test_adaptive_beats_fixed_gains_on_a_drifting_plant():
    """g′ from −0.05 to −3: gains fast at the start go unstable, gains safe at the end are sluggish at the start."""
    fx, adp = _run()
    n = len(adp["y"])
    first, last, all_ = slice(n // 6, n // 3), slice(2 * n // 3, n), slice(0, n)
    fast, safe = _rmse(fx, all_)
    assert _rmse(adp, all_) < 0.9 * min(fast, safe)
    assert _rmse(fx, last)[0] > 1.0  # the start's gains oscillate at the end (a ±1 wave tracked not at all)
    assert _rmse(adp, first) < 0.8 * _rmse(fx, first)[1]  # faster than the safe gains once adapted
    assert _rmse(adp, last) < 1.2 * _rmse(fx, last)[1]  # as good as the end's own design at the end
    # the slope estimate follows the drift, and every adapted design is stable by its own model
    g_hat = adp["b"] / (1 - adp["phi"])
    late = np.arange(n // 3, n, 50)
    assert np.all(np.abs(g_hat[late] / adp["gprime"][late] - 1) < 0.25)
    on = late[adp["adapted"][late] == 1]
    assert len(on) > 0.9 * len(late)
    a_hat = 1 / adp["phi"][on] - 1
    rho = spectral_radius(adp["kp"][on] * np.abs(g_hat[on]), adp["ki"][on] * np.abs(g_hat[on]), a_hat, -1.0, 1, 0,
                          "incremental")
    assert np.all(rho < 1)
    # and on the true plant of that update (a = 0.05, the slope of the moment, frozen)
    true_g = np.abs(adp["gprime"][on])
    rho = spectral_radius(adp["kp"][on] * true_g, adp["ki"][on] * true_g, 0.05, -1.0, 1, 0, "incremental")
    assert np.all(rho < 1)


def _build():
    return AdaptivePI(20.0, kp0=[0.01, 0.02], ki0=0.005, beta0=[30.0, 10.0], n_min=2, a_prior=0.1, filter=2)


KLS = [[19.0, 21.0], [18.5, 21.5], [19.2, 20.1], [20.5, 19.0], [21.0, 18.0], [19.9, 20.2]]


def test_state_dict_round_trip_json_and_torch():
    a, b = _build(), _build()
    for k in KLS[:3]:
        a.step(np.array(k))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for k in KLS[3:]:
        assert np.array_equal(a.step(np.array(k)), b.step(np.array(k)))
    t1, t2, n = _build(), _build(), _build()
    for k in KLS[:3]:
        t1.step(torch.tensor(k, dtype=torch.float64))
        n.step(np.array(k))
    buf = io.BytesIO()
    torch.save(t1.state_dict(), buf)
    buf.seek(0)
    t2.load_state_dict(torch.load(buf, weights_only=True))
    for k in KLS[3:]:
        x = torch.tensor(k, dtype=torch.float64)
        ref = n.step(np.array(k))
        np.testing.assert_allclose(t1.step(x).numpy(), ref, rtol=1e-10)
        np.testing.assert_allclose(t2.step(x).numpy(), ref, rtol=1e-10)


def test_tensor_path_has_no_host_sync_and_masks_nan(monkeypatch):
    ref, ctrl = _build(), _build()
    for k in KLS[:3]:
        ref.step(torch.tensor(k))
        ctrl.step(torch.tensor(k))
    before = {k: v.clone() for k, v in ctrl._state.items() if k != "filter"}

    def boom(*a, **k):
        raise AssertionError("host sync in a per-step path")

    with monkeypatch.context() as mp:
        for attr in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            mp.setattr(torch.Tensor, attr, boom)
        out = ctrl.step(torch.tensor([math.nan, KLS[3][1]]))
    expected = ref.step(torch.tensor(KLS[3]))
    for k, v in before.items():
        assert ctrl._state[k][0] == v[0]
    assert out[1] == pytest.approx(float(expected[1]))
    with pytest.raises(ValueError, match=r"loop\(s\) \[0\]"):
        ctrl.check()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_float_nan_raises_and_changes_nothing(bad):
    ctrl = _build()
    ctrl.step(np.array(KLS[0]))
    snap = json.dumps(ctrl.state_dict())
    with pytest.raises(ValueError, match="NaN or infinite"):
        ctrl.step(np.array([20.0, bad]))
    assert json.dumps(ctrl.state_dict()) == snap


@pytest.mark.parametrize("kw, match", [(dict(forget=0.0), "forget"), (dict(forget=1.5), "forget"),
                                       (dict(p0=-1.0), "p0"), (dict(g_min=2.0, g_max=1.0), "g_max"),
                                       (dict(rel_tol=0.0), "rel_tol"), (dict(kp0=math.nan), "kp0")])
def test_bad_parameters_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        AdaptivePI(20.0, **kw)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60), st.floats(0.0, 5.0), st.floats(5.0, 300.0),
       st.floats(0.9, 1.0))
def test_beta_inside_clamps_and_gains_are_fallback_or_a_table_design(kls, bmin, bmax, forget):
    ctrl = AdaptivePI(20.0, kp0=0.01, ki0=0.005, beta0=10.0, beta_min=bmin, beta_max=bmax, forget=forget, n_min=3,
                      a_prior=0.05)
    for kl in kls:
        beta = ctrl.step(kl)
        st_ = ctrl.state
        assert math.isfinite(beta) and bmin <= beta <= bmax
        if st_["adapted"] == 1:
            g = float(st_["kp"]) / float(st_["ki"])  # = kp_n/ki_n of one table row: the design is the table's
            assert any(abs(g - p / i) <= 1e-9 * abs(g) for p, i in zip(adaptive_table.KP_N, adaptive_table.KI_N))
        else:
            assert (float(st_["kp"]), float(st_["ki"])) == (0.01, 0.005)


def test_the_dsprites_preset_keeps_the_tables_margin_with_its_window_5():
    """The table is designed for window 1; the ``adaptive`` preset filters with DynamicVAE's window 5."""
    from klcontrol.analysis.stability import robust_stability
    from klcontrol.registry import make_preset

    ctrl = make_preset("adaptive")
    assert ctrl.filter.window == 5 and ctrl.params["beta0"] == 150.0
    edges = adaptive_table.A_EDGES
    for i in range(len(edges) - 1):
        if edges[i] > 1e-2:  # the plants the preset admits: a within a_factor 4 of 1/2500
            break
        for a in (edges[i], math.sqrt(edges[i] * edges[i + 1]), edges[i + 1]):
            r = robust_stability(adaptive_table.KP_N[i], adaptive_table.KI_N[i], a, -3.0, -1 / 3, window=5)
            assert r.stable, (a, r.worst_spectral_radius)
