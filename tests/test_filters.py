"""Measurement filters: moving average / EMA against NumPy, validation, composition with every controller."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klcontrol import CapacityRamp, ExponentialAverage, FixedBeta, IncrementalPI, MovingAverage, PositionalPI
from klcontrol.filters import Filter, as_filter


@given(ys=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50), window=st.integers(1, 9), y0=st.floats(-5, 5))
def test_moving_average_equals_convolution_with_y0_padding(ys, window, y0):
    got = MovingAverage(window).filter_series(ys, y0=y0)
    ref = np.convolve(np.concatenate([np.full(window - 1, y0), ys]), np.ones(window) / window, mode="valid")
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


@given(ys=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50), alpha=st.floats(0.01, 1.0), y0=st.floats(-5, 5))
def test_exponential_average_is_first_order_recursion(ys, alpha, y0):
    # Closed form: m(t) = (1−α)^(t+1)·y0 + Σ_s α(1−α)^(t−s)·y(s).
    got = ExponentialAverage(alpha).filter_series(ys, y0=y0)
    t = np.arange(len(ys))
    lag = t[:, None] - t[None, :]
    w = np.where(lag >= 0, alpha * (1 - alpha) ** np.maximum(lag, 0), 0.0)
    ref = (1 - alpha) ** (t + 1) * y0 + w @ np.asarray(ys)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_filter_series_vectorised_time_first():
    ys = np.arange(12.0).reshape(6, 2)
    got = MovingAverage(3).filter_series(ys, y0=1.0)
    for j in range(2):
        np.testing.assert_allclose(got[:, j], MovingAverage(3).filter_series(ys[:, j], y0=1.0))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "x", None, math.inf, math.nan])
def test_moving_average_rejects_bad_window(bad):
    with pytest.raises(ValueError, match="window"):
        MovingAverage(bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, math.nan])
def test_ema_rejects_bad_alpha(bad):
    with pytest.raises(ValueError, match="alpha"):
        ExponentialAverage(bad)


def test_as_filter():
    assert as_filter(None).window == 1 and as_filter(4).window == 4
    f = ExponentialAverage(0.5)
    assert as_filter(f) is f and isinstance(f, Filter)
    assert MovingAverage(3).to_dict() == {"kind": "moving_average", "window": 3}
    with pytest.raises(ValueError, match="filter"):
        as_filter([1, 2])


MAKERS = {
    "incremental": lambda f: IncrementalPI(0.05, 0.01, 10.0, beta0=20.0, filter=f, y0=2.0),
    "official": lambda f: IncrementalPI(0.05, 0.01, 10.0, beta0=20.0, beta_min=0.1, anti_windup="official",
                                        filter=f, y0=2.0),
    "positional": lambda f: PositionalPI(0.05, 0.01, 10.0, filter=f, y0=2.0),
    "capacity": lambda f: CapacityRamp(3.0, 10.0, filter=f, y0=2.0),
    "fixed": lambda f: FixedBeta(4.0, filter=f, y0=2.0),
}


@pytest.mark.parametrize("filt", [MovingAverage(4), ExponentialAverage(0.2)], ids=["ma4", "ema"])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_any_filter_composes_with_any_controller(kind, filt):
    # A filtered controller fed raw KL equals an unfiltered one fed the filtered series.
    ys = np.random.default_rng(0).uniform(0, 20, 40)
    filtered = MAKERS[kind](filt)
    plain = MAKERS[kind](None)
    # Make the unfiltered controller's "previous measurement" the filtered y0 (which is y0 itself).
    m = filt.filter_series(ys, y0=2.0)
    for y, mi in zip(ys, m):
        assert filtered.step(y) == pytest.approx(plain.step(mi), rel=1e-12, abs=1e-12)
    assert filtered.filter is filt
