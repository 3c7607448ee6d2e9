"""Set points: official step-ramp schedule, paper preset, backends agree, composition."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from klcontrol import Constant, LinearRamp, Sequence, StepRamp
from klcontrol.setpoints import as_setpoint


def official_schedule(t, start, stop, step, period, ramp):
    """The official DynamicVAE annealing, written out: period 0 holds ``start``; period k ≥ 1 ramps by ``step``
    linearly over its first ``ramp`` steps, then holds; never above ``stop``."""
    level = start
    k, r = divmod(t, period)
    for _ in range(1, k):
        level += step  # completed earlier periods
    if k >= 1:
        level += step * min(r, ramp) / ramp
    return min(level, stop)


@given(
    start=st.floats(0.0, 5.0),
    span=st.floats(0.1, 10.0),
    step=st.floats(0.05, 2.0),
    period=st.integers(1, 50),
    ramp_frac=st.floats(0.0, 1.0),
)
def test_step_ramp_matches_official_schedule(start, span, step, period, ramp_frac):
    ramp = max(1, round(ramp_frac * period))
    sp = StepRamp(start, start + span, step, period, ramp)
    t = np.arange(0, period * (int(span / step) + 3))
    ref = np.array([official_schedule(int(i), start, start + span, step, period, ramp) for i in t])
    np.testing.assert_allclose(sp(t), ref, rtol=1e-12, atol=1e-9)
    assert sp(int(t[-1])) == pytest.approx(start + span)
    n = sp.total_steps
    assert sp(n) == pytest.approx(start + span, abs=1e-9) and sp(n - 1) < start + span - 1e-9


def test_paper_preset_reaches_20_at_total_steps():
    sp = StepRamp.dynamicvae_dsprites()
    n = sp.total_steps
    assert n == 130 * 6000 + 1000  # (20 − 0.5)/0.15 = 130 ramps; period 130 ends its ramp at 781 000
    assert sp(0) == 0.5 and sp(5999) == 0.5
    assert sp(6000 + 500) == pytest.approx(0.5 + 0.075)
    assert sp(6000 + 1000) == pytest.approx(0.65) and sp(11_999) == pytest.approx(0.65)
    assert sp(n) == pytest.approx(20.0) and sp(n - 1) < 20.0
    assert sp(n + 100_000) == 20.0


SCHEDULES = [
    Constant(3.0),
    LinearRamp(0.0, 25.0, 100, begin=10),
    StepRamp(0.5, 20.0, 0.15, 60, 10),
    Sequence([(Constant(1.0), 30), (LinearRamp(1.0, 5.0, 20), 40), (StepRamp(5.0, 9.0, 1.0, 10, 5), None)]),
    Constant(2.0) + LinearRamp(0.0, 1.0, 50) * 3.0,
    2.0 * StepRamp(0.5, 20.0, 0.15, 60, 10).shift(25),
]


@pytest.mark.parametrize("sp", SCHEDULES, ids=lambda s: type(s).__name__)
def test_scalar_numpy_torch_agree(sp):
    t = np.arange(0, 400)
    scalar = np.array([sp(int(i)) for i in t])
    assert all(isinstance(sp(int(i)), float) for i in t[:3])
    np.testing.assert_allclose(sp(t), scalar, rtol=0, atol=1e-12)
    for dtype in (torch.int64, torch.float64):
        tt = sp(torch.as_tensor(t, dtype=dtype))
        assert torch.is_tensor(tt)
        np.testing.assert_allclose(tt.numpy(), scalar, rtol=0, atol=1e-12)


def test_composition():
    a, b = LinearRamp(0.0, 10.0, 10), Constant(1.0)
    t = np.arange(30)
    np.testing.assert_allclose((a + b)(t), a(t) + 1.0)
    np.testing.assert_allclose((a + 2.0)(t), a(t) + 2.0)
    np.testing.assert_allclose((3.0 * a)(t), 3.0 * a(t))
    sh = a.shift(5)
    np.testing.assert_allclose(sh(t), np.where(t < 5, 0.0, a(np.maximum(t - 5, 0))))
    seq = Sequence([(b, 5), (a, None)])
    np.testing.assert_allclose(seq(t), np.where(t < 5, 1.0, a(np.maximum(t - 5, 0))))
    seq3 = Sequence([(1.0, 3), (2.0, 3), (3.0, None)])
    assert [seq3(i) for i in range(8)] == [1, 1, 1, 2, 2, 2, 3, 3]


def test_as_setpoint_and_callable():
    assert isinstance(as_setpoint(4.0), Constant)
    f = as_setpoint(lambda t: 2 * t)
    assert f(3) == 6
    assert LinearRamp(0, 1, 4).to_dict()["kind"] == "LinearRamp"


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Constant(math.nan), "set point"),
        (lambda: LinearRamp(0, math.inf, 10), "stop"),
        (lambda: LinearRamp(0, 1, 0), "steps"),
        (lambda: StepRamp(5, 1, 0.1, 10, 5), "stop"),
        (lambda: StepRamp(0, 1, 0.0, 10, 5), "step"),
        (lambda: StepRamp(0, 1, 0.1, 10, 11), "ramp"),
        (lambda: StepRamp(0, 1, 0.1, 0, 1), "period"),
        (lambda: Sequence([]), "at least one"),
        (lambda: Sequence([(1.0, None), (2.0, 5)]), "last part"),
        (lambda: Sequence([(1.0, 0), (2.0, None)]), "length"),
        (lambda: Constant(1.0) * math.nan, "scale"),
    ],
)
def test_bad_parameters(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@given(factor=st.integers(1, 500), t=st.integers(0, 10_000))
def test_compressed_runs_the_schedule_faster(factor, t):
    sp = StepRamp.dynamicvae_dsprites()
    fast = sp.compressed(factor)
    assert fast(t) == pytest.approx(official_schedule(t * factor, 0.5, 20.0, 0.15, 6000, 1000), abs=1e-9)
    steps = np.arange(0, 50)
    np.testing.assert_allclose(fast(steps), [fast(int(s)) for s in steps])
    assert float(fast(torch.tensor(t))) == pytest.approx(fast(t))


def test_compressed_describes_itself_and_rejects_bad_factors():
    fast = LinearRamp(0.0, 25.0, 100_000).compressed(20)
    assert fast(5000) == pytest.approx(25.0) and fast(2500) == pytest.approx(12.5)
    assert fast.to_dict() == {"kind": "Compressed", "factor": 20.0, "of": LinearRamp(0.0, 25.0, 100_000).to_dict()}
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="compression factor"):
            Constant(1.0).compressed(bad)
