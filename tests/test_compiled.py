"""klcontrol.compiled: the numba engine of simulate against the NumPy engine, its exp, its cache, its refusals."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import (
    GECO,
    AdaptivePI,
    CapacityRamp,
    ExpGain,
    ExponentialAverage,
    FirstOrderPlant,
    FixedBeta,
    IncrementalPI,
    LinearGain,
    PIDLagrangian,
    PositionalPI,
    ScheduledBeta,
    StepRamp,
    compiled,
    simulate,
)
from klcontrol.setpoints import Cyclical, LinearRamp

numba = pytest.importorskip("numba")
from klcontrol._jit_math import exp as jit_exp  # noqa: E402  (needs numba)

PLANT = FirstOrderPlant(1 / 2500, ExpGain(26.38, 0.0476))


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    """One kernel cache for the module: each loop structure compiles once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KLCONTROL_CACHE", str(tmp_path_factory.mktemp("kernels")))
    compiled._KERNELS.clear()
    yield
    compiled._KERNELS.clear()
    mp.undo()


def _both(ctrl, plant=PLANT, steps=400, **kw):
    a = simulate(ctrl, plant, steps, engine="numpy", **kw)
    b = simulate(ctrl, plant, steps, engine="compiled", **kw)
    assert a.meta["engine"] == "numpy" and b.meta["engine"] == "compiled"
    return a, b


def _close(a, b, rtol=1e-10, atol=1e-10):
    for name in ("beta", "kl", "state"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_allclose(y, x, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_array_equal(a.setpoint, b.setpoint)


# -- the exponential ------------------------------------------------------------------------------------------

@numba.njit
def _vexp(x, out):
    for i in range(x.shape[0]):
        out[i] = jit_exp(x[i])


def _exp(x):
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    _vexp(x, out)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-800, 800, allow_nan=False), min_size=1, max_size=64))
def test_exp_within_two_ulp_of_libm(xs):
    got = _exp(xs)
    for x, g in zip(xs, got):
        ref = math.exp(x) if x < 709.7 else (math.exp(x) if x <= 709.782712893384 else math.inf)
        if ref == 0.0 or ref == math.inf:
            assert g == ref, x
        elif ref < 2.2250738585072014e-308:  # subnormal: absolute error within a few of the smallest step
            assert abs(g - ref) <= 4 * 5e-324, x
        else:
            assert abs(g - ref) <= 2 * math.ulp(ref), (x, g, ref)


def test_exp_within_one_ulp_on_a_dense_grid():
    # The polynomial's tail is evaluated by Estrin's scheme (a short dependency chain): no accuracy may be lost
    # against the all-Horner form, which is within 1 ulp of libm over the normal range.
    xs = np.concatenate([np.linspace(-708.0, 709.7, 100_001), np.linspace(-0.36, 0.36, 20_001),
                         np.random.default_rng(3).uniform(-30.0, 30.0, 50_000)])
    got = _exp(xs)
    ref = np.array([math.exp(x) for x in xs])
    ulp = np.array([math.ulp(r) for r in ref])
    assert np.max(np.abs(got - ref) / ulp) <= 1.0


def test_exp_special_values():
    got = _exp([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -745.2, 709.79, 709.78])
    assert math.isnan(got[0])
    assert got[1] == math.inf and got[2] == 0.0 and got[3] == 1.0 and got[4] == 1.0
    assert abs(got[5] - math.e) <= math.ulp(math.e)
    assert got[6] == 0.0 and got[7] == math.inf
    assert abs(got[8] - math.exp(709.78)) <= 2 * math.ulp(math.exp(709.78))


# -- the engines agree ----------------------------------------------------------------------------------------

def _controllers():
    kp, ki = np.array([0.005, 0.01, 0.02]), np.array([0.001, 0.005, 0.01])
    sp = StepRamp(2.0, 15.0, 3.0, 100, 50)
    return {
        "fixed": FixedBeta(np.array([0.5, 1.0, 4.0])),
        "capacity": CapacityRamp(np.array([10.0, 100.0, 1000.0]), setpoint=sp, beta_min=0.0, beta_max=1e3),
        "positional": PositionalPI(kp * 10, ki / 10, setpoint=sp, beta_min=0.0, beta_max=200.0),
        "positional-official": PositionalPI(kp * 10, ki / 10, setpoint=sp, anti_windup="official"),
        "incremental": IncrementalPI(kp, ki, setpoint=sp, beta0=100.0, filter=5),
        "incremental-ema": IncrementalPI(kp, ki, setpoint=12.0, beta0=20.0, beta_max=150.0,
                                         filter=ExponentialAverage(0.3)),
        "incremental-paper": IncrementalPI.dynamicvae_dsprites(),
        "geco": GECO(kappa=15.0, eta=np.array([0.001, 0.01, 0.05])),
        "pid-lagrangian": PIDLagrangian(kp, ki, setpoint=sp, kd=0.01, alpha_d=0.5),
        "adaptive": AdaptivePI.dynamicvae_dsprites(),
    }


@pytest.mark.parametrize("name", list(_controllers()))
def test_engines_agree_for_every_controller_kind(name):
    ctrl = _controllers()[name]
    a, b = _both(ctrl, steps=600, y0=2.0)
    _close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("delay", [0, 1])
def test_engines_agree_with_noise_delay_and_per_loop_plants(delay):
    plant = FirstOrderPlant(np.array([1 / 2500, 1 / 500, 1 / 100]), ExpGain(np.array([26.0, 30.0, 20.0]), 0.05))
    ctrl = IncrementalPI(np.array([0.005, 0.01, 0.02]), 0.002, setpoint=15.0, beta0=50.0, filter=3)
    a, b = _both(ctrl, plant, steps=500, delay=delay, noise_std=0.3, noise_rel=0.01, seed=4)
    _close(a, b, rtol=1e-9, atol=1e-9)
    assert not np.array_equal(a.kl, a.state)  # the noise was drawn, and drawn alike


def test_engines_agree_on_a_per_loop_set_point_and_a_linear_plant():
    plant = FirstOrderPlant(0.01, LinearGain(20.0, -0.1, 30.0))
    ctrl = IncrementalPI(np.array([0.01, 0.02, 0.03]), 0.003, setpoint=np.array([15.0, 20.0, 25.0]), beta0=30.0,
                         beta_min=-np.inf)
    a, b = _both(ctrl, plant, steps=300)
    _close(a, b)


@settings(max_examples=25, deadline=None)
@given(kp=st.floats(0.0, 0.05), ki=st.floats(0.0, 0.02), beta0=st.floats(0.0, 300.0), y0=st.floats(0.0, 30.0),
       c=st.floats(1.0, 25.0))
def test_engines_agree_for_any_gains(kp, ki, beta0, y0, c):
    ctrl = IncrementalPI(kp, ki, setpoint=c, beta0=beta0, filter=5)
    a, b = _both(ctrl, steps=300, y0=y0)
    _close(a, b, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("record", [("kl",), ("beta",), ("state",), ("beta", "kl")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recording_choices(record, dtype):
    ctrl = IncrementalPI(np.array([0.01, 0.02]), 0.005, setpoint=15.0, beta0=80.0, filter=5)
    a, b = _both(ctrl, steps=200, record=record, dtype=dtype)
    for name in ("beta", "kl", "state"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert y.dtype == dtype
            np.testing.assert_allclose(y, x, rtol=1e-6 if dtype == np.float32 else 1e-10)


def test_a_scalar_loop_keeps_its_shape():
    a, b = _both(IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0), steps=100)
    assert b.beta.shape == (100,) and b.n_loops == 1
    _close(a, b)


# -- structure, cache, refusals ------------------------------------------------------------------------------

def test_one_kernel_serves_every_gain_set_of_a_structure():
    simulate(IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0, filter=4), PLANT, 10, engine="compiled")
    n = len(compiled._KERNELS)
    simulate(IncrementalPI(np.array([0.02, 0.03]), 0.001, setpoint=StepRamp(1.0, 10.0, 1.0, 5, 2), beta0=10.0,
                           filter=4), FirstOrderPlant(0.2, ExpGain(5.0, 0.1)), 10, engine="compiled")
    assert len(compiled._KERNELS) == n
    simulate(IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0, filter=6), PLANT, 10, engine="compiled")
    assert len(compiled._KERNELS) == n + 1  # another window is another loop


def test_a_cached_kernel_loads_without_tracing(monkeypatch):
    ctrl = IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0, filter=2)
    first = simulate(ctrl, PLANT, 50, engine="compiled")
    compiled._KERNELS.clear()

    def no_trace(*a, **k):
        raise AssertionError("traced again")

    monkeypatch.setattr(compiled, "_trace", no_trace)
    key = compiled.structure_key(PLANT, ctrl, 0, False, True)
    assert compiled.is_cached(key, PLANT, ctrl)
    again = simulate(ctrl, PLANT, 50, engine="compiled")
    np.testing.assert_array_equal(first.beta, again.beta)


def test_a_damaged_kernel_file_is_named_and_never_run(monkeypatch):
    ctrl = PositionalPI(0.5, 0.001, setpoint=10.0, filter=3)
    simulate(ctrl, PLANT, 5, engine="compiled")
    k = compiled.kernel_for(PLANT, ctrl)
    compiled._KERNELS.clear()
    original = k.path.read_text()
    k.path.write_text(original.replace("def kernel(", "raise SystemExit('damaged')\ndef kernel("))
    try:
        with pytest.raises(ValueError, match=str(k.path.name)):
            simulate(ctrl, PLANT, 5, engine="compiled")
        assert simulate(ctrl, PLANT, 5000, engine="auto").meta["engine"] == "numpy"
    finally:
        k.path.write_text(original)
        compiled._KERNELS.clear()


def test_the_kernel_name_changes_when_a_law_changes(monkeypatch, tmp_path):
    ctrl = IncrementalPI(0.01, 0.005, setpoint=15.0)
    key = compiled.structure_key(PLANT, ctrl, 0, False, True)
    before = compiled._path(key, PLANT, ctrl)
    monkeypatch.setattr(compiled, "_sources_hash", lambda files: "edited")
    assert compiled._path(key, PLANT, ctrl) != before


def test_a_clocked_schedule_is_refused_and_auto_uses_numpy():
    ctrl = ScheduledBeta(Cyclical(200))
    with pytest.raises(ValueError, match="clock"):
        simulate(ctrl, PLANT, 100, engine="compiled")
    tr = simulate(ctrl, PLANT, 100_000, engine="auto", record=("beta",))
    assert tr.meta["engine"] == "numpy"


def test_a_plant_without_parameters_is_refused():
    plant = FirstOrderPlant(0.01, lambda b: 20.0 * np.exp(-0.05 * b))
    with pytest.raises(ValueError, match="compiled.*parameters"):
        simulate(IncrementalPI(0.01, 0.005, setpoint=15.0), plant, 10, engine="compiled")
    assert simulate(IncrementalPI(0.01, 0.005, setpoint=15.0), plant, 10).meta["engine"] == "numpy"


def test_without_numba_compiled_names_the_extra(monkeypatch):
    monkeypatch.setattr(compiled, "available", lambda: False)
    with pytest.raises(ValueError, match=r"klcontrol\[fast\]"):
        simulate(IncrementalPI(0.01, 0.005, setpoint=15.0), PLANT, 10, engine="compiled")
    assert simulate(IncrementalPI(0.01, 0.005, setpoint=15.0), PLANT, 400_000,
                    record=("kl",)).meta["engine"] == "numpy"


def test_auto_compiles_only_what_pays(monkeypatch):
    ctrl = IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0, filter=7)
    assert simulate(ctrl, PLANT, 100).meta["engine"] == "numpy"  # tiny, nothing compiled yet
    simulate(ctrl, PLANT, 10, engine="compiled")
    assert simulate(ctrl, PLANT, 100).meta["engine"] == "compiled"  # loaded: always worth it


def test_bad_engine_and_nan_are_reported():
    with pytest.raises(ValueError, match="engine must be one of"):
        simulate(IncrementalPI(0.01, 0.005, setpoint=15.0), PLANT, 10, engine="fast")
    with pytest.raises(ValueError, match="NaN or infinite at step 0"):
        simulate(FixedBeta(-1e6), FirstOrderPlant(0.5, ExpGain(1.0, 1.0)), 50, engine="compiled")


def test_progress_bar_runs_in_blocks(capsys):
    ctrl = IncrementalPI(np.array([0.01, 0.02]), 0.005, setpoint=15.0, beta0=80.0, filter=5)
    a = simulate(ctrl, PLANT, 1000, engine="numpy")
    b = simulate(ctrl, PLANT, 1000, engine="compiled", progress=True)
    _close(a, b)


def test_core_import_does_not_load_numba():
    code = "import sys, klcontrol; klcontrol.simulate; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_set_point_or_the_state_may_set_the_number_of_loops():
    # Per-loop set points with scalar gains, and GECO with a per-loop κ: once refused by broadcasting.
    a, b = _both(IncrementalPI(0.01, 0.003, setpoint=np.array([15.0, 20.0, 25.0]), beta0=30.0), steps=300)
    assert a.beta.shape == (300, 3)
    _close(a, b)
    np.testing.assert_array_equal(a.setpoint[-1], [15.0, 20.0, 25.0])
    one = simulate(IncrementalPI(0.01, 0.003, setpoint=20.0, beta0=30.0), PLANT, 300, engine="numpy")
    np.testing.assert_array_equal(a.beta[:, 1], one.beta)  # each loop is the loop it would be alone
    a, b = _both(GECO(kappa=np.array([10.0, 15.0, 20.0]), eta=0.01), steps=300)
    assert a.beta.shape == (300, 3)
    _close(a, b)
    with pytest.raises(ValueError, match=r"set point C\(0\) has shape \(3,\), the gains drive 2 loops"):
        IncrementalPI(np.array([0.01, 0.02]), 0.003, setpoint=np.array([15.0, 20.0, 25.0]))
    three = FirstOrderPlant(np.array([0.01, 0.02, 0.03]), ExpGain(26.0, 0.05))
    with pytest.raises(ValueError, match="disagree on the number of loops"):
        simulate(IncrementalPI(np.array([0.01, 0.02]), 0.003, setpoint=15.0), three, 10)


# -- the fused kernel: random loops, summaries, continuation, threads (issue 28) ------------------------------

# Each (delay, noise) pair is a kernel structure compiled once (~20 s on a busy 2-core machine); the noiseless
# delay-0 kernel is compared with the NumPy engine for every controller kind above, so the noisy ones are drawn here.
@settings(max_examples=25, deadline=None)
@given(window=st.just(5), delay=st.sampled_from([0, 1]), n=st.integers(1, 700),
       kp=st.floats(0.0, 0.05), ki=st.floats(0.0, 0.02), c=st.floats(1.0, 40.0), beta0=st.floats(0.0, 200.0),
       y0=st.floats(0.0, 40.0), a=st.floats(1e-3, 0.5), noise=st.just(True), seed=st.integers(0, 2**32 - 1))
def test_engines_agree_to_rounding_on_random_loops(window, delay, n, kp, ki, c, beta0, y0, a, noise, seed):
    rng = np.random.default_rng(seed)
    ctrl = IncrementalPI(kp * rng.uniform(0.5, 1.5, n), ki * rng.uniform(0.5, 1.5, n), setpoint=c, beta0=beta0,
                         beta_max=500.0, filter=window)
    plant = FirstOrderPlant(a * rng.uniform(0.5, 1.0, n), ExpGain(26.38, 0.0476))
    kw = dict(delay=delay, y0=y0, noise_std=0.3 if noise else 0.0, seed=seed, summary=True)
    a_, b_ = _both(ctrl, plant, steps=int(rng.integers(1, 60)), **kw)
    _close(a_, b_, rtol=1e-9, atol=1e-9)
    for k, v in a_.summary.items():
        if k != "settling_step":
            np.testing.assert_allclose(b_.summary[k], v, rtol=1e-9, atol=1e-9, err_msg=k)


def test_compiled_summary_equals_the_figures_of_the_stored_trajectory():
    ctrl = IncrementalPI(np.linspace(0.005, 0.03, 600), 0.004, setpoint=LinearRamp(15.0, 22.0, 50, begin=200),
                         beta0=80.0, filter=5)
    plant = FirstOrderPlant(1 / 50, ExpGain(26.38, 0.0476))
    full = simulate(ctrl, plant, 500, engine="compiled")
    bare = simulate(ctrl, plant, 500, engine="compiled", record=(), summary=True)
    assert bare.state is None and bare.meta["engine"] == "compiled"
    want = full.metrics()
    assert bare.summary["settling_step"] == want["settling_step"]
    for k in ("final_kl", "final_setpoint", "overshoot", "overshoot_rel", "tracking_rmse"):
        np.testing.assert_allclose(bare.summary[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("delay", [0, 1])
def test_a_continued_compiled_run_equals_one_long_run(delay):
    ctrl = IncrementalPI(np.linspace(0.005, 0.03, 700), 0.004, setpoint=15.0, beta0=80.0, filter=5)
    plant = FirstOrderPlant(1 / 50, ExpGain(26.38, 0.0476))
    whole = simulate(ctrl, plant, 301, delay=delay, engine="compiled")
    first = simulate(ctrl, plant, 123, delay=delay, engine="compiled")  # stops mid-way round the filter's ring
    rest = simulate(first.controller, plant, 178, delay=delay, engine="compiled", start=first.final)
    np.testing.assert_array_equal(np.concatenate([first.kl, rest.kl]), whole.kl)
    np.testing.assert_array_equal(np.concatenate([first.beta, rest.beta]), whole.beta)
    numpy_final = simulate(ctrl, plant, 123, delay=delay, engine="numpy").final
    for got, want in zip(first.final.controller["filter"], numpy_final.controller["filter"]):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_threads_change_nothing_but_the_speed():
    ctrl = IncrementalPI(np.linspace(0.005, 0.03, 1500), 0.004, setpoint=15.0, beta0=80.0, filter=5)
    one = simulate(ctrl, PLANT, 200, engine="compiled", threads=1)
    many = simulate(ctrl, PLANT, 200, engine="compiled", threads=2)
    np.testing.assert_array_equal(one.kl, many.kl)
    np.testing.assert_array_equal(one.beta, many.beta)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        simulate(ctrl, PLANT, 10, threads=0)


def test_the_filter_history_is_a_ring_not_copies():
    ctrl = IncrementalPI(0.01, 0.005, setpoint=15.0, beta0=80.0, filter=5)
    k = compiled.kernel_for(PLANT, ctrl)
    src = compiled._trace(compiled.structure_key(PLANT, ctrl, 0, False, True), PLANT, ctrl, 0, False, True)
    ring = [k.state.index(("filter", j)) for j in range(4)]
    assert f"RING = {tuple(ring)!r}" in src
    assert "ph == 3" not in src and "ph == 2" in src  # one fused loop per phase (the last is the else)
