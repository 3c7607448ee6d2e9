"""simulate: against an independent scalar loop, the issue's must-hold examples, vectorisation, noise, metrics."""
import math

import numpy as np
import pytest

from klcontrol import (
    CapacityRamp,
    ExpGain,
    FirstOrderPlant,
    FixedBeta,
    IncrementalPI,
    LinearRamp,
    PositionalPI,
    StepRamp,
    simulate,
)
from klcontrol.simulate import Trace, response_metrics

A_RATE, A_GAIN, K_DECAY = 1 / 5000, 26.38, 0.0476


def mnist_plant():
    return FirstOrderPlant(a=A_RATE, g=lambda b: A_GAIN * np.exp(-K_DECAY * b))


def reference_loop(kp, ki, c, beta0, bmin, bmax, window, delay, y0, steps, a=A_RATE, setpoint=None):
    """The loop of docs/design.md written out with floats and math only.

    y(t) = y(t−1)/(1+a) + a/(1+a)·A·exp(−kβ(t));  m(t) = mean(y(t−d), …, y(t−d−T+1)) with y0 before 0;
    β(t+1) = clip(β(t) + Kp[σ(m(t) − C) − σ(m(t−1) − C)] − Ki·(C − m(t)), β_min, β_max),  m(−1) = y0.
    """
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    ys = {}
    beta = min(max(beta0, bmin), bmax)
    p_prev = sig(y0 - (setpoint(0) if setpoint else c))
    y = y0
    betas, kls = [], []
    for t in range(steps):
        y = y / (1 + a) + a / (1 + a) * A_GAIN * math.exp(-K_DECAY * beta)
        ys[t] = y
        betas.append(beta)
        kls.append(y)
        m = sum(ys.get(s, y0) if s >= 0 else y0 for s in range(t - delay - window + 1, t - delay + 1)) / window
        ct = setpoint(t) if setpoint else c
        p = sig(m - ct)
        beta = min(max(beta + kp * (p - p_prev) - ki * (ct - m), bmin), bmax)
        p_prev = p
    return np.array(betas), np.array(kls)


@pytest.mark.parametrize("window", [1, 5])
@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("y0", [0.0, 7.5])
def test_simulate_equals_independent_loop(window, delay, y0):
    steps = 3000
    ref_b, ref_y = reference_loop(0.05, 0.01, 20.0, 100.0, 0.0, 120.0, window, delay, y0, steps)
    tr = simulate(IncrementalPI(0.05, 0.01, 20.0, beta0=100.0, beta_min=0.0, beta_max=120.0, filter=window),
                  mnist_plant(), steps, delay=delay, y0=y0)
    np.testing.assert_allclose(tr.beta, ref_b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.kl, ref_y, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tr.step, np.arange(steps))
    assert np.all(tr.setpoint == 20.0)


def test_simulate_follows_a_schedule_and_a_fast_plant():
    sched = StepRamp(2.0, 8.0, 1.0, 50, 10)
    ref_b, ref_y = reference_loop(0.2, 0.05, None, 10.0, 0.0, math.inf, 3, 0, 1.0, 400, a=0.2, setpoint=sched)
    tr = simulate(IncrementalPI(0.2, 0.05, sched, beta0=10.0, filter=3),
                  FirstOrderPlant(0.2, ExpGain(A_GAIN, K_DECAY)), 400, y0=1.0)
    np.testing.assert_allclose(tr.beta, ref_b, atol=1e-12)
    np.testing.assert_allclose(tr.kl, ref_y, atol=1e-12)
    np.testing.assert_allclose(tr.setpoint, sched(np.arange(400)))


def test_must_hold_scalar_example():
    tr = simulate(IncrementalPI(kp=0.01, ki=0.005, setpoint=20.0, beta0=100.0, beta_min=0.0), mnist_plant(),
                  steps=20000, delay=1, y0=0.0)
    assert tr.beta.shape == (20000,) and tr.kl.shape == (20000,)
    ref_b, ref_y = reference_loop(0.01, 0.005, 20.0, 100.0, 0.0, math.inf, 1, 1, 0.0, 20000)
    np.testing.assert_allclose(tr.beta, ref_b, atol=1e-12)
    np.testing.assert_allclose(tr.kl, ref_y, atol=1e-12)


def test_must_hold_vectorised_example_time_first():
    ki = np.linspace(0.001, 0.01, 1000)
    ctrl = IncrementalPI(kp=np.full(1000, 0.01), ki=ki, setpoint=20.0, beta0=100.0, beta_min=0.0)
    tr = simulate(ctrl, mnist_plant(), steps=300, delay=1)
    assert tr.beta.shape == (300, 1000) and tr.kl.shape == (300, 1000) and tr.setpoint.shape == (300, 1000)
    assert tr.n_loops == 1000
    for i in (0, 517, 999):
        rb, ry = reference_loop(0.01, ki[i], 20.0, 100.0, 0.0, math.inf, 1, 1, 0.0, 300)
        np.testing.assert_allclose(tr.beta[:, i], rb, atol=1e-12)
        np.testing.assert_allclose(tr.loop(i).kl, ry, atol=1e-12)
    assert ctrl.steps_taken == 0  # simulate works on a copy


@pytest.mark.parametrize(
    "make",
    [
        lambda kp, ki: PositionalPI(kp, ki, 15.0, beta_min=0.5, filter=3),
        lambda kp, ki: IncrementalPI(kp, ki, LinearRamp(5, 15, 500), beta0=60.0, anti_windup="official",
                                     beta_min=0.1, filter=2),
        lambda kp, ki: CapacityRamp(np.asarray(kp) * 100, 15.0, beta_min=0.0, beta_max=50.0),
    ],
    ids=["positional", "official", "capacity"],
)
def test_vectorised_equals_scalar_runs(make):
    kp, ki = np.array([0.005, 0.02, 0.05]), np.array([0.001, 0.004, 0.01])
    tr = simulate(make(kp, ki), mnist_plant(), 800, delay=1, y0=2.0)
    for i in range(3):
        ts = simulate(make(kp[i], ki[i]), mnist_plant(), 800, delay=1, y0=2.0)
        np.testing.assert_allclose(tr.beta[:, i], ts.beta, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(tr.kl[:, i], ts.kl, rtol=1e-12, atol=1e-12)


def test_vectorised_plant_rates():
    a = np.array([1 / 5000, 1 / 2500])
    tr = simulate(IncrementalPI(0.01, 0.005, 20.0, beta0=100.0), FirstOrderPlant(a, ExpGain(A_GAIN, K_DECAY)), 500)
    for i in range(2):
        rb, ry = reference_loop(0.01, 0.005, 20.0, 100.0, 0.0, math.inf, 1, 0, 0.0, 500, a=a[i])
        np.testing.assert_allclose(tr.kl[:, i], ry, atol=1e-12)


def test_paper_gains_converge_on_mnist_plant():
    tr = simulate(IncrementalPI(0.01, 0.005, 20.0, beta0=100.0), FirstOrderPlant(A_RATE, ExpGain(A_GAIN, K_DECAY)),
                  40_000)
    err = np.abs(tr.kl - 20.0) / 20.0
    assert np.all(err[30_000:] < 0.01)
    # β approaches the equilibrium g⁻¹(C) (it leads the slow plant, so it is a little further off than the KL).
    dev = np.abs(tr.beta - ExpGain(A_GAIN, K_DECAY).inverse(20.0))
    assert dev[-1] < 0.3 and dev[-1] < dev[30_000] < dev[20_000]


def test_random_stable_gains_converge():
    # A seeded sample of gains from a region where the linearised loop is stable and well damped on this plant.
    rng = np.random.default_rng(7)
    n = 48
    kp, ki = rng.uniform(0.002, 0.03, n), rng.uniform(0.004, 0.01, n)
    c, beta0 = rng.uniform(15.0, 25.0, n), rng.uniform(0.0, 150.0, n)
    plant = FirstOrderPlant(A_RATE, ExpGain(A_GAIN, K_DECAY))
    for ctrl in (IncrementalPI(kp, ki, c, beta0=beta0, filter=5), PositionalPI(kp, ki, c, filter=5)):
        tr = simulate(ctrl, plant, 45_000, delay=1)
        err = np.abs(tr.kl[-5000:] - c) / c
        assert np.all(err < 0.01), np.max(err, axis=0)


def test_noise_options():
    ctrl = FixedBeta(10.0)
    plant = mnist_plant()
    clean = simulate(ctrl, plant, 2000)
    assert clean.state is clean.kl
    n1 = simulate(ctrl, plant, 2000, noise_std=0.5, seed=3)
    n2 = simulate(ctrl, plant, 2000, noise_std=0.5, seed=3)
    np.testing.assert_array_equal(n1.kl, n2.kl)
    np.testing.assert_array_equal(n1.state, clean.kl)  # β fixed: the noise-free state is unchanged
    assert np.std(n1.kl - n1.state) == pytest.approx(0.5, rel=0.1)
    rel = simulate(ctrl, plant, 2000, noise_rel=0.1, seed=1)
    z = (rel.kl - rel.state) / (0.1 * np.abs(rel.state))
    assert np.std(z[100:]) == pytest.approx(1.0, rel=0.1)
    # Noise reaches the controller: a PI loop sees different measurements.
    pi = IncrementalPI(0.01, 0.005, 20.0, beta0=50.0)
    assert not np.array_equal(simulate(pi, plant, 500).beta, simulate(pi, plant, 500, noise_std=1.0, seed=0).beta)


def test_continues_a_stepped_controller():
    ctrl = IncrementalPI(0.01, 0.005, LinearRamp(0, 20, 100), beta0=50.0)
    for _ in range(10):
        ctrl.step(1.0)
    tr = simulate(ctrl, mnist_plant(), 20)
    np.testing.assert_allclose(tr.setpoint, LinearRamp(0, 20, 100)(np.arange(10, 30)))
    assert tr.beta[0] == ctrl.beta


def test_response_metrics():
    t = np.arange(10)
    y = np.array([0, 5, 9, 11, 10.5, 10.1, 10, 10, 10, 10.0])
    tr = Trace(step=t, beta=np.zeros(10), kl=y, setpoint=np.full(10, 10.0))
    m = response_metrics(tr, tol=0.02)
    assert m["final_kl"] == 10.0 and m["overshoot"] == pytest.approx(1.0) and m["overshoot_rel"] == pytest.approx(0.1)
    assert m["settling_step"] == 5
    many = Trace(step=t, beta=np.zeros((10, 2)), kl=np.c_[y, y], setpoint=np.full((10, 2), 10.0))
    assert response_metrics(many)["settling_step"] == [5, 5]
    never = Trace(step=t, beta=np.zeros(10), kl=np.zeros(10), setpoint=np.full(10, 10.0))
    assert never.metrics()["settling_step"] is None


def test_trace_csv(tmp_path):
    tr = simulate(IncrementalPI([0.01, 0.02], 0.005, 20.0, beta0=100.0), mnist_plant(), 5)
    tr.to_csv(tmp_path / "t.csv", loop=1)
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0] == "step,beta,kl,setpoint" and len(rows) == 6
    assert float(rows[-1].split(",")[2]) == tr.kl[-1, 1]
    with pytest.raises(IndexError):
        simulate(FixedBeta(1.0), mnist_plant(), 3).loop(1)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=10, delay=2), "delay"),
        (dict(steps=10, y0=math.nan), "y0"),
        (dict(steps=10, noise_std=-1.0), "noise_std"),
        (dict(steps=10, noise_rel=math.inf), "noise_rel"),
    ],
)
def test_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        simulate(FixedBeta(1.0), mnist_plant(), **kw)


def test_bad_objects_and_diverging_plant():
    with pytest.raises(ValueError, match="controller"):
        simulate(lambda kl: 1.0, mnist_plant(), 10)
    with pytest.raises(ValueError, match="plant"):
        simulate(FixedBeta(1.0), lambda y, b: y, 10)
    nan_plant = FirstOrderPlant(0.5, lambda b: np.where(b < 3.0, np.nan, 1.0))
    with pytest.raises(ValueError, match="NaN or infinite at step 0"):
        simulate(FixedBeta([1.0, 5.0]), nan_plant, 10)


def test_an_open_loop_schedule_follows_the_clock():
    """A schedule reads the step clock: the simulator keeps the copy's clock with the loop (it once froze at β(1))."""
    from klcontrol import ScheduledBeta
    from klcontrol.setpoints import Cyclical

    sched = Cyclical(100, cycles=2)
    ctrl = ScheduledBeta(sched)
    tr = simulate(ctrl, FirstOrderPlant(0.01, lambda b: 20 * np.exp(-0.1 * b)), 100, engine="numpy")
    np.testing.assert_array_equal(tr.beta, [sched(t) for t in range(100)])
    # and the same as a trainer stepping the controller
    live = ScheduledBeta(sched)
    betas = [live.beta]
    for y in tr.kl[:-1]:
        betas.append(live.step(float(y)))
    np.testing.assert_array_equal(tr.beta, betas)


# -- summaries, continuation, memory (issue 28) ---------------------------------------------------------------

def _sweep_ctrl(n=4):
    kp = np.linspace(0.005, 0.02, n)
    return IncrementalPI(kp, kp / 2, setpoint=LinearRamp(15.0, 22.0, 50, begin=150), beta0=80.0, filter=5)


def test_summary_figures_equal_those_of_the_stored_trajectory():
    plant = FirstOrderPlant(1 / 50, ExpGain(A_GAIN, K_DECAY))
    ctrl = _sweep_ctrl()
    full = simulate(ctrl, plant, 400, engine="numpy")
    bare = simulate(ctrl, plant, 400, engine="numpy", record=(), summary=True, settle_tol=0.05)
    assert bare.kl is None and bare.beta is None and bare.state is None
    want = response_metrics(full, tol=0.05)
    assert bare.metrics(tol=0.05) == bare.summary
    for k, v in want.items():
        got = bare.summary[k]
        if k == "settling_step":
            assert got == v
        else:
            np.testing.assert_allclose(got, v, rtol=1e-12, atol=1e-12, err_msg=k)
    with pytest.raises(ValueError, match="recorded no state"):
        bare.metrics(tol=0.02)


def test_a_continued_run_equals_one_long_run():
    plant = FirstOrderPlant(1 / 50, ExpGain(A_GAIN, K_DECAY))
    ctrl = _sweep_ctrl()
    for delay in (0, 1):
        whole = simulate(ctrl, plant, 300, delay=delay, engine="numpy")
        first = simulate(ctrl, plant, 120, delay=delay, engine="numpy")
        rest = simulate(first.controller, plant, 180, delay=delay, engine="numpy", start=first.final)
        assert first.controller.steps_taken == 120 and ctrl.steps_taken == 0
        np.testing.assert_array_equal(np.concatenate([first.kl, rest.kl]), whole.kl)
        np.testing.assert_array_equal(np.concatenate([first.beta, rest.beta]), whole.beta)
        np.testing.assert_array_equal(np.concatenate([first.setpoint, rest.setpoint]), whole.setpoint)
    with pytest.raises(ValueError, match="start must be the final LoopState"):
        simulate(ctrl, plant, 10, delay=0, start=first.final)  # first ran with delay 1


def test_a_recording_that_cannot_fit_is_refused_with_one_that_fits(monkeypatch):
    sim = __import__("sys").modules["klcontrol.simulate"]
    ctrl, plant = _sweep_ctrl(1000), FirstOrderPlant(1 / 50, ExpGain(A_GAIN, K_DECAY))
    # 1000 loops × 100 000 steps: β and KL in float64 need 1.6 GB; the KL in float32 0.4 GB.
    monkeypatch.setattr(sim, "_available_memory", lambda: 10**9)
    with pytest.raises(ValueError, match=r"needs 1\.60 GB, more than the 1\.00 GB .*record=\('kl',\), "
                                         r"dtype=np\.float32 would need 0\.40 GB"):
        simulate(ctrl, plant, 100_000)
    monkeypatch.setattr(sim, "_available_memory", lambda: 10**8)
    with pytest.raises(ValueError, match=r"record=\(\), summary=True"):
        simulate(ctrl, plant, 100_000, record=("kl",), dtype=np.float32)
    tr = simulate(ctrl, plant, 100_000 // 1000, record=(), summary=True)  # nothing stored: always fits
    assert len(tr.summary["tracking_rmse"]) == 1000
    with pytest.raises(ValueError, match="summary=True"):
        simulate(ctrl, plant, 10, record=())
