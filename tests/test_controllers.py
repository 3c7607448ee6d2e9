"""Controllers: clamps, persistence, vectorisation, PI equivalence, official mode, torch, bad input."""
import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from official_loops import controlvae_official_betas, dynamicvae_official_betas

from klcontrol import (
    CapacityRamp,
    ExponentialAverage,
    FixedBeta,
    IncrementalPI,
    LinearRamp,
    MovingAverage,
    PositionalPI,
    beta_from_norm,
    beta_norm,
)
from klcontrol.registry import PRESETS
from klcontrol.setpoints import as_setpoint

KINDS = ("incremental", "official", "positional", "capacity", "fixed")
N = 3  # loops of an array controller

# ----------------------------------------------------------------------------- builders


def build(cfg, index=None):
    """A fresh controller from a plain config; ``index`` picks one loop of array gains."""
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    filt = cfg.pop("filter")
    if index is not None:
        cfg = {k: (v[index] if isinstance(v, list) else v) for k, v in cfg.items()}
    filt = None if filt is None else (MovingAverage(filt[1]) if filt[0] == "ma" else ExponentialAverage(filt[1]))
    if kind in ("incremental", "official"):
        return IncrementalPI(cfg["kp"], cfg["ki"], cfg["c"], beta0=cfg["beta0"], beta_min=cfg["bmin"],
                             beta_max=cfg["bmax"], anti_windup="official" if kind == "official" else "clamp",
                             filter=filt, y0=cfg["y0"])
    if kind == "positional":
        return PositionalPI(cfg["kp"], cfg["ki"], cfg["c"], beta_min=cfg["bmin"], beta_max=cfg["bmax"], filter=filt,
                            y0=cfg["y0"])
    if kind == "capacity":
        return CapacityRamp(cfg["kp"], LinearRamp(0.0, cfg["c"], 10), beta_min=cfg["bmin"], beta_max=cfg["bmax"],
                            filter=filt, y0=cfg["y0"])
    return FixedBeta(cfg["beta0"], filter=filt, y0=cfg["y0"])


def gain(lo, hi, n):
    v = st.floats(lo, hi)
    return v if n is None else st.lists(v, min_size=n, max_size=n)


@st.composite
def configs(draw, kinds=KINDS, arrays=(None, N)):
    n = draw(st.sampled_from(arrays))
    kind = draw(st.sampled_from(kinds))
    bmin = draw(gain(-5.0, 5.0, n))
    width = draw(st.one_of(st.just(math.inf), st.floats(0.0, 200.0)))
    bmax = [b + width for b in bmin] if n else bmin + width
    filt = draw(st.sampled_from([None, ("ma", 1), ("ma", 2), ("ma", 5), ("ema", 0.3), ("ema", 1.0)]))
    return dict(kind=kind, kp=draw(gain(0.0, 2.0, n)), ki=draw(gain(-0.5, 1.0, n)), c=draw(st.floats(0.0, 50.0)),
                beta0=draw(gain(-10.0, 300.0, n)), bmin=bmin, bmax=bmax, filter=filt,
                y0=draw(st.floats(0.0, 30.0)), n=n)


def kl_seqs(n, min_size=1, max_size=30):
    item = st.floats(-1e4, 1e4) if n is None else st.lists(st.floats(-1e4, 1e4), min_size=n, max_size=n)
    return st.lists(item, min_size=min_size, max_size=max_size)


def cfg_and_kls(**kw):
    return configs(**kw).flatmap(lambda c: st.tuples(st.just(c), kl_seqs(c["n"])))


def clean(cfg):
    return {k: v for k, v in cfg.items() if k != "n"}


# ----------------------------------------------------------------------------- properties


@given(cfg_and_kls())
def test_beta_finite_and_inside_clamps(args):
    cfg, kls = args
    ctrl = build(clean(cfg))
    lo, hi = np.asarray(cfg["bmin"]), np.asarray(cfg["bmax"])
    for kl in kls:
        beta = np.asarray(ctrl.step(np.asarray(kl) if cfg["n"] else kl))
        assert np.all(np.isfinite(beta))
        if cfg["kind"] == "fixed":
            assert np.array_equal(beta, np.broadcast_to(cfg["beta0"], beta.shape))
        else:
            assert np.all(beta >= lo) and np.all(beta <= hi), (beta, lo, hi)
        assert np.array_equal(beta, np.asarray(ctrl.beta))


@given(cfg_and_kls(), st.integers(0, 30), st.booleans())
def test_state_dict_round_trip_numpy_json(args, split, through_json):
    cfg, kls = args
    split = min(split, len(kls))
    a = build(clean(cfg))
    for kl in kls[:split]:
        a.step(np.asarray(kl))
    sd = a.state_dict()
    if through_json:
        sd = json.loads(json.dumps(sd))
    b = build(clean(cfg))
    b.load_state_dict(sd)
    assert b.steps_taken == a.steps_taken
    for kl in kls[split:]:
        assert np.array_equal(np.asarray(a.step(np.asarray(kl))), np.asarray(b.step(np.asarray(kl))))


@given(cfg_and_kls(arrays=(None,)), st.integers(1, 30), st.sampled_from([torch.float32, torch.float64]))
def test_state_dict_round_trip_torch(args, split, dtype):
    cfg, kls = args
    split = min(split, len(kls))
    a = build(clean(cfg))
    for kl in kls[:split]:
        a.step(torch.tensor(kl, dtype=dtype))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert torch.is_tensor(sd["state"]["beta"])
    b = build(clean(cfg))
    b.load_state_dict(sd)
    for kl in kls[split:]:
        ba, bb = a.step(torch.tensor(kl, dtype=dtype)), b.step(torch.tensor(kl, dtype=dtype))
        assert torch.is_tensor(ba) and ba.dtype == dtype
        assert torch.equal(ba, bb)


def test_numpy_state_dict_loads_with_torch_weights_only():
    a = IncrementalPI([0.01, 0.02], 0.005, 20.0, beta0=100.0, filter=3)
    for kl in ([1.0, 2.0], [3.0, 4.0]):
        a.step(np.array(kl))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = IncrementalPI([0.01, 0.02], 0.005, 20.0, beta0=100.0, filter=3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert np.array_equal(a.step(np.array([5.0, 6.0])), b.step(np.array([5.0, 6.0])))


@given(cfg_and_kls(arrays=(N,)))
def test_vectorised_equals_loop_of_scalars(args):
    cfg, kls = args
    vec = build(clean(cfg))
    singles = [build(clean(cfg), index=i) for i in range(N)]
    for kl in kls:
        bv = vec.step(np.asarray(kl))
        assert bv.shape == (N,)
        bs = [s.step(kl[i]) for i, s in enumerate(singles)]
        np.testing.assert_allclose(bv, bs, rtol=1e-12, atol=1e-12)


@given(
    kp=st.floats(0.0, 0.05),
    ki=st.floats(1e-4, 0.01),
    c=st.floats(1.0, 30.0),
    y0=st.floats(0.0, 30.0),
    beta0=st.floats(30.0, 200.0),
    window=st.integers(1, 5),
    deviations=st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=60),
)
def test_positional_and_incremental_pi_coincide_away_from_clamps(kp, ki, c, y0, beta0, window, deviations):
    # Positional:  β_P(t) = Kp·σ(m(t) − C) − Ki·I(t) + β_min,  I(t) = I(t−1) + (C − m(t)).
    # Its difference β_P(t) − β_P(t−1) = Kp[σ(m(t) − C) − σ(m(t−1) − C)] − Ki(C − m(t)) is exactly the
    # incremental update.  So with σ(m(−1) − C) = σ(y0 − C) in both and the positional integral offset
    # I(−1) chosen so that Kp·σ(y0 − C) − Ki·I(−1) + β_min = β0 = β_I(0), the sequences are equal while
    # no clamp is active (up to float rounding; the positional form recomputes from the sum).
    bmin, bmax = 0.0, 1e6
    inc = IncrementalPI(kp, ki, c, beta0=beta0, beta_min=bmin, beta_max=bmax, filter=window, y0=y0)
    pos = PositionalPI(kp, ki, c, beta_min=bmin, beta_max=bmax, filter=window, y0=y0)
    sd = pos.state_dict()
    p0 = 1 / (1 + math.exp(-(y0 - c)))
    sd["state"]["integral"] = (kp * p0 + bmin - beta0) / ki
    sd["state"]["beta"] = beta0
    pos.load_state_dict(sd)
    for d in deviations:
        bi, bp = inc.step(c + d), pos.step(c + d)
        assert bmin < bi < bmax  # unsaturated by construction: |Δβ| ≤ Kp + 5·Ki per step
        assert bi == pytest.approx(bp, rel=1e-10, abs=1e-9)


def test_positional_and_incremental_pi_differ_under_saturation():
    # A KL held far below the set point drives both to the lower clamp.  The incremental state is the
    # clamped β, so it sits exactly on β_min; the positional PI freezes its integral as soon as a step would
    # push the unclamped β past β_min, so it stops a little above it (by less than Ki·e).  Neither winds up:
    # once the error reverses both rise on the very next step, and since both then follow the same
    # increments, they stay apart by exactly the positional offset at the clamp.
    kp, ki, c, beta0, y0 = 0.5, 0.01, 10.0, 1.234, 0.0
    inc = IncrementalPI(kp, ki, c, beta0=beta0, beta_min=0.0, y0=y0)
    pos = PositionalPI(kp, ki, c, beta_min=0.0, y0=y0)
    sd = pos.state_dict()  # same initial state as in the coincidence test above
    sd["state"].update(integral=(kp / (1 + math.exp(c - y0)) - beta0) / ki, beta=beta0)
    pos.load_state_dict(sd)
    low, high = [y0] * 200, [12.0] * 5
    bi = [inc.step(m) for m in low + high]
    bp = [pos.step(m) for m in low + high]
    n_free = int(beta0 / (ki * c))  # steps before the clamp: they coincide there
    np.testing.assert_allclose(bi[:n_free], bp[:n_free], rtol=1e-10)
    assert bi[199] == 0.0
    offset = bp[199]
    assert 0.0 < offset <= ki * c
    assert all(b > a for a, b in zip(bi[199:], bi[200:])) and all(b > a for a, b in zip(bp[199:], bp[200:]))
    np.testing.assert_allclose(np.subtract(bp[200:], bi[200:]), offset, rtol=1e-9)
    # Without anti-windup the integral would have grown by 200·e = 2000 and β would stay at the clamp.
    assert abs(pos.state_dict()["state"]["integral"]) < 100


# ----------------------------------------------------------------------------- official DynamicVAE code


class OfficialPI:
    """Transcription of the official DynamicVAE PI update (Ki_code = −Ki)."""

    def __init__(self, kp, ki, beta0, w_min=0.1):
        self.kp, self.ki_code, self.w_min = kp, -ki, w_min
        self.W_k1, self.e_k1 = beta0, 0.0

    def pid(self, exp_kl, kl):
        error_k = exp_kl - kl
        dP = self.kp * (1.0 / (1.0 + math.exp(error_k)) - 1.0 / (1.0 + math.exp(self.e_k1)))
        dI = self.ki_code * error_k
        if self.W_k1 < self.w_min:
            dI = 0
        Wk = self.W_k1 + dP + dI
        self.W_k1 = Wk
        self.e_k1 = error_k
        return max(Wk, self.w_min)


@given(
    kp=st.floats(0.0, 0.05),
    ki=st.floats(0.0, 0.05),
    beta0=st.floats(0.0, 200.0),
    kls=st.lists(st.floats(0.0, 60.0), min_size=1, max_size=80),
)
def test_official_mode_matches_official_code(kp, ki, beta0, kls):
    off = OfficialPI(kp, ki, beta0)
    ours = IncrementalPI(kp, ki, 20.0, beta0=beta0, beta_min=0.1, anti_windup="official")
    # The official first P-difference uses e_k1 = 0, i.e. σ(0) = 0.5 as "previous" value.
    assert ours.state_dict()["state"]["p_prev"] == 0.5
    for kl in kls:
        assert ours.step(kl) == pytest.approx(off.pid(20.0, kl), rel=1e-12, abs=1e-12)


def test_official_mode_reaches_below_beta_min_state():
    # Long stretches below the set point drive the official (unclamped) state below β_min, where the I-term
    # freezes; the transcription must agree there too.
    off = OfficialPI(0.01, 0.005, 1.0)
    ours = IncrementalPI(0.01, 0.005, 20.0, beta0=1.0, beta_min=0.1, anti_windup="official")
    kls = [5.0] * 300 + [25.0] * 300 + [19.0] * 100
    got, ref, frozen = [], [], 0
    for k in kls:
        frozen += ours.state_dict()["state"]["integrator"] < 0.1
        got.append(ours.step(k))
        ref.append(off.pid(20.0, k))
    assert frozen > 10 and min(got) == 0.1
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_paper_presets():
    c = IncrementalPI.dynamicvae_dsprites()
    assert c.gains["kp"] == 0.01 and c.gains["ki"] == 0.005 and c.beta == 150.0 and c.filter.window == 5
    o = IncrementalPI.dynamicvae_dsprites(official=True)
    assert o.anti_windup == "official" and o.gains["beta_min"] == 0.1
    b = CapacityRamp.burgess_dsprites()
    assert b.gains["gamma"] == 1000.0 and b.setpoint(100_000) == 25.0 and b.setpoint(50_000) == 12.5


def test_beta_norm_helpers():
    assert beta_norm(4.0, 10, 4096) == pytest.approx(40 / 4096)
    assert beta_from_norm(beta_norm(4.0, 10, 4096), 10, 4096) == pytest.approx(4.0)
    assert FixedBeta.from_norm(beta_norm(4.0, 10, 4096), 10, 4096).beta == pytest.approx(4.0)
    with pytest.raises(ValueError, match="latent_dim"):
        beta_norm(1.0, 0, 4096)


# ----------------------------------------------------------------------------- capacity relay in torch


def test_capacity_relay_gradients_equal_capacity_objective():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    x = torch.randn(8, 6, dtype=torch.float32)
    gamma = 1000.0
    for c in (0.0, 0.3, 5.0):  # KL above and below the capacity
        ctrl = CapacityRamp(gamma, c)

        def kl_of():
            mu = model(x)
            return 0.5 * (mu**2).sum(dim=1).mean()

        model.zero_grad()
        (gamma * (kl_of() - c).abs()).backward()
        g_obj = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        kl = kl_of()
        beta = ctrl.step(kl.detach())
        assert torch.is_tensor(beta) and beta.item() == gamma * math.copysign(1.0, kl.item() - c)
        (beta * kl).backward()
        for a, b in zip(g_obj, (p.grad for p in model.parameters())):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- torch paths


@pytest.fixture
def no_host_sync(monkeypatch):
    """Make every host-synchronising tensor conversion raise."""

    def boom(*a, **k):
        raise AssertionError("host sync in a per-step path")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_steps_without_host_sync(kind, dtype, request):
    cfg = dict(kind=kind, kp=[0.01, 0.02], ki=[0.005, 0.001], c=20.0, beta0=[100.0, 50.0], bmin=[0.1, 0.0],
               bmax=[math.inf, 80.0], filter=("ma", 3), y0=1.0)
    ref = build(cfg)
    ctrl = build(cfg)
    kls = [[5.0, 30.0], [25.0, 10.0], [19.0, 21.0]]
    request.getfixturevalue("no_host_sync")
    outs = [ctrl.step(torch.tensor(k, dtype=dtype)) for k in kls]
    for out in outs:
        assert torch.is_tensor(out) and out.dtype == dtype and out.shape == (2,)
    assert torch.is_tensor(ctrl.beta)
    assert all(torch.is_tensor(v) for k, v in ctrl._state.items() if k != "filter")
    # ...and the same numbers as the NumPy path, to the tensor's precision (host syncs allowed again to compare).
    request.getfixturevalue("monkeypatch").undo()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for k, out in zip(kls, outs):
        np.testing.assert_allclose(out.double().numpy(), ref.step(np.asarray(k)), rtol=tol)


@given(cfg_and_kls())
def test_torch_float64_equals_numpy(args):
    cfg, kls = args
    a, b = build(clean(cfg)), build(clean(cfg))
    for kl in kls:
        bn = a.step(np.asarray(kl))
        bt = b.step(torch.tensor(kl, dtype=torch.float64))
        np.testing.assert_allclose(bt.detach().numpy(), bn, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_numpy(dtype):
    a = IncrementalPI(0.01, 0.005, 20.0, beta0=100.0, filter=5)
    b = IncrementalPI(0.01, 0.005, 20.0, beta0=100.0, filter=5)
    for k in np.linspace(0, 40, 50):
        bn, bt = a.step(k), b.step(torch.tensor(k, dtype=dtype))
        assert float(bt) == pytest.approx(bn, rel=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_torch_nonfinite_kl_masks_update_and_check_raises(bad):
    ctrl = PositionalPI(0.01, 0.005, 20.0, filter=2)
    ctrl.step(torch.tensor(3.0))
    before = {k: (v.clone() if torch.is_tensor(v) else tuple(x.clone() for x in v)) for k, v in ctrl._state.items()}
    ctrl.check()  # nothing bad yet
    beta = ctrl.step(torch.tensor(bad))
    assert torch.isfinite(beta)
    for k, v in ctrl._state.items():
        if k == "filter":
            assert all(torch.equal(x, y) for x, y in zip(v, before[k]))
        else:
            assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="NaN or infinite"):
        ctrl.check()
    ctrl.check()  # flag cleared
    ctrl.step(torch.tensor(4.0))


def test_torch_nan_in_one_loop_masks_only_that_loop():
    ctrl = IncrementalPI([0.01, 0.02, 0.03], 0.005, 20.0, beta0=100.0, filter=2)
    ref = [IncrementalPI(kp, 0.005, 20.0, beta0=100.0, filter=2) for kp in (0.01, 0.02, 0.03)]
    ctrl.step(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    for r, k in zip(ref, (1.0, 2.0, 3.0)):
        r.step(k)
    b = ctrl.beta.clone()
    ctrl.step(torch.tensor([math.nan, 2.5, math.inf], dtype=torch.float64))
    ref[1].step(2.5)
    assert ctrl.beta[0] == b[0] and ctrl.beta[2] == b[2]  # masked loops keep their state
    assert float(ctrl.beta[1]) == pytest.approx(ref[1].beta, rel=1e-12)  # the good loop is updated
    assert ctrl.beta[1] != b[1]
    np.testing.assert_array_equal(ctrl.steps_taken, [1, 2, 1])  # a masked step does not count
    assert ctrl.state_dict()["t"] == 2  # the set-point clock counts every call
    with pytest.raises(ValueError, match=r"loop\(s\) \[0, 2\]"):
        ctrl.check()
    ctrl.check()
    # later steps of the masked loops continue from their last good state, like a loop that never saw the NaN
    ctrl.step(torch.tensor([4.0, 4.0, 4.0], dtype=torch.float64))
    ref[0].step(4.0)
    ref[1].step(4.0)
    assert float(ctrl.beta[0]) == pytest.approx(ref[0].beta, rel=1e-12)
    assert float(ctrl.beta[1]) == pytest.approx(ref[1].beta, rel=1e-12)


def test_torch_masked_step_does_not_advance_steps_taken_and_round_trips():
    ctrl = PositionalPI(0.01, 0.005, 20.0)
    ctrl.step(torch.tensor(3.0))
    ctrl.step(torch.tensor(math.nan))
    ctrl.step(torch.tensor(4.0))
    assert ctrl.steps_taken == 2
    buf = io.BytesIO()
    torch.save(ctrl.state_dict(), buf)
    buf.seek(0)
    other = PositionalPI(0.01, 0.005, 20.0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.steps_taken == 2 and other.state_dict()["t"] == 3
    assert torch.equal(other.step(torch.tensor(5.0)), ctrl.step(torch.tensor(5.0)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_setpoint_callable_is_caught(bad):
    sp = lambda t: 20.0 if t < 2 else bad  # noqa: E731
    for kl in (lambda v: v, lambda v: np.asarray(v)):
        ctrl = IncrementalPI(0.01, 0.005, sp, beta0=50.0)
        ctrl.step(kl(1.0))
        ctrl.step(kl(1.0))
        snap = _snapshot(ctrl)
        with pytest.raises(ValueError, match=r"set point C\(2\) is NaN or infinite"):
            ctrl.step(kl(1.0))
        assert _snapshot(ctrl) == snap and ctrl.steps_taken == 2
    # torch KL, float set point: refused in step, before any change
    ctrl = IncrementalPI(0.01, 0.005, sp, beta0=50.0)
    ctrl.step(torch.tensor(1.0))
    ctrl.step(torch.tensor(1.0))
    beta = ctrl.beta
    with pytest.raises(ValueError, match="set point"):
        ctrl.step(torch.tensor(1.0))
    assert torch.equal(ctrl.beta, beta) and ctrl.steps_taken == 2
    # an array set point with one bad loop, and a set point that is NaN from the start: construction works,
    # the first step refuses (NumPy, and torch before any change)
    for sp in (lambda t: np.array([20.0, bad]), lambda t: bad):
        for kl in (np.array([1.0, 1.0]), torch.tensor([1.0, 1.0], dtype=torch.float64)):
            ctrl = IncrementalPI([0.01, 0.02], 0.005, sp, beta0=50.0)
            with pytest.raises(ValueError, match=r"set point C\(0\) is NaN or infinite"):
                ctrl.step(kl)
            assert ctrl.steps_taken == 0 and np.array_equal(np.asarray(ctrl.beta), [50.0, 50.0])
    # a tensor set point is masked on the device (no sync) and reported by check()
    ctrl = IncrementalPI([0.01, 0.02], 0.005, 20.0, beta0=50.0)
    ctrl.step(torch.tensor([1.0, 1.0], dtype=torch.float64))
    ctrl.setpoint = as_setpoint(lambda t: torch.tensor([20.0, bad], dtype=torch.float64))
    before = ctrl.beta.clone()
    after = ctrl.step(torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert torch.isfinite(after).all() and after[1] == before[1] and after[0] != before[0]
    with pytest.raises(ValueError, match=r"set point\) was NaN or infinite in loop\(s\) \[1\]"):
        ctrl.check()


# ----------------------------------------------------------------------------- bad input


def _snapshot(ctrl):
    return json.dumps(ctrl.state_dict())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_kl_raises_and_keeps_state(kind, bad):
    cfg = dict(kind=kind, kp=0.01, ki=0.005, c=20.0, beta0=10.0, bmin=0.0, bmax=math.inf, filter=("ma", 3), y0=0.0)
    ctrl = build(cfg)
    ctrl.step(3.0)
    snap = _snapshot(ctrl)
    with pytest.raises(ValueError, match="KL measurement is NaN or infinite"):
        ctrl.step(bad)
    assert _snapshot(ctrl) == snap
    vec = build({**cfg, "kp": [0.01, 0.02]})
    vec.step(np.array([1.0, 2.0]))
    snap = _snapshot(vec)
    with pytest.raises(ValueError, match=r"loop indices \[1\]"):
        vec.step(np.array([1.0, bad]))
    assert _snapshot(vec) == snap


def test_must_hold_positional_nan():
    ctrl = PositionalPI(kp=0.01, ki=0.005, setpoint=20.0, beta_min=0.0)
    snap, beta = _snapshot(ctrl), ctrl.beta
    with pytest.raises(ValueError, match="NaN"):
        ctrl.step(float("nan"))
    assert _snapshot(ctrl) == snap and ctrl.beta == beta and ctrl.steps_taken == 0


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: IncrementalPI(0.01, 0.005, 20.0, beta_min=2.0, beta_max=1.0), "beta_min"),
        (lambda: PositionalPI(0.01, 0.005, 20.0, beta_min=2.0, beta_max=1.0), "beta_min"),
        (lambda: CapacityRamp(1.0, 5.0, beta_min=2.0, beta_max=1.0), "beta_min"),
        (lambda: IncrementalPI(math.nan, 0.005, 20.0), "kp"),
        (lambda: IncrementalPI(0.01, math.inf, 20.0), "ki"),
        (lambda: PositionalPI(0.01, [0.1, math.nan], 20.0), "ki"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, beta0=math.inf), "beta0"),
        (lambda: CapacityRamp(math.nan, 5.0), "gamma"),
        (lambda: FixedBeta(math.inf), "beta"),
        (lambda: IncrementalPI(np.ones((2, 2)), 0.005, 20.0), "kp"),
        (lambda: PositionalPI(0.01, np.ones((3, 1)), 20.0), "ki"),
        (lambda: IncrementalPI([0.01, 0.02], [0.1, 0.2, 0.3], 20.0), "same length"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, anti_windup="bogus"), "anti_windup"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, filter=0), "window"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, filter=2.5), "window"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, filter="x"), "filter"),
        (lambda: IncrementalPI(0.01, 0.005, 20.0, y0=math.nan), "y0"),
        (lambda: IncrementalPI(0.01, 0.005, math.nan), "set point"),
        (lambda: IncrementalPI(0.01, 0.005, None), "setpoint"),
        (lambda: PositionalPI(0.01, 0.005, 20.0, beta_min=math.nan), "beta_min"),
    ],
)
def test_bad_parameters_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_kl_of_wrong_shape_raises_and_keeps_state():
    ctrl = IncrementalPI([0.01, 0.02, 0.03], 0.005, 20.0)
    snap = _snapshot(ctrl)
    for bad in (np.ones(2), np.ones((3, 1)), "abc", torch.ones(2)):
        with pytest.raises(ValueError, match="KL measurement"):
            ctrl.step(bad)
        assert _snapshot(ctrl) == snap


def test_load_state_dict_validates_before_changing():
    a = IncrementalPI(0.01, 0.005, 20.0, filter=3)
    a.step(1.0)
    snap = _snapshot(a)
    bad = [
        PositionalPI(0.01, 0.005, 20.0, filter=3).state_dict(),
        IncrementalPI(0.01, 0.005, 20.0, filter=4).state_dict(),
        IncrementalPI([0.01, 0.02], 0.005, 20.0, filter=3).state_dict(),
        "not a dict",
    ]
    for sd in bad:
        with pytest.raises(ValueError):
            a.load_state_dict(sd)
        assert _snapshot(a) == snap


def _hostile_variants(sd):
    """(description, state dict) pairs that a controller must refuse, derived from a valid ``sd``."""
    def edit(f):
        d = json.loads(json.dumps(sd))
        f(d)
        return d

    yield "kp = inf", edit(lambda d: d["params"].__setitem__("kp", math.inf))
    yield "ki = nan", edit(lambda d: d["params"].__setitem__("ki", math.nan))
    yield "beta_min > beta_max", edit(lambda d: d["params"].update(beta_min=5.0, beta_max=1.0))
    yield "inf in the filter history", edit(lambda d: d["state"]["filter"].__setitem__(0, math.inf))
    yield "nan beta", edit(lambda d: d["state"].__setitem__("beta", math.nan))
    yield "t < 0", edit(lambda d: d.__setitem__("t", -5))
    yield "t a float", edit(lambda d: d.__setitem__("t", 2.5))
    yield "t a bool", edit(lambda d: d.__setitem__("t", True))
    yield "t a string", edit(lambda d: d.__setitem__("t", "3"))
    yield "y0 = nan", edit(lambda d: d.__setitem__("y0", math.nan))
    yield "y0 a string", edit(lambda d: d.__setitem__("y0", "0"))
    yield "beta a string", edit(lambda d: d["state"].__setitem__("beta", "big"))
    yield "beta a dict", edit(lambda d: d["state"].__setitem__("beta", {"a": 1}))
    yield "state a list", edit(lambda d: d.__setitem__("state", [1, 2]))
    yield "params a list", edit(lambda d: d.__setitem__("params", [0.01]))
    yield "filter a number", edit(lambda d: d["state"].__setitem__("filter", 3.0))
    yield "missing t", edit(lambda d: d.pop("t"))
    yield "missing params", edit(lambda d: d.pop("params"))
    yield "two loops of state", edit(lambda d: d["state"].__setitem__("beta", [1.0, 2.0]))
    yield "2-D state", edit(lambda d: d["state"].update({k: [[1.0]] for k in d["state"] if k != "filter"}))
    yield "negative skipped", edit(lambda d: d.__setitem__("skipped", -1))
    yield "skipped > t", edit(lambda d: d.__setitem__("skipped", 10**6))
    mixed = edit(lambda d: None)
    mixed["state"]["beta"] = torch.tensor(1.0, dtype=torch.float64)
    yield "torch and numbers mixed", mixed
    integer = edit(lambda d: None)
    integer["state"] = {k: ([torch.tensor(1)] * len(v) if k == "filter" else torch.tensor(1)) for k, v in sd["state"].items()}
    yield "integer tensors", integer
    yield "inf tensor", dict(sd, state={k: ([torch.tensor(math.inf)] * len(v) if k == "filter" else torch.tensor(1.0))
                                         for k, v in sd["state"].items()})


def test_load_state_dict_validates_like_the_constructor():
    for make in (lambda: IncrementalPI(0.01, 0.005, 20.0, beta0=50.0, filter=3),
                 lambda: PositionalPI(0.01, 0.005, 20.0, filter=3)):
        a = make()
        a.step(1.0)
        a.step(2.0)
        snap = _snapshot(a)
        for what, sd in _hostile_variants(a.state_dict()):
            with pytest.raises(ValueError, match="state dict|must be|beta_min"):
                a.load_state_dict(sd)
            assert _snapshot(a) == snap, what
    # PositionalPI's β_min is the law's offset: finite, as its constructor demands (on load and in replace)
    p = PositionalPI(0.01, 0.005, 20.0)
    sd = p.state_dict()
    sd["params"]["beta_min"] = -math.inf
    with pytest.raises(ValueError, match="beta_min must be finite"):
        p.load_state_dict(sd)
    with pytest.raises(ValueError, match="beta_min must be finite"):
        p.replace(beta_min=-math.inf)


_LEAVES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20), st.booleans(),
                    st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=3), st.just({}),
                    st.just([[1.0]]))


@given(kind=st.sampled_from(KINDS), steps=st.lists(st.floats(0.0, 40.0), max_size=5), data=st.data())
def test_load_state_dict_hostile_dicts_round_trip_or_refuse(kind, steps, data):
    cfg = dict(kind=kind, kp=0.01, ki=0.005, c=20.0, beta0=10.0, bmin=0.0, bmax=100.0, filter=("ma", 3), y0=0.0)
    a = build(cfg)
    for kl in steps:
        a.step(kl)
    sd = json.loads(json.dumps(a.state_dict()))
    # replace one leaf (a top-level entry, a state entry, a filter sample or a parameter) by a hostile value
    where = data.draw(st.sampled_from(["t", "y0", "skipped"] + [f"state.{k}" for k in sd["state"] if k != "filter"]
                                      + [f"filter.{i}" for i in range(len(sd["state"]["filter"]))]
                                      + [f"params.{k}" for k in sd["params"]]))
    value = data.draw(_LEAVES)
    head, _, tail = where.partition(".")
    if head == "state":
        sd["state"][tail] = value
    elif head == "filter":
        sd["state"]["filter"][int(tail)] = value
    elif head == "params":
        sd["params"][tail] = value
    else:
        sd[head] = value
    b = build(cfg)
    snap = _snapshot(b)
    try:
        b.load_state_dict(sd)
    except ValueError:
        assert _snapshot(b) == snap  # refused: unchanged
        return
    # accepted: the state is valid and round-trips exactly
    again = build(cfg)
    again.load_state_dict(b.state_dict())
    assert _snapshot(again) == _snapshot(b)
    state = b.state_dict()
    assert all(math.isfinite(v) for v in np.ravel(state["state"]["beta"]))
    assert isinstance(state["t"], int) and state["t"] >= 0
    assert np.all(np.isfinite(b.step(1.0)))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(PRESETS)), factor=st.floats(-1e300, 1e300), steps=st.integers(0, 4))
def test_load_state_dict_keeps_beta_within_the_controllers_own_clamps(name, factor, steps):
    from klcontrol.registry import make_preset

    a = make_preset(name)
    for _ in range(steps):
        a.step(3.0)
    sd = a.state_dict()
    lo, hi = a._state_limits(a._params)["beta"]
    sd["state"]["beta"] = factor
    b = make_preset(name)
    snap = _snapshot(b)
    inside = bool(np.all(lo - 1e-6 * np.maximum(1.0, np.abs(lo)) <= factor)
                  and np.all(factor <= hi + 1e-6 * np.maximum(1.0, np.abs(hi))))
    if inside:
        b.load_state_dict(sd)
        assert float(np.ravel(b.state_dict()["state"]["beta"])[0]) == factor
    else:
        with pytest.raises(ValueError, match=r"state dict beta = .* is outside \[.*\], the range this controller can"):
            b.load_state_dict(sd)
        assert _snapshot(b) == snap


def test_load_state_dict_refuses_clamps_widened_by_the_dict():
    a = IncrementalPI(0.01, 0.005, 20.0, beta0=10.0, beta_min=1.0, beta_max=100.0)
    sd = a.state_dict()
    sd["params"]["beta_max"] = 1e300
    sd["state"]["beta"] = 1e200  # inside the dict's clamps, outside the controller's own
    snap = _snapshot(a)
    with pytest.raises(ValueError, match=r"beta = 1e\+200 is outside \[1, 100\]"):
        a.load_state_dict(sd)
    assert _snapshot(a) == snap
    torch_sd = a.state_dict()
    torch_sd["state"] = {k: (v if k == "filter" else torch.tensor(float(v), dtype=torch.float32))
                         for k, v in torch_sd["state"].items()}
    torch_sd["state"]["filter"] = [torch.tensor(float(x), dtype=torch.float32) for x in torch_sd["state"]["filter"]]
    torch_sd["state"]["beta"] = torch.tensor(100.0, dtype=torch.float32)  # at the clamp, in float32: accepted
    a.load_state_dict(torch_sd)
    torch_sd["state"]["p_prev"] = torch.tensor(1.5)
    with pytest.raises(ValueError, match=r"p_prev = 1.5 is outside \[0, 1\]"):
        a.load_state_dict(torch_sd)


def test_prime_and_reset():
    a = IncrementalPI(0.01, 0.005, 20.0, beta0=50.0, filter=3)
    a.prime(10.0)
    first = a.step(10.0)
    a.step(12.0)
    with pytest.raises(ValueError, match="prime"):
        a.prime(5.0)
    a.reset()
    assert a.steps_taken == 0 and a.beta == 50.0
    assert a.step(10.0) == first
    with pytest.raises(ValueError, match="y0"):
        IncrementalPI(0.01, 0.005, 20.0).prime(math.nan)


@given(cfg_and_kls(kinds=("incremental", "official", "positional")), st.floats(0.0, 3.0), st.floats(-0.5, 1.0))
def test_replace_equals_a_controller_built_with_the_new_gains(args, kp, ki):
    cfg, kls = args
    cfg = clean(cfg)
    ctrl = build(cfg)
    for y in kls[:3]:
        ctrl.step(y)  # replace() starts fresh whatever was stepped before
    shape = np.shape(cfg["kp"])
    new_kp, new_ki = np.full(shape, kp).tolist(), np.full(shape, ki).tolist()
    replaced = ctrl.replace(kp=new_kp, ki=new_ki)
    direct = build({**cfg, "kp": new_kp, "ki": new_ki})
    assert replaced.steps_taken == 0
    for y in kls:
        np.testing.assert_array_equal(replaced.step(y), direct.step(y))


def test_replace_setpoint_and_bad_changes_leave_the_original_untouched():
    ctrl = IncrementalPI.dynamicvae_dsprites()
    before = ctrl.state_dict()
    fast = ctrl.replace(setpoint=ctrl.setpoint.compressed(160.0))
    assert fast.setpoint(100) == pytest.approx(ctrl.setpoint(16_000))
    with pytest.raises(ValueError, match="has no parameter gamma; it has kp, ki"):
        ctrl.replace(gamma=3.0)
    with pytest.raises(ValueError, match="kp must have shape"):
        ctrl.replace(kp=[0.1, 0.2])
    with pytest.raises(ValueError, match="beta_min must be ≤ beta_max"):
        ctrl.replace(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="ki must be finite"):
        ctrl.replace(ki=math.nan)
    with pytest.raises(ValueError, match="needs a setpoint"):
        ctrl.replace(setpoint=None)
    assert json.dumps(ctrl.state_dict()) == json.dumps(before)
    assert FixedBeta(4.0).replace(beta=2.0).beta == 2.0


# ----------------------------------------------------------------------------- official loops, end to end
# The transcriptions of the official loops are in tests/official_loops.py.

OFFICIAL_ITERATIONS = 13_000  # two set-point ramps/jumps of each schedule


def official_kls(rng, n=OFFICIAL_ITERATIONS, sink=0):
    """A KL record that wanders around a rising set point: stretches below it (saturation), above, far above.

    ``sink``: the record starts with that many steps 4 nats below the set point (drives β to its clamp).
    """
    kl, t = np.empty(n), sink
    kl[:sink] = -4.0
    base = 0.5 + 0.15 * np.arange(n) / 5500.0
    while t < n:
        length = int(rng.integers(150, 2500))
        offset = rng.choice([-4.0, -1.5, -0.3, 0.0, 0.4, 2.0, 15.0])
        kl[t : t + length] = offset + rng.normal(0.0, rng.choice([0.05, 0.5, 2.0]), size=len(kl[t : t + length]))
        t += length
    return np.maximum(base + kl, 0.0)


def run_controller(ctrl, kls):
    """Step a controller with the KL of every forward pass (update 0's included); β per update."""
    return np.array([np.atleast_1d(ctrl.step(k)) for k in kls])


def test_dynamicvae_official_preset_reproduces_official_loop():
    kls = official_kls(np.random.default_rng(0))
    ref = dynamicvae_official_betas(kls)
    ours = run_controller(IncrementalPI.dynamicvae_dsprites(official=True), kls)[:, 0]
    assert np.max(np.abs(ours - ref)) < 1e-9
    assert np.ptp(ref) > 10
    # The check sees the set-point phase: klcontrol's own phase (2 calls later) is not the official one.
    lagging = IncrementalPI.dynamicvae_dsprites(official=True, setpoint=IncrementalPI.dynamicvae_dsprites().setpoint)
    assert np.max(np.abs(run_controller(lagging, kls)[:, 0] - ref)) > 1e-6


def test_controlvae_official_preset_reproduces_official_loop():
    kls = official_kls(np.random.default_rng(10), sink=300)
    ref = controlvae_official_betas(kls)
    ours = run_controller(PositionalPI.controlvae_dsprites(official=True), kls)[:, 0]
    assert np.max(np.abs(ours - ref)) < 1e-9
    assert np.sum(ref == 1.0) > 100 and np.sum(ref > 1.0) > 100  # saturated and not
    lagging = PositionalPI.controlvae_dsprites(official=True, setpoint=PositionalPI.controlvae_dsprites().setpoint)
    assert np.max(np.abs(run_controller(lagging, kls)[:, 0] - ref)) > 1e-6


def test_official_presets_with_arrays_of_gains_reproduce_official_loops():
    # With the official gains DynamicVAE's β cannot fall from 50 to its clamp within 13 000 iterations
    # (KL ≥ 0 lowers it by at most 0.005·C per step); larger Ki make every loop saturate, freeze and recover.
    rng = np.random.default_rng(7)
    kp = np.array([0.01, 0.05, 0.5, 2.0])
    ki_dyn, ki_ctl = np.array([0.005, 0.05, 0.1, 0.2]), np.array([0.001, 0.01, 0.0005, 0.002])
    kls = np.stack([official_kls(rng, sink=sink) for sink in (0, 2600, 600, 400)], axis=1)
    dyn = run_controller(IncrementalPI.dynamicvae_dsprites(official=True, kp=kp, ki=ki_dyn), kls)
    ctl = run_controller(PositionalPI.controlvae_dsprites(official=True, kp=kp, ki=ki_ctl), kls)
    ref_dyn = np.stack([dynamicvae_official_betas(kls[:, j], kp[j], -ki_dyn[j]) for j in range(len(kp))], axis=1)
    ref_ctl = np.stack([controlvae_official_betas(kls[:, j], kp[j], -ki_ctl[j]) for j in range(len(kp))], axis=1)
    assert np.max(np.abs(dyn - ref_dyn)) < 1e-9
    assert np.max(np.abs(ctl - ref_ctl)) < 1e-9
    assert np.sum(ref_dyn == 0.1) > 100 and np.sum((ref_dyn > 0.1) & (ref_dyn < 1)) > 100
    assert np.sum(ref_ctl == 1.0) > 100 and np.sum(ref_ctl > 1.0) > 100


def test_official_presets_on_torch_match_official_loops():
    kls = official_kls(np.random.default_rng(3), n=800, sink=200)
    for make, ref_fn, ki in ((IncrementalPI.dynamicvae_dsprites, dynamicvae_official_betas, 0.2),
                             (PositionalPI.controlvae_dsprites, controlvae_official_betas, 0.001)):
        ctrl = make(official=True, ki=ki)
        got = torch.stack([ctrl.step(torch.tensor(k, dtype=torch.float64)) for k in kls]).numpy()
        np.testing.assert_allclose(got, ref_fn(kls, 0.01, -ki), rtol=0, atol=1e-9)


def test_official_setpoint_phase():
    # Call t of the official loops sees C(t + 2) of klcontrol's schedules: ControlVAE's jump lands on call 4999.
    ctl = PositionalPI.controlvae_dsprites(official=True).setpoint
    assert ctl(4998) == 0.5 and ctl(4999) == pytest.approx(0.65) and ctl(9999) == pytest.approx(0.8)
    dyn = IncrementalPI.dynamicvae_dsprites(official=True).setpoint
    assert dyn(5998) == 0.5 and dyn(5999) == pytest.approx(0.5 + 0.15 / 1000) and dyn(6998) == pytest.approx(0.65)
    assert "shift(-2)" in repr(dyn) and dyn.to_dict()["steps"] == -2


def test_paper_and_official_presets_are_apart():
    paper, official = IncrementalPI.dynamicvae_dsprites(), IncrementalPI.dynamicvae_dsprites(official=True)
    assert paper.beta == 150.0 and official.beta == 50.0  # paper Appendix A vs I_PID.py's W_k1
    assert paper.anti_windup == "clamp" and official.gains["beta_min"] == 0.1
    ctl, ctl_off = PositionalPI.controlvae_dsprites(), PositionalPI.controlvae_dsprites(official=True)
    assert ctl.anti_windup == "conditional" and ctl_off.anti_windup == "official"
    assert ctl.gains["kp"] == 0.01 and ctl.gains["ki"] == 0.001 and ctl.gains["beta_min"] == 1.0
    assert "anti_windup='official'" in repr(ctl_off) and "anti_windup" not in repr(ctl)
    with pytest.raises(ValueError, match="anti_windup"):
        PositionalPI(0.01, 0.001, 1.0, anti_windup="clamp")


# ----------------------------------------------------------------------------- the official lock-up


@pytest.mark.parametrize("make, c, bmin", [(IncrementalPI.dynamicvae_dsprites, 20.0, 0.1),
                                          (PositionalPI.controlvae_dsprites, 18.0, 1.0)])
def test_official_controllers_lock_below_beta_min_and_klcontrol_defaults_do_not(make, c, bmin):
    # Official gains (Kp = 0.01), a set point the KL falls far below: one step takes the official unclamped
    # state more than Kp under β_min.  From then on its I-term is frozen for good, and the P-term alone
    # (which moves the state by at most Kp) cannot lift it back: β stays at β_min whatever the KL.
    kp = 0.01
    below, above = [0.0] * 50, [60.0] * 1500  # KL far below C, then far above it
    off = make(official=True, setpoint=c, beta0=bmin + 0.05)
    b_below = run_controller(off, below)[:, 0]
    state = float(off.state["integrator" if "integrator" in off.state else "raw"])
    assert state < bmin - kp and np.all(b_below == bmin)
    b_above = run_controller(off, above)[:, 0]
    assert np.all(b_above == bmin)  # locked although a live integrator would raise β by Ki·40 nats per step
    assert float(off.state["integrator" if "integrator" in off.state else "raw"]) < bmin
    ours = make(setpoint=c, beta0=bmin + 0.05, beta_min=bmin)  # klcontrol's default anti-windup
    b_ours = run_controller(ours, below + above)[:, 0]
    assert b_ours[len(below) - 1] == pytest.approx(bmin, abs=1e-6) and b_ours[-1] > bmin + 1  # resumes when the KL rises


@given(st.lists(st.tuples(st.floats(-50, 50), st.integers(1, 6)), min_size=1, max_size=6))
def test_scheduled_beta_follows_its_schedule_on_numpy_and_torch(parts):
    """β(t) = schedule(t) for t = 0, 1, …: the initial β and each step's output, whatever the KL."""
    from klcontrol import Constant, ScheduledBeta, Sequence

    sched = Sequence([(Constant(b), n) for b, n in parts[:-1]] + [(Constant(parts[-1][0]), None)])
    n = sum(h for _, h in parts) + 2
    expected = [sched(t) for t in range(n)]
    c = ScheduledBeta(sched)
    got = [c.beta] + [c.step(float(k % 3)) for k in range(n - 1)]
    assert got == expected
    c.reset()
    got_t = [c.beta] + [float(c.step(torch.tensor(1.5, dtype=torch.float64))) for _ in range(n - 1)]
    assert got_t == expected
    with pytest.raises(ValueError, match="NaN"):
        c.step(math.nan)


def test_scheduled_beta_bad_input():
    from klcontrol import ScheduledBeta

    with pytest.raises(ValueError, match="scalar"):
        ScheduledBeta(lambda t: np.array([1.0, 2.0]))


@pytest.mark.parametrize("preset", sorted(__import__("klcontrol.registry", fromlist=["PRESETS"]).PRESETS))
@settings(max_examples=15, deadline=None)
@given(kls=st.lists(st.floats(0.0, 60.0, allow_nan=False), min_size=1, max_size=40))
def test_a_float_measurement_steps_like_an_array_one(preset, kls):
    """Python floats take the one-loop fast path (a trainer on a CPU); it must agree with the array path."""
    from klcontrol.registry import make_preset

    fast, ref = make_preset(preset), make_preset(preset)
    fast.prime(kls[0])
    ref.prime(kls[0])
    for kl in kls:
        b_fast, b_ref = fast.step(float(kl)), ref.step(np.asarray(kl))
        assert type(b_fast) is float and b_fast == b_ref
    assert fast.steps_taken == ref.steps_taken
    for k, v in ref.state.items():
        if k == "filter":
            assert all(np.array_equal(a, b) for a, b in zip(fast.state[k], v))
        else:
            assert np.array_equal(fast.state[k], v), k
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast.step(float("nan"))
    assert fast.steps_taken == ref.steps_taken
