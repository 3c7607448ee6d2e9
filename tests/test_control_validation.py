"""Validation for control (klcontrol.analysis.identification.control_validation) and the model-set verdict.

The issue "A verdict that does not depend on luck": a candidate that averages the plant's ring away must not win,
whatever run is held out; the verdict over the set of models the data allow answers stable / unstable /
undecided with an interval, and a relay run is reported beside it.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from klcontrol.analysis.identification import models as pm
from klcontrol.analysis.identification.control_validation import (
    BAND_LIMIT,
    LoopBand,
    band_statistic,
    loop_band,
    open_loop_traces,
    select_model,
)
from klcontrol.analysis.identification.traces import aligned, read_trace
from klcontrol.analysis.stability.critical import controller_response, critical_gain_from_response
from klcontrol.analysis.verdicts.model_set import (
    relay_beside,
    set_critical_gains,
    set_members,
    set_responses,
    set_verdict,
)
from klcontrol.data import path as data_path
from klcontrol.simulate import Trace

SHIPPED = data_path("identify")


def _read(folder, name):
    return aligned(read_trace(f"{folder}/{name}.csv.gz"))


def _ringing_plant():
    """A Hammerstein plant with the dSprites ring (period ≈ 45, damping ≈ 15 updates)."""
    r, th = np.exp(-1 / 15), 2 * np.pi / 45
    f = np.real(np.poly([r * np.exp(1j * th), r * np.exp(-1j * th)]))
    b = np.array([np.sum(f)])
    g = pm.LogPchipGain([2.0, 4.0, 8.0], [17.0, 13.3, 9.5])
    return pm.HammersteinFit("oe", b, f, g, (1, 2))


def _excitation(plant, seed, n=2400, lead=100, noise=0.3):
    rng = np.random.default_rng(seed)
    beta = np.full(n, 4.0)
    t = lead
    while t < n:
        hold = int(np.exp(rng.uniform(np.log(5), np.log(200))))
        beta[t:t + hold] = 4.0 * np.exp(rng.choice([-0.3, 0.3]))
        t += hold
    kl = plant.simulate(beta) + noise * rng.standard_normal(n)
    nan = np.full(n, np.nan)
    return Trace(step=np.arange(n), beta=beta, kl=kl, setpoint=nan, meta={"source": f"sim{seed}"})


def test_band_statistic_accepts_the_true_plant_and_rejects_one_without_its_ring():
    plant = _ringing_plant()
    traces = [_excitation(plant, s) for s in (1, 2, 3)]
    ol, beta_star = open_loop_traces(traces)
    assert len(ol) == 3 and beta_star == 4.0
    band = loop_band(ol, beta_star, window=5)
    assert band is not None and 35 < band.critical_period < 60
    assert band_statistic(plant, band) < BAND_LIMIT
    first = pm.fit_dynamics(traces[:1], plant.g, "first_order")
    assert band_statistic(first, band) > BAND_LIMIT
    back = LoopBand.from_dict(json.loads(json.dumps(band.to_dict())))
    assert back.accepts(plant) and not back.accepts(first)
    with pytest.raises(ValueError, match="loop band"):
        LoopBand.from_dict({"freqs": [0.1]})


def test_open_loop_traces_skips_closed_loop_and_constant_runs():
    plant = _ringing_plant()
    ol = _excitation(plant, 1)
    const = Trace(step=np.arange(10), beta=np.full(10, 4.0), kl=np.ones(10), setpoint=np.full(10, np.nan))
    closed = Trace(step=np.arange(10), beta=np.linspace(3, 5, 10), kl=np.ones(10), setpoint=np.full(10, 13.0))
    assert open_loop_traces([ol, const, closed]) == ([ol], 4.0)
    assert open_loop_traces([const, closed]) == ([], None)


@pytest.mark.parametrize("folder,fit_run", [(SHIPPED, "ol_b4_s2"),
                                            ("docs/results/repeatability/dsprites/s0", "ol_b4_s1")])
def test_a_candidate_missing_the_ring_cannot_win_on_real_traces(folder, fit_run):
    static = [_read(folder, n) for n in ("settle_b2", "settle_b4")]
    held_names = [n for n in ("ol_b4_s1", "ol_b4_s2", "cl_b4_s3", "ol_b4_s4") if n != fit_run]
    g = pm.static_map_from_traces(static)
    best, rep = select_model([_read(folder, fit_run)], g, [_read(folder, n) for n in held_names],
                             fit_names=[fit_run], held_out_names=held_names)
    assert rep["warning"] is None
    assert best.structure == "oe" and rep["candidates"][rep["chosen"]]["ring_period"] is not None
    assert 35 < rep["candidates"][rep["chosen"]]["ring_period"] < 60
    for r in rep["candidates"]:
        if r["ring_period"] is None:  # no complex pair: the 50-update mean could not tell, the band does
            assert r["passes_band"] is False
    members = [rep["candidates"][i] for i in rep["model_set"]]
    assert members and all(m["passes_band"] for m in members)
    assert len(best.info["model_set"]) == len(members)


@pytest.fixture(scope="module")
def set_fit(tmp_path_factory):
    folder = "docs/results/repeatability/dsprites/s0"
    static = [_read(folder, n) for n in ("settle_b2", "settle_b4")]
    held = ["ol_b4_s2", "cl_b4_s3", "ol_b4_s4"]
    best, _ = select_model([_read(folder, "ol_b4_s1")], pm.static_map_from_traces(static),
                           [_read(folder, n) for n in held], fit_names=["ol_b4_s1"], held_out_names=held)
    path = tmp_path_factory.mktemp("set") / "fit.json"
    best.save(path)
    return path, float(best.g(4.0))


def test_model_set_verdicts_and_intervals(set_fit):
    from klcontrol.analysis.identification.fits import load_fit

    path, c = set_fit
    fit = load_fit(path)
    plants = set_members(fit, draws=30)
    assert len(plants) > len(fit.info["model_set"])  # draws the band accepts join the members
    cache = set_responses(fit, [c], draws=30)
    crit = set_critical_gains(fit, [0.0, 10.0], window=5, setpoints=[c], draws=30, _responses_cache=cache)
    lo, hi = crit["0"]["interval"]
    assert 0.05 < lo < crit["0"]["ki"] < hi < 0.3
    assert 35 < crit["0"]["period"] < 60
    v = lambda kp, ki: set_verdict(fit, kp, ki, window=5, setpoints=[c], draws=30, _responses_cache=cache)  # noqa
    assert v(0.0, lo / 2)["verdict"] == "stable"
    assert v(0.0, hi * 2)["verdict"] == "unstable"
    mid = v(0.0, crit["0"]["ki"])
    assert mid["verdict"] == "undecided" and 0.05 < mid["fraction_stable"] < 0.95
    assert v(10 * lo / 2, lo / 2)["verdict"] == "stable"
    # Ki = 0: decided on the closed loop's eigenvalues plant by plant, not on a ray
    from klcontrol.analysis.stability.lti import robust_stability_lti

    zero = set_verdict(fit, 0.01, 0.0, window=5, controller="positional", setpoints=[c], draws=0)
    each = [robust_stability_lti(0.01, 0.0, [p], 5, 0, "positional", setpoints=[c], margins=False).stable
            for _, p in set_members(fit, draws=0)]
    assert zero["plants"] == len(each) and zero["fraction_stable"] == np.mean(each)
    # the relay beside the set
    relay = dict(trace="r.csv.gz", ratio=0.0, ki=crit["0"]["ki"], period=45.0, cycles=8)
    assert relay_beside([relay], crit)[0]["agrees"] is True
    far = dict(relay, ki=hi * 3)
    assert relay_beside([far], crit)[0]["agrees"] is False


def test_the_relay_conditioned_set_keeps_exactly_the_plants_the_relay_confirms(set_fit):
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.verdicts.model_set import condition_on_relay, plant_critical_gains

    path, c = set_fit
    fit = load_fit(path)
    cache = set_responses(fit, [c], draws=30)
    ks0, _ = plant_critical_gains(cache[0], 0.0, 5)
    relay = float(np.median(ks0)) * 0.97
    kept, info = condition_on_relay(cache, relay, window=5, tolerance=0.1, min_plants=1)
    # independent count: each plant's own critical gain against the relay's band, from its frequency response
    from klcontrol.analysis.stability.critical import critical_gain_from_response
    from klcontrol.analysis.verdicts.model_set import _FREQS

    own = [critical_gain_from_response(_FREQS, r[0], 0.0, window=5) for _, r in cache[0]]
    expect = [lbl for (lbl, _), cg in zip(cache[0], own) if cg is not None and abs(cg.ki / relay - 1) <= 0.1]
    assert info["conditioned"] and info["kept"] == len(expect) == len(kept[0]) < info["plants"]
    assert [lbl for lbl, _ in kept[0]] == expect and kept[1] == cache[1]
    # the rays' intervals over the kept plants are narrower on Kp = 0 and lie inside the relay's band
    crit = set_critical_gains(fit, [0.0], window=5, _responses_cache=kept)
    assert relay * 0.9 <= crit["0"]["interval"][0] and crit["0"]["interval"][1] <= relay * 1.1
    # too few confirmed: the set is left whole, flagged
    whole, info = condition_on_relay(cache, relay * 10, window=5)
    assert whole is cache and not info["conditioned"] and info["kept"] == 0
    with pytest.raises(ValueError, match="positive and finite"):
        condition_on_relay(cache, float("nan"), window=5)
    with pytest.raises(ValueError, match="tolerance"):
        condition_on_relay(cache, relay, window=5, tolerance=1.5)


def test_parameter_draws_are_stable_plants_and_absent_without_a_covariance(set_fit):
    from klcontrol.analysis.identification.fits import load_fit

    fit = load_fit(set_fit[0])
    draws = fit.parameter_draws(20, seed=1)
    assert 0 < len(draws) <= 20 and all(np.all(np.abs(d.poles) < 1) for d in draws)
    bare = pm.HammersteinFit(fit.structure, fit.b, fit.f, fit.g, fit.orders)
    assert bare.parameter_draws(20) == []


def test_critical_gain_from_response_with_a_precomputed_controller():
    plant = _ringing_plant()
    f = np.linspace(1e-3, 0.5, 3000)
    resp = plant.frequency_response(f, beta_star=4.0)
    a = critical_gain_from_response(f, resp, 2.0, window=5)
    b = critical_gain_from_response(f, resp, 2.0, controller_values=controller_response(f, 2.0, 1.0, 5))
    assert a == b and a is not None


def test_check_reports_the_model_set_and_the_relay_beside_it(set_fit, tmp_path):
    path, c = set_fit
    relay = "docs/results/repeatability/dsprites/s0/relay_b4_s50.csv.gz"

    def check(ki, *extra):
        cmd = [sys.executable, "-m", "klcontrol", "check", "--fit", str(path), "--kp", "0", "--ki", str(ki),
               "--window", "5", "--setpoint", f"{c}", "--draws", "20", *extra]
        return subprocess.run(cmd, capture_output=True, text=True)

    r = check(0.03, "--ray", "0", "10", "--relay", relay)
    assert r.returncode == 0, r.stderr
    assert "model set" in r.stdout and "STABLE" in r.stdout and "relay (model-free" in r.stdout
    assert "critical Ki on Kp = 10·Ki" in r.stdout and "agrees with the set" in r.stdout
    out = json.loads(check(0.03, "--ray", "0", "--json").stdout)
    assert out["model_set"]["verdict"]["verdict"] == "stable"
    assert out["model_set"]["critical_gain"]["0"]["interval"][0] > 0.03
    r = check(0.5, "--ray", "0")
    assert r.returncode == 3 and "UNSTABLE" in r.stdout
    r = check(0.03, "--relay", str(path))
    assert r.returncode == 1 and "not a relay run" in r.stderr and "Traceback" not in r.stderr
    # the relay-conditioned set is printed beside the set, and decides with --relay-conditioned
    out = json.loads(check(0.03, "--ray", "0", "10", "--relay", relay, "--json").stdout)
    rc = out["model_set"]["relay_conditioned"]
    assert rc["plants"] == out["model_set"]["verdict"]["plants"] and rc["kept"] <= rc["plants"]
    assert "decides" not in rc
    r = check(0.03, "--ray", "0", "10", "--relay", relay, "--relay-conditioned")
    assert r.returncode == 0 and ("<- the verdict" in r.stdout or "too few" in r.stdout)
    r = check(0.03, "--relay-conditioned")
    assert r.returncode == 1 and "--relay-conditioned needs a relay run" in r.stderr and "Traceback" not in r.stderr
