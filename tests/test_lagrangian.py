"""GECO, the PID Lagrangian and the cyclical schedule against independent transcriptions of the papers' algorithms.

The transcriptions below restate Rezende & Viola 2018 Alg. 1 (in λ, with a Python loop and ``math``), Stooke,
Achiam & Abbeel 2020 Alg. 2 and Fu et al. 2019 Eq. 6 line by line; the controllers run the laws of
``klcontrol.laws`` (β = 1/λ for GECO, β = λ for the PID Lagrangian).
"""
import io
import json
import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import GECO, Cyclical, PIDLagrangian, ScheduledBeta, laws, papers
from klcontrol.backend import NUMPY, SYMPY, TorchOps
from klcontrol.registry import PRESETS, make_preset


def geco_alg1(recons, kappa, eta, alpha, lam0=1.0):
    """Rezende & Viola Alg. 1: λ after each iteration t (C_ma⁰ = C⁰; λ_t = λ_{t−1}·exp(η·C_ma^t))."""
    lam, out, c_ma = lam0, [], None
    for t, r in enumerate(recons):
        c = r - kappa
        c_ma = c if t == 0 else alpha * c_ma + (1 - alpha) * c
        lam = lam * math.exp(eta * c_ma)
        out.append(lam)
    return out


def pid_alg2(costs, d, kp, ki, kd):
    """Stooke et al. Alg. 2: I ← 0, J_prev ← 0; Δ = J − d, ∂ = (J − J_prev)⁺, I ← (I + Δ)⁺, λ = (KpΔ + KiI + Kd∂)⁺."""
    integral, j_prev, out = 0.0, 0.0, []
    for j in costs:
        delta = j - d
        deriv = max(0.0, j - j_prev)
        integral = max(0.0, integral + delta)
        out.append(max(0.0, kp * delta + ki * integral + kd * deriv))
        j_prev = j
    return out


def cyclical_eq6(t1, T, M, R):
    """Fu et al. Eq. 6 with 1-based t: τ = mod(t − 1, ⌈T/M⌉)/(T/M); β = τ/R if τ ≤ R else 1."""
    tau = ((t1 - 1) % math.ceil(T / M)) / (T / M)
    return tau / R if tau <= R else 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 300.0), min_size=1, max_size=40), st.floats(0.0, 200.0), st.floats(1e-5, 1e-2),
       st.floats(0.0, 0.999))
def test_geco_matches_alg1(recons, kappa, eta, alpha):
    ctrl = GECO(kappa, eta, alpha=alpha, beta0=1.0, beta_min=1e-300, beta_max=1e300)
    ctrl.prime(recons[0])  # Alg. 1's C_ma⁰ = C⁰
    betas = [ctrl.step(r) for r in recons]
    np.testing.assert_allclose(1 / np.array(betas), geco_alg1(recons, kappa, eta, alpha), rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 60.0), min_size=1, max_size=40), st.floats(0.0, 40.0), st.floats(0.0, 1.0),
       st.floats(0.0, 0.5), st.floats(0.0, 2.0))
def test_pid_lagrangian_matches_alg2(kls, d, kp, ki, kd):
    ctrl = PIDLagrangian(kp, ki, d, kd=kd)  # y0 = 0 is Alg. 2's J_prev = 0
    betas = [ctrl.step(k) for k in kls]
    np.testing.assert_allclose(betas, pid_alg2(kls, d, kp, ki, kd), rtol=1e-12, atol=1e-12)


def test_pid_lagrangian_smoothed_derivative():
    # α_d: the D-term sees the rise of s = α_d·s_prev + (1 − α_d)·KL
    ctrl = PIDLagrangian(0.0, 0.0, 0.0, kd=1.0, alpha_d=0.5, y0=2.0)
    s, out = 2.0, []
    for k in [4.0, 4.0, 1.0, 10.0]:
        s_new = 0.5 * s + 0.5 * k
        out.append(max(0.0, s_new - s))
        s = s_new
    assert [ctrl.step(k) for k in [4.0, 4.0, 1.0, 10.0]] == pytest.approx(out)


def test_cyclical_matches_eq6():
    for T, M, R in [(100, 4, 0.5), (1000, 3, 0.25), (7, 2, 1.0), (50, 50, 0.5)]:
        sched = Cyclical(T, M, R)
        k = np.arange(2 * T)
        np.testing.assert_allclose(sched(k), [cyclical_eq6(i + 1, T, M, R) for i in k], atol=1e-12)
    # shape: M cycles, each a linear rise from 0 over R of the cycle, then 1
    b = Cyclical(1000, 4, 0.5)(np.arange(1000))
    assert np.sum(b == 0.0) == 4 and np.all(b[125:250] == 1.0) and np.all(np.diff(b[:125]) > 0)
    assert Cyclical(1000, 4, 0.5, high=4.0)(np.arange(1000)).max() == 4.0
    assert torch.allclose(Cyclical(100)(torch.arange(100)), torch.tensor(Cyclical(100)(np.arange(100))))


@pytest.mark.parametrize("bad", [dict(steps=0), dict(cycles=0), dict(cycles=200), dict(ratio=0.0), dict(ratio=1.5),
                                 dict(low=math.nan)])
def test_cyclical_bad_arguments(bad):
    args = dict(steps=100, cycles=4, ratio=0.5, low=0.0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        Cyclical(**args)


def test_scheduled_beta_follows_the_schedule_by_update():
    sched = Cyclical(40, 2, 0.5, high=3.0)
    ctrl = ScheduledBeta(sched)
    betas = [ctrl.beta] + [ctrl.step(k) for k in np.linspace(0, 50, 39)]
    np.testing.assert_allclose(betas, sched(np.arange(40)))  # update k uses schedule(k), whatever the KL


def test_compare_compresses_the_cyclical_schedule_to_its_budget():
    from klcontrol.vae_plant.experiments.compare import Method

    ctrl = Method.parse("cyclical").controller(compress=160.0)
    betas = [ctrl.beta] + [ctrl.step(0.0) for _ in range(4999)]
    expected = Cyclical(papers.CYCLICAL_DSPRITES_STEPS, 4, 0.5).compressed(160.0)(np.arange(5000))
    np.testing.assert_allclose(betas, expected)
    assert np.sum(np.isclose(betas, 0.0)) == 4 and max(betas) == 1.0  # four whole cycles in 5000 updates


# -------------------------------------------------------------------------- backends agree


def _law_args(law, rng, n):
    if law is laws.geco:
        state = (rng.uniform(0.01, 10, n), rng.normal(0, 20, n))
        return state, rng.uniform(0, 200, n), rng.uniform(50, 150, n), (rng.uniform(0, 1e-2, n),
                                                                          rng.uniform(0, 0.999, n), 1e-3, 1e3)
    state = (rng.uniform(0, 100, n), rng.uniform(0, 40, n))
    return state, rng.uniform(0, 40, n), rng.uniform(0, 40, n), (rng.uniform(0, 1, n), rng.uniform(0, 0.1, n),
                                                                  rng.uniform(0, 1, n), rng.uniform(0, 0.9, n), 0.0,
                                                                  math.inf)


@pytest.mark.parametrize("law", [laws.geco, laws.pid_lagrangian])
def test_backends_agree(law):
    rng = np.random.default_rng(0)
    n = 64
    state, m, c, params = _law_args(law, rng, n)
    ref_b, ref_s = law(state, m, c, *params, ops=NUMPY)
    tt = lambda v: torch.as_tensor(v, dtype=torch.float64) if np.ndim(v) else v
    tb, ts = law(tuple(map(tt, state)), tt(m), tt(c), *map(tt, params), ops=TorchOps())
    np.testing.assert_allclose(tb.numpy(), ref_b, rtol=1e-12)
    for a, b in zip(ts, ref_s):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-12)
    for i in range(0, n, 8):  # sympy, one loop at a time, evaluated exactly then to float
        pick = lambda v: sp.Float(float(v[i]), 30) if np.ndim(v) else (sp.oo if v == math.inf else sp.Float(v, 30))
        sb, ss = law(tuple(map(pick, state)), pick(m), pick(c), *map(pick, params), ops=SYMPY)
        assert float(sb) == pytest.approx(ref_b[i], rel=1e-12, abs=1e-12)
        for a, b in zip(ss, ref_s):
            assert float(a) == pytest.approx(b[i], rel=1e-12, abs=1e-12)


# -------------------------------------------------------------------------- controller protocol


def builders():
    return {
        "geco": lambda: GECO(100.0, [1e-3, 5e-3], alpha=0.9, beta0=[1.0, 2.0]),
        "pid": lambda: PIDLagrangian([0.1, 0.2], 0.05, 20.0, kd=[0.0, 0.5], alpha_d=0.3, filter=3, beta_max=[10., 5.]),
        "scheduled": lambda: ScheduledBeta(Cyclical(10, 2, 0.5)),
    }


MEAS = {"geco": [[150.0, 80.0], [120.0, 90.0], [60.0, 200.0], [101.0, 99.0]],
        "pid": [[25.0, 5.0], [30.0, 10.0], [10.0, 40.0], [21.0, 19.0]],
        "scheduled": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]}


@pytest.mark.parametrize("name", list(builders()))
def test_state_dict_round_trip_json_and_torch(name):
    make, kls = builders()[name], MEAS[name]
    a = make()
    a.step(np.array(kls[0]))
    b = make()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for k in kls[1:]:
        assert np.array_equal(a.step(np.array(k)), b.step(np.array(k)))
    t1, t2 = make(), make()
    t1.step(torch.tensor(kls[0], dtype=torch.float64))
    buf = io.BytesIO()
    torch.save(t1.state_dict(), buf)
    buf.seek(0)
    t2.load_state_dict(torch.load(buf, weights_only=True))
    n = make()
    n.step(np.array(kls[0]))
    for k in kls[1:]:
        x = torch.tensor(k, dtype=torch.float64)
        bn = n.step(np.array(k))
        np.testing.assert_allclose(t1.step(x).numpy(), bn, rtol=1e-12)
        np.testing.assert_allclose(t2.step(x).numpy(), bn, rtol=1e-12)


@pytest.mark.parametrize("name", list(builders()))
def test_tensor_path_has_no_host_sync_and_masks_nan(name, monkeypatch):
    make, kls = builders()[name], MEAS[name]
    ref, ctrl = make(), make()
    ref.step(torch.tensor(kls[0], dtype=torch.float32))
    ctrl.step(torch.tensor(kls[0], dtype=torch.float32))
    before = {k: v.clone() for k, v in ctrl._state.items() if k != "filter"}

    def boom(*a, **k):
        raise AssertionError("host sync in a per-step path")

    with monkeypatch.context() as mp:
        for attr in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            mp.setattr(torch.Tensor, attr, boom)
        out = ctrl.step(torch.tensor([math.nan, kls[1][1]], dtype=torch.float32))
        assert torch.is_tensor(out) and out.shape == (2,)
    expected = ref.step(torch.tensor(kls[1], dtype=torch.float32))
    for k, v in before.items():  # loop 0 masked (unchanged), loop 1 updated as the reference
        assert ctrl._state[k][0] == v[0]
        assert ctrl._state[k][1] == pytest.approx(float(ref._state[k][1]))
    assert out[1] == pytest.approx(float(expected[1]))
    with pytest.raises(ValueError, match=r"loop\(s\) \[0\]"):
        ctrl.check()


@pytest.mark.parametrize("name", list(builders()))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_float_nan_raises_and_changes_nothing(name, bad):
    make, kls = builders()[name], MEAS[name]
    ctrl = make()
    ctrl.step(np.array(kls[0]))
    snap = json.dumps(ctrl.state_dict())
    with pytest.raises(ValueError, match="NaN or infinite"):
        ctrl.step(np.array([kls[1][0], bad]))
    assert json.dumps(ctrl.state_dict()) == snap


@pytest.mark.parametrize("make, match", [
    (lambda: GECO(100.0, 1e-3, beta_min=0.0), "beta_min"),
    (lambda: GECO(100.0, 1e-3, beta_max=math.inf), "beta_max"),
    (lambda: GECO(100.0, 1e-3, alpha=1.0), "alpha"),
    (lambda: GECO(None, 1e-3), "kappa"),
    (lambda: PIDLagrangian(0.1, 0.1, 20.0, beta_min=-1.0), "beta_min"),
    (lambda: PIDLagrangian(0.1, 0.1, 20.0, alpha_d=1.0), "alpha_d"),
    (lambda: PIDLagrangian(0.1, math.nan, 20.0), "ki"),
])
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_load_state_dict_refuses_bad_geco_params_unchanged():
    ctrl = GECO(100.0, 1e-3)
    sd = ctrl.state_dict()
    snap = json.dumps(sd)
    with pytest.raises(ValueError, match="beta_min"):
        ctrl.load_state_dict({**sd, "params": {**sd["params"], "beta_min": -1.0}})
    assert json.dumps(ctrl.state_dict()) == snap


def test_geco_beta_stays_inside_clamps_for_huge_violations():
    ctrl = GECO(0.0, 1.0, alpha=0.0, beta_min=1e-3, beta_max=1e3)
    with np.errstate(all="raise"):  # no overflow: the update is in log β
        lo, hi = ctrl.step(1e6), ctrl.step(-1e6)
    assert lo == pytest.approx(1e-3, rel=1e-12) and 1e-3 <= lo and hi == pytest.approx(1e3, rel=1e-12) and hi <= 1e3


def test_presets():
    for name in ("geco", "pid-lagrangian", "cyclical"):
        assert name in PRESETS
    g = make_preset("geco")
    assert g.measures == "recon" and g.setpoint(0) == papers.GECO_DSPRITES_KAPPA
    assert g.gains["alpha"] == papers.GECO_ALPHA and g.beta == 1 / papers.GECO_LAMBDA0
    p = make_preset("pid-lagrangian")
    assert p.measures == "kl" and tuple(float(p.gains[k]) for k in ("kp", "ki", "kd")) == \
        papers.PID_LAGRANGIAN_DSPRITES_GAINS
    c = make_preset("cyclical")
    assert c.beta == 0.0 and c.schedule(papers.CYCLICAL_DSPRITES_STEPS // 8) == 1.0
