"""Repeatability of the verdicts: many identifications of one plant, judged against the same real runs.

Each identification (``klcontrol identify --seed S``: other training and excitation seeds) gives, from its own
open-loop excitation runs, the measured critical-gain interval on each ray
(:func:`klcontrol.analysis.identification.frequency.critical_gain_interval`) and so a verdict at each test gain:
**stable** below the interval, **unstable** above it, **undecided** inside it — the verdict over the plants the data
allow, with no single model chosen. Its relay run gives the integral ray's critical gain without any model
(:mod:`klcontrol.analysis.identification.relay`). Both are compared with real closed-loop runs at the test gains
(``klcontrol verify-stability``). :func:`write_repeatability` writes ``docs/results/repeatability/<plant>.json``
in the format of the issue "A verdict that does not depend on luck", with the goals evaluated.

Usage::

    python -m klcontrol.vae_plant.experiments.repeatability --plant mnist --beta-star 4 --window 5 \\
        --identification 0=klcontrol/data/mnist/identify --identification 3=docs/results/repeatability/mnist/s3 … \\
        --runs docs/results/mnist/stability.json --out docs/results/repeatability/mnist.json
"""
from __future__ import annotations

import argparse
import json
import os
from glob import glob

__all__ = ["identification_summary", "write_repeatability", "main", "RELAY_TOLERANCE"]


def _rel(path, root):
    return os.path.relpath(os.path.abspath(path), root)


#: Relative accuracy of the relay's critical gain (docs/identification.md): its interval on the integral ray.
RELAY_TOLERANCE = 0.15


def identification_summary(seed, folder, beta_star, rays, test_gains, window=5, root=".", use_relay=True):
    """Intervals, verdicts at the test gains and the relay result of one identification's exported runs.

    On each ray the interval is the measured frequency response's; on the integral ray, when the identification
    has a relay run and ``use_relay``, it is the relay's critical gain ±:data:`RELAY_TOLERANCE` instead (a direct
    measurement on the real loop, narrower and closer on the real plants).
    """
    from klcontrol.analysis.identification.frequency import critical_gain_interval
    from klcontrol.analysis.identification.relay import relay_critical_gain
    from klcontrol.analysis.identification.traces import read_trace

    ol = sorted(p for p in glob(os.path.join(folder, "ol_*.csv.gz")) if "_b%g_" % beta_star in os.path.basename(p))
    if not ol:
        raise ValueError(f"{folder}: no open-loop excitation runs (ol_*.csv.gz) at β* = {beta_star:g}")
    traces = [read_trace(p) for p in ol]
    crit, measured = {}, {}
    for r in rays:
        c = critical_gain_interval(traces, beta_star, r, window=window)
        crit[f"{r:g}"] = measured[f"{r:g}"] = c["interval"] if c else None
    relays = []
    for p in sorted(glob(os.path.join(folder, "relay_*.csv.gz"))):
        with open(p.replace(".csv.gz", ".config.json")) as fh:
            cfg = json.load(fh)
        exc = cfg["excitation"]
        tr = read_trace(p)
        r = relay_critical_gain(tr.beta, tr.kl, exc["ratio"], exc["h"], exc["setpoint"], exc["window"])
        relays.append(dict(seed=seed, trace=_rel(p, root), critical_gain={f"{exc['ratio']:g}": r["ki"]},
                           period=r["period"], loop_phase_deg=r["loop_phase_deg"], cycles=r["cycles"]))
        if use_relay and f"{exc['ratio']:g}" in crit:
            crit[f"{exc['ratio']:g}"] = [r["ki"] * (1 - RELAY_TOLERANCE), r["ki"] * (1 + RELAY_TOLERANCE)]
    verdicts = []
    for kp, ki in test_gains:
        iv = crit.get(f"{kp / ki:g}" if ki else "inf")
        if iv is None:
            pred = "undecided"
        else:
            pred = "stable" if ki < iv[0] else "unstable" if ki > iv[1] else "undecided"
        verdicts.append(dict(kp=kp, ki=ki, predicted=pred))
    return dict(seed=seed, folder=_rel(folder, root), verdicts=verdicts, critical_gain=crit,
                measured_response_interval=measured), relays


def write_repeatability(out, plant, batch_size, beta_star, identifications, run_summaries, rays=(0.0, 10.0),
                        window=5, root="."):
    """Assemble and write the repeatability file; returns it (with ``goals`` evaluated).

    Parameters
    ----------
    identifications : dict seed → folder of exported runs
    run_summaries : sequence of str
        ``verify-stability --summary`` files whose runs (exported traces) are the real verdicts.
    """
    from klcontrol.fileio import write_json

    runs = []
    for path in run_summaries:
        with open(path) as fh:
            s = json.load(fh)
        for r in s["runs"]:
            if r["window"] != window or round(r["kp"] / r["ki"], 9) not in {round(x, 9) for x in rays}:
                continue
            runs.append(dict(kp=r["kp"], ki=r["ki"], seed=r["seed"], trace=_rel(r["trace"], root),
                             observed_stable=bool(r["observed_stable"]), summary=_rel(path, root)))
    gains = sorted({(r["kp"], r["ki"]) for r in runs}, key=lambda g: (g[0] / g[1], g[1]))
    idents, relays = [], []
    for seed, folder in sorted(identifications.items()):
        i, rl = identification_summary(seed, folder, beta_star, rays, gains, window, root)
        idents.append(i)
        relays += rl
    goals = _goals(idents, relays, runs, rays)
    doc = dict(plant=plant, batch_size=batch_size, beta_star=beta_star, window=window,
               verdict_rule="stable below the identification's critical-gain interval on the test gain's ray, unstable "
                            "above, undecided inside; the interval is the measured frequency response's (open-loop "
                            "runs; spread over segment lengths and left-out runs), on the integral ray the relay's "
                            f"critical gain ±{RELAY_TOLERANCE:.0%} (rule chosen after seeing MNIST seeds 0-2)",
               identifications=idents, relay=relays, runs=runs, goals=goals)
    write_json(out, doc)
    return doc


def _bracket(runs, ratio):
    on = [r for r in runs if round(r["kp"] / r["ki"], 9) == round(ratio, 9)]
    unstable = [r["ki"] for r in on if not r["observed_stable"]]
    first_u = min(unstable) if unstable else None
    stable = [r["ki"] for r in on if r["observed_stable"] and (first_u is None or r["ki"] < first_u)]
    return (max(stable) if stable else None, first_u)


def _goals(idents, relays, runs, rays):
    agree = decided = undecided = total = 0
    for i in idents:
        pred = {(v["kp"], v["ki"]): v["predicted"] for v in i["verdicts"]}
        for r in runs:
            p = pred[(r["kp"], r["ki"])]
            total += 1
            if p == "undecided":
                undecided += 1
                continue
            decided += 1
            agree += (p == "stable") == r["observed_stable"]
    brackets = {f"{r:g}": _bracket(runs, r) for r in rays}
    meets = []
    for i in idents:
        for k, iv in i["critical_gain"].items():
            lo, hi = brackets[k]
            ok = iv is not None and (hi is None or iv[0] <= hi) and (lo is None or iv[1] >= lo)
            meets.append(dict(seed=i["seed"], ray=k, interval=iv, observed=[lo, hi], meets=bool(ok)))
    relay_ok = []
    for r in relays:
        for k, v in r["critical_gain"].items():
            lo, hi = brackets.get(k, (None, None))
            ok = (lo is None or v >= lo / 1.15) and (hi is None or v <= hi * 1.15)
            relay_ok.append(dict(seed=r["seed"], ray=k, ki=v, observed=[lo, hi], within_15_percent=bool(ok)))
    return dict(identifications=len(idents), agreement_among_decided=agree / decided if decided else None,
                decided=decided, undecided_fraction=undecided / total if total else None,
                intervals_meeting_the_bracket=sum(m["meets"] for m in meets), intervals=len(meets),
                interval_checks=meets, relay_within_15_percent=sum(r["within_15_percent"] for r in relay_ok),
                relays=len(relay_ok), relay_checks=relay_ok, observed_brackets=brackets)


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plant", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--beta-star", type=float, required=True)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--ray", type=float, nargs="+", default=[0.0, 10.0])
    p.add_argument("--identification", action="append", required=True, metavar="SEED=DIR")
    p.add_argument("--runs", nargs="+", required=True, metavar="SUMMARY_JSON")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    ids = {int(s.split("=", 1)[0]): s.split("=", 1)[1] for s in a.identification}
    doc = write_repeatability(a.out, a.plant, a.batch_size, a.beta_star, ids, a.runs, a.ray, a.window)
    g = doc["goals"]
    print(json.dumps({k: v for k, v in g.items() if not k.endswith("checks")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
