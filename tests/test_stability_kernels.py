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


def _loop_kernel(zaff, laff, kp, ki):
    """The loop kernel on the same points: per-point coefficient rows (the straight-line kernel needs shared rows)."""
    m = np.size(kp)
    rows = lambda aff: tuple(tuple(np.full(m, float(c)) for c in part) for part in aff)  # noqa: E731
    return kernels.radius_map(rows(zaff), rows(laff), kp, ki, m)


@pytest.mark.parametrize("T,d", [(1, 1), (5, 0), (5, 1), (8, 1)])
def test_unrolled_and_loop_radius_kernels_agree_bitwise(T, d):
    """The straight-line spectral-radius kernel (vectorised across points) = the loop kernel, bit for bit, on a
    box with complex and real dominant pairs, unstable points and Ki = 0 (the marginal integrator); and the result
    of a point depends neither on the order of the points nor on the thread count."""
    import numba

    rng = np.random.default_rng(7)
    a, gp = 1 / 2500, -3.2
    af = coefficient_functions("incremental", T, d)[4](a, gp)
    kp, ki = rng.uniform(-0.4, 1.5, 20000), rng.uniform(-0.01, 0.8, 20000)
    ki[:500] = 0.0
    fast, fflag = kernels.radius_map(af[3:6], af[6:9], kp, ki, kp.size)
    slow, sflag = _loop_kernel(af[3:6], af[6:9], kp, ki)
    assert np.array_equal(fflag, sflag)
    assert np.array_equal(fast, slow, equal_nan=True)
    assert 0.05 < np.mean(fast[~fflag] < 1) < 0.95
    perm = rng.permutation(kp.size)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        back, bflag = kernels.radius_map(af[3:6], af[6:9], kp[perm], ki[perm], kp.size)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(back, fast[perm], equal_nan=True) and np.array_equal(bflag, fflag[perm])


def _adversarial():
    """λ-roots of hard polynomials: repeated roots, real dominant pairs, roots on and near the unit circle, another
    root outside the pair's circle (the bisection), near-equal moduli."""
    e = lambda r, t: r * np.exp(1j * t)  # noqa: E731
    pair = lambda r, t: [e(r, t), e(r, -t)]  # noqa: E731
    return [
        pair(0.99, 0.05) + [0.3, -0.2, 0.1 + 0.2j, 0.1 - 0.2j],          # the usual: a slow complex pair
        pair(0.999999, 0.01) + [0.5, 0.4, -0.3],                         # pair a hair inside the unit circle
        pair(1.000001, 0.01) + [0.5, 0.4, -0.3],                         # a hair outside
        pair(1.0, 0.02) + [0.5, 0.4, -0.3],                              # on it
        pair(0.95, 0.03) + [-0.97, 0.5, 0.2],                            # another root outside the pair's circle
        pair(0.95, 0.03) + pair(0.96, 2.0) + [0.1],                      # another pair outside it
        pair(0.95, 0.03) + [0.95 * np.exp(1j * 2.5), 0.95 * np.exp(-2.5j), 0.2],  # equal moduli
        pair(0.95, 0.03) + [-0.9499999999, 0.3, 0.1],                    # a root just inside the pair's circle
        pair(0.95, 0.03) + pair(0.95, 0.03) + [0.2],                     # a repeated complex pair
        [0.98, 0.97, 0.3, -0.5, 0.1 + 0.4j, 0.1 - 0.4j],                # a real dominant pair
        [0.98, 0.98, 0.3, -0.5, 0.2, 0.1],                              # a repeated real root
        [0.98, 0.98, 0.98, 0.3, 0.2, -0.1],                             # a triple one
        pair(0.9, 1e-9) + [0.3, -0.2, 0.1],                              # a pair nearly real
        pair(0.5, 0.2) + [0.3, -0.2, 0.1],                               # a fast loop
        pair(0.7, 0.1) + [-0.99, 0.999, 0.1],                            # dominant roots far from λ = 1
    ]


@pytest.mark.parametrize("k", range(len(_adversarial())))
def test_radius_kernels_on_adversarial_polynomials(k):
    """Both kernels against numpy.roots on polynomials built from their roots (coefficients fixed: Kp, Ki only
    index points): equal to each other bit for bit, and to the roots to their conditioning, or flagged."""
    lam_roots = np.array(_adversarial()[k])
    lam = np.real(np.poly(lam_roots))
    z = np.real(np.poly(lam_roots - 1.0))  # the same polynomial in z = λ − 1
    zero = tuple(0.0 for _ in lam)
    zaff, laff = (tuple(z), zero, zero), (tuple(lam), zero, zero)
    kp = np.zeros(8)
    rho, flag = kernels.radius_map(zaff, laff, kp, kp, kp.size)
    slow, sflag = _loop_kernel(zaff, laff, kp, kp)
    assert np.array_equal(flag, sflag) and np.array_equal(rho, slow, equal_nan=True)
    assert np.all(flag == flag[0]) and np.array_equal(rho, np.full(8, rho[0]), equal_nan=True)
    ref = np.max(np.abs(np.roots(lam)))
    if flag[0]:
        assert np.isnan(rho[0])
        return
    mult = np.max([np.sum(np.abs(lam_roots - r) < 1e-6) for r in lam_roots])
    tol = 1e-12 if mult == 1 else 1e-4  # a root of multiplicity k moves by eps^(1/k)
    assert abs(rho[0] - ref) <= tol * ref, (rho[0], ref)
    assert abs(rho[0] - np.max(np.abs(lam_roots))) <= max(tol, 1e-9), (rho[0], lam_roots)


def test_public_radius_map_agrees_with_numpy_roots_near_the_unit_circle():
    """Points of a real map near |λ| = 1 (the stability boundary), through the public function (kernels) vs
    numpy.roots: ρ to rounding where the roots are simple."""
    a, gp, T, d = 1 / 2500, -3.2, 5, 1
    rng = np.random.default_rng(11)
    kp, ki = rng.uniform(-0.4, 1.5, kernels.MIN_POINTS), rng.uniform(0.0, 0.8, kernels.MIN_POINTS)
    rho = sn.spectral_radius_first_order(kp, ki, a, gp, T, d)
    near = np.flatnonzero(np.abs(rho - 1) < 2e-3)[:300]
    assert near.size > 50
    ref = _roots_rho(kp[near], ki[near], a, gp, T, d)
    assert np.max(np.abs(rho[near] - ref)) < 1e-12


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(0, 3 * 2048), st.sampled_from([np.nan, np.inf, -np.inf, None]))
def test_all_finite_finds_any_non_finite_value_wherever_it_is(pos, bad):
    from klcontrol.analysis.stability.kernels import all_finite

    x = np.random.default_rng(pos).normal(size=3 * 2048 + 1) * 1e300
    if bad is not None:
        x[pos] = bad
    assert all_finite(x) == bool(np.all(np.isfinite(x)))
    assert all_finite(x[::2]) == bool(np.all(np.isfinite(x[::2])))  # strided: NumPy's check
