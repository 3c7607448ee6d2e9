"""The compiled stability maps (analysis/stability/kernels.py) against numpy.roots and the NumPy paths."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol.analysis.stability import kernels
from klcontrol.analysis.stability import numeric as sn
from klcontrol.analysis.stability.codegen import coefficient_functions

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")


def _roots_rho(kp, ki, a, gp, T, d):
    """Spectral radius from numpy.roots of the λ-polynomial (the generated ``l`` code), one point at a time."""
    lf = coefficient_functions("incremental", T, d)[3]
    return np.array([np.max(np.abs(np.roots([float(c) for c in lf(p, i, a, gp)]))) for p, i in zip(kp, ki)])


def _numpy_paths(monkeypatch):
    """Force the NumPy paths (the kernels' reference)."""
    monkeypatch.setattr(kernels, "MIN_POINTS", 1 << 62)
    monkeypatch.setattr(kernels, "_MODS", {})


configs = st.sampled_from([(1, 1), (5, 0), (5, 1), (8, 1)])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(configs, st.floats(-4, 0), st.floats(-3.0, -0.1), st.integers(0, 2**31 - 1))
def test_kernels_agree_with_numpy_roots_away_from_the_unit_circle(cfg, log_a, gp, seed):
    T, d = cfg
    a = 10.0 ** log_a
    rng = np.random.default_rng(seed)
    n = 400
    kp, ki = rng.uniform(-0.5, 3.0, n) / (a * abs(gp)) ** 0.5, rng.uniform(-0.05, 1.0, n)
    af = coefficient_functions("incremental", T, d)[4](a, gp)
    stable = kernels.stable_map(af[0:3], kp, ki, n)
    rho, flag = kernels.radius_map(af[3:6], af[6:9], kp, ki, n)
    ref = _roots_rho(kp, ki, a, gp, T, d)
    far = np.abs(ref - 1) > 1e-6
    assert np.array_equal(stable[far], ref[far] < 1)
    ok = ~flag & np.isfinite(ref)
    assert np.allclose(rho[ok], ref[ok], rtol=1e-7, atol=0), np.max(np.abs(rho[ok] - ref[ok]) / ref[ok])


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (5, 0), (5, 1), (8, 1)])
def test_maps_equal_the_numpy_paths(T, d, monkeypatch):
    """The public maps through the kernels (large maps, any broadcast of the plant) = the NumPy paths, verdict
    for verdict (same test, same order of operations) and radius to rounding."""
    a, gp = 1 / 2500, -3.2
    kp, ki = np.meshgrid(np.linspace(-0.3125, 0.625, 300), np.linspace(0.0, 0.625, 300))
    plant_a = np.where(np.arange(kp.size).reshape(kp.shape) % 2 == 0, a, 0.05)  # per-point plant rows too
    fast = [sn.is_stable_first_order(kp, ki, a, gp, T, d), sn.spectral_radius_first_order(kp, ki, a, gp, T, d),
            sn.is_stable_first_order(kp, ki, plant_a, gp, T, d)]
    assert kernels.loaded()
    _numpy_paths(monkeypatch)
    slow = [sn.is_stable_first_order(kp, ki, a, gp, T, d), sn.spectral_radius_first_order(kp, ki, a, gp, T, d),
            sn.is_stable_first_order(kp, ki, plant_a, gp, T, d)]
    assert np.array_equal(fast[0], slow[0])
    assert np.max(np.abs(fast[1] - slow[1])) < 1e-12
    assert np.array_equal(fast[2], slow[2])


def test_unrolled_and_loop_verdict_kernels_agree():
    """The straight-line kernel printed per degree and the loop kernel (degrees above UNROLL_MAX, per-point rows)."""
    rng = np.random.default_rng(3)
    for T, d in ((1, 1), (5, 0), (8, 1)):
        af = coefficient_functions("incremental", T, d)[4](1 / 2500, -3.2)
        kp, ki = rng.uniform(-0.4, 0.7, 5000), rng.uniform(-0.01, 0.7, 5000)
        unrolled = kernels.stable_map(af[0:3], kp, ki, kp.size)
        rows = tuple(tuple(np.full(kp.size, float(c)) for c in part) for part in af[0:3])
        looped = kernels.stable_map(rows, kp, ki, kp.size)
        assert np.array_equal(unrolled, looped)
        assert 0 < unrolled.mean() < 1


def test_marginal_and_non_finite_points_are_not_stable():
    # Ki = 0 leaves the integrator's root at λ = 1 exactly: not asymptotically stable.
    assert not sn.is_stable_first_order(np.full(kernels.MIN_POINTS, 0.1), 0.0, 1 / 2500, -3.2, 5, 1).any()
    af = coefficient_functions("incremental", 5, 0)[4](1 / 2500, -3.2)
    out = kernels.stable_map(af[0:3], np.array([np.nan, np.inf, 0.1]), np.array([0.1, 0.1, np.nan]), 3)
    assert not out.any()
