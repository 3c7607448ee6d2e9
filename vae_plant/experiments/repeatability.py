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

from klcontrol.analysis.identification.relay import RELAY_TOLERANCE

__all__ = ["identification_summary", "write_repeatability", "markdown_table", "relay_conditioned_goals", "main",
           "RELAY_TOLERANCE", "RULES", "read_runs",
           "label_consistency"]


def _rel(path, root):
    return os.path.relpath(os.path.abspath(path), root)


#: The verdict rules a repeatability file can use (``--rule``).
RULES = ("model-set", "relay-conditioned")


def _fit_folder(folder, beta_star, window):
    """The model set of one identification's exported runs: :func:`select_model` as ``klcontrol fit`` runs it."""
    from klcontrol.analysis.identification.control_validation import select_model
    from klcontrol.vae_plant.experiments.selection import read_identification

    plan, read, g = read_identification(folder)
    fit = [r["name"] for r in plan["excites"] if r.get("role") == "fit"]
    held = [r["name"] for r in plan["excites"] if r.get("role") == "held_out" and r["beta"] == beta_star]
    best, rep = select_model([read(n) for n in fit], g, [read(n) for n in held], fit_names=fit, held_out_names=held,
                             window=window)
    return best, rep, float(g(beta_star))


def _verdict(ki, iv):
    return "undecided" if iv is None else "stable" if ki < iv[0] else "unstable" if ki > iv[1] else "undecided"


def _conditioned_interval(cache, relay_ki, ratio, window, min_plants=None):
    """The ray's 95 % interval over the plants the relay keeps (:func:`condition_on_relay`), or None where the
    relay keeps too few or some kept plant never turns unstable on the ray (the interval is then left as it was)."""
    import numpy as np

    from klcontrol.analysis.verdicts.model_set import condition_on_relay, plant_critical_gains

    kept, info = condition_on_relay(cache, relay_ki, window, **({} if min_plants is None else
                                                                 {"min_plants": min_plants}))
    if not info["conditioned"]:
        return None, info
    ks, _ = plant_critical_gains(kept[0], ratio, window)
    if not np.all(np.isfinite(ks)):
        return None, info
    return [float(q) for q in np.quantile(ks, [0.025, 0.975])], info


def identification_summary(seed, folder, beta_star, rays, test_gains, window=5, root=".", use_relay=True,
                           rule="model-set"):
    """The set verdicts at the test gains, the critical-gain intervals and the relay result of one identification.

    The identification's exported runs are fitted as ``klcontrol fit --model hammerstein`` fits them (the fit run,
    the held-out runs, g from the settle runs); the verdicts and intervals are the model set's
    (:mod:`klcontrol.analysis.verdicts.model_set`) at the settled KL of β*. Where no candidate passes the loop-band
    test, the set is the measured frequency response instead (its interval over segment lengths and left-out
    runs). On the integral ray, when the identification has a relay run and ``use_relay``, the interval is the
    relay's critical gain ±:data:`RELAY_TOLERANCE` (a direct measurement on the real loop). With
    ``rule="relay-conditioned"`` the other rays' intervals are the model set's after
    :func:`~klcontrol.analysis.verdicts.model_set.condition_on_relay` (where the set, not the measured response,
    gives them).
    """
    from klcontrol.analysis.identification.frequency import critical_gain_interval
    from klcontrol.analysis.identification.relay import relay_from_file
    from klcontrol.analysis.identification.traces import read_trace
    from klcontrol.analysis.verdicts.model_set import set_critical_gains, set_responses

    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    best, rep, setpoint = _fit_folder(folder, beta_star, window)
    ol = sorted(p for p in glob(os.path.join(folder, "ol_*.csv.gz")) if "_b%g_" % beta_star in os.path.basename(p))
    measured = {}
    for r in rays:
        c = critical_gain_interval([read_trace(p) for p in ol], beta_star, r, window=window) if ol else None
        measured[f"{r:g}"] = c["interval"] if c else None
    set_ok = rep["warning"] is None or rep["band"] is None
    cache = None
    if set_ok:
        cache = set_responses(best, [setpoint])
        sc = set_critical_gains(best, rays, window, setpoints=[setpoint], _responses_cache=cache)
        crit = {k: (None if v["interval"] is None else [v["interval"][0], v["interval"][1] or float("inf")])
                for k, v in sc.items()}
        source = {k: "model set" for k in crit}
    else:
        crit, source = dict(measured), {k: "measured response" for k in measured}
    relays = []
    conditioned = {}
    for p in sorted(glob(os.path.join(folder, "relay_*.csv.gz"))):
        r = relay_from_file(p)
        relays.append(dict(seed=seed, trace=_rel(p, root), critical_gain={f"{r['ratio']:g}": r["ki"]},
                           period=r["period"], loop_phase_deg=r["loop_phase_deg"], cycles=r["cycles"]))
        if rule == "relay-conditioned" and cache is not None and r["ratio"] == 0 and not conditioned:
            for ray in rays:
                if ray == 0:
                    continue
                iv, info = _conditioned_interval(cache, r["ki"], ray, window)
                conditioned[f"{ray:g}"] = dict(info, before=crit[f"{ray:g}"], after=iv or crit[f"{ray:g}"])
                if iv is not None:
                    crit[f"{ray:g}"] = iv
                    source[f"{ray:g}"] = "model set | relay"
        if use_relay and f"{r['ratio']:g}" in crit:
            crit[f"{r['ratio']:g}"] = [r["ki"] * (1 - RELAY_TOLERANCE), r["ki"] * (1 + RELAY_TOLERANCE)]
            source[f"{r['ratio']:g}"] = "relay"
    verdicts = []
    for kp, ki in test_gains:
        verdicts.append(dict(kp=kp, ki=ki, predicted=_verdict(ki, crit.get(f"{kp / ki:g}" if ki else "inf"))))
    chosen = rep["candidates"][rep["chosen"]]
    out = dict(seed=seed, folder=_rel(folder, root), verdicts=verdicts, critical_gain=crit, interval_source=source,
               measured_response_interval=measured, setpoint=setpoint,
               model=dict(chosen=f"{chosen['structure']}{'' if chosen['orders'] is None else tuple(chosen['orders'])}",
                          model_set=[f"{rep['candidates'][i]['structure']}"
                                     f"{'' if rep['candidates'][i]['orders'] is None else tuple(rep['candidates'][i]['orders'])}"
                                     for i in rep["model_set"]], warning=rep["warning"]))
    if conditioned:
        out["relay_conditioning"] = conditioned
    return out, relays


_RULE_TEXT = {
    "model-set": "stable below the identification's critical-gain interval on the test gain's ray, unstable above, "
                 "undecided inside; the interval is the model set's (klcontrol fit's validation for control: the "
                 "candidates matching the measured response in the loop band, with their parameter draws; 95 % of "
                 "the set), or the measured frequency response's where no candidate passes; on the integral ray "
                 f"the relay's critical gain ±{RELAY_TOLERANCE:.0%} (the relay rule chosen after seeing MNIST seeds "
                 "0-2; the model set rule written before the dSprites study's runs 1-9 were seen)",
}
_RULE_TEXT["relay-conditioned"] = (
    _RULE_TEXT["model-set"] + "; then the model set conditioned on the relay: on every other ray the 95 % interval "
    "of the plants whose integral-ray critical gain lies within the relay's ±15 % (klcontrol.analysis.verdicts."
    "model_set.condition_on_relay; left unchanged where fewer than 20 plants are kept). Chosen after the dSprites "
    "study (seeds 0-9) was seen; pre-registered at a20391d for the fresh networks 10-13")


def read_runs(run_summaries, rays, window=5, root="."):
    """The real runs of ``verify-stability --summary`` files on the given rays, as the repeatability file lists them.

    Parameters
    ----------
    run_summaries : sequence of str
        Summary files; ``NETWORK=PATH`` names the identification seed whose settled network the runs started from
        (then each run carries ``network``, and the goals are also evaluated per network).
    """
    runs = []
    for item in run_summaries:
        net, path = (None, item)
        if "=" in item and item.split("=", 1)[0].isdigit():
            net, path = int(item.split("=", 1)[0]), item.split("=", 1)[1]
        with open(path) as fh:
            s = json.load(fh)
        for r in s["runs"]:
            if r["window"] != window or round(r["kp"] / r["ki"], 9) not in {round(x, 9) for x in rays}:
                continue
            runs.append(dict(kp=r["kp"], ki=r["ki"], seed=r["seed"], trace=_rel(r["trace"], root),
                             observed_stable=bool(r["observed_stable"]), summary=_rel(path, root),
                             **({} if net is None else {"network": net})))
    return runs


def write_repeatability(out, plant, batch_size, beta_star, identifications, run_summaries, rays=(0.0, 10.0),
                        window=5, root=".", rule="model-set", subsets=None):
    """Assemble and write the repeatability file; returns it (with ``goals`` evaluated).

    Parameters
    ----------
    identifications : dict seed → folder of exported runs
    run_summaries : sequence of str
        ``verify-stability --summary`` files whose runs (exported traces) are the real verdicts (``NETWORK=PATH``:
        see :func:`read_runs`).
    rule : {"model-set", "relay-conditioned"}
        The verdict rule (:func:`identification_summary`).
    subsets : dict, optional
        name → identification seeds: the goals also evaluated on those identifications against the runs on their
        networks only (e.g. the fresh networks of a pre-registered test).
    """
    from klcontrol.fileio import write_json

    runs = read_runs(run_summaries, rays, window, root)
    gains = sorted({(r["kp"], r["ki"]) for r in runs}, key=lambda g: (g[0] / g[1], g[1]))
    idents, relays = [], []
    for seed, folder in sorted(identifications.items()):
        i, rl = identification_summary(seed, folder, beta_star, rays, gains, window, root, rule=rule)
        idents.append(i)
        relays += rl
    goals = _goals(idents, relays, runs, rays)
    doc = dict(plant=plant, batch_size=batch_size, beta_star=beta_star, window=window, rule=rule,
               verdict_rule=_RULE_TEXT[rule], identifications=idents, relay=relays, runs=runs, goals=goals,
               label_consistency=label_consistency(runs, rays))
    if subsets:
        doc["goals_on_subsets"] = {}
        for name, seeds in subsets.items():
            seeds = set(seeds)
            sub_runs = [r for r in runs if r.get("network") in seeds]
            sub_ids = [i for i in idents if i["seed"] in seeds]
            doc["goals_on_subsets"][name] = dict(
                identifications=sorted(seeds), runs=len(sub_runs),
                goals=_goals(sub_ids, [r for r in relays if r["seed"] in seeds], sub_runs, rays))
    write_json(out, doc)
    return doc


def _bracket(runs, ratio):
    """``(lo, hi)``: the highest Ki below which every run on the ray was stable, the lowest from which every run was
    unstable; a gain with mixed outcomes (seeds, networks) lies inside, since the boundary passes there."""
    on = [r for r in runs if round(r["kp"] / r["ki"], 9) == round(ratio, 9)]
    gains = sorted({r["ki"] for r in on})
    every_u = [k for k in gains if all(not r["observed_stable"] for r in on if r["ki"] == k)
               and all(not r["observed_stable"] for r in on if r["ki"] >= k)]
    hi = min(every_u) if every_u else None
    every_s = [k for k in gains if all(r["observed_stable"] for r in on if r["ki"] <= k)]
    lo = max(every_s) if every_s else None
    return (lo, hi)


def _first_unstable_bracket(runs, ratio):
    """The bracket as first defined (max stable below the first unstable run, first unstable run), for the record."""
    on = [r for r in runs if round(r["kp"] / r["ki"], 9) == round(ratio, 9)]
    unstable = [r["ki"] for r in on if not r["observed_stable"]]
    first_u = min(unstable) if unstable else None
    stable = [r["ki"] for r in on if r["observed_stable"] and (first_u is None or r["ki"] < first_u)]
    return (max(stable) if stable else None, first_u)


def label_consistency(runs, rays):
    """How far the real runs' labels are from one stability boundary per network and ray.

    On one network, a ray ``Kp = r·Ki`` is stable below its critical gain and unstable above (one crossing: what
    every model of the set shows on these rays). For each network and ray, the fewest labels that must change for
    that to hold, and the runs that are out of order at a best threshold: labels the observed-stability rules
    (:func:`klcontrol.analysis.verdicts.observed.observed_stability`) probably got wrong, or a boundary that moves
    between seeds. Runs without ``network`` are grouped as one network.

    Returns
    -------
    list of dict
        ``{"network", "ray", "runs", "fewest_changes", "out_of_order": [{"kp", "ki", "seed", "observed_stable"}]}``.
    """
    out = []
    groups = {}
    for r in runs:
        ray = min(rays, key=lambda x: abs(r["kp"] / r["ki"] - x))
        groups.setdefault((r.get("network"), f"{ray:g}"), []).append(r)
    for (net, ray), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        cuts = sorted({r["ki"] for r in rs}) + [float("inf")]
        best = min(cuts, key=lambda c: sum((r["ki"] < c) != r["observed_stable"] for r in rs))
        bad = [r for r in rs if (r["ki"] < best) != r["observed_stable"]]
        out.append(dict(network=net, ray=ray, runs=len(rs), fewest_changes=len(bad),
                        out_of_order=[{k: r[k] for k in ("kp", "ki", "seed", "observed_stable")} for r in bad]))
    return out


def _goals(idents, relays, runs, rays):
    agree = decided = undecided = total = 0
    own = dict(agree=0, decided=0, undecided=0, total=0)
    gains = {(r["kp"], r["ki"]) for r in runs}
    verdicts = verdicts_undecided = 0
    for i in idents:
        pred = {(v["kp"], v["ki"]): v["predicted"] for v in i["verdicts"]}
        at = [pred[g] for g in gains]
        verdicts += len(at)
        verdicts_undecided += sum(p == "undecided" for p in at)
        for r in runs:
            p = pred[(r["kp"], r["ki"])]
            total += 1
            mine = r.get("network") == i["seed"]
            own["total"] += mine
            if p == "undecided":
                undecided += 1
                own["undecided"] += mine
                continue
            decided += 1
            agree += (p == "stable") == r["observed_stable"]
            own["decided"] += mine
            own["agree"] += mine and (p == "stable") == r["observed_stable"]
    brackets = {f"{r:g}": _bracket(runs, r) for r in rays}
    old_brackets = {f"{r:g}": _first_unstable_bracket(runs, r) for r in rays}
    meets = []
    old_meets = 0
    for i in idents:
        for k, iv in i["critical_gain"].items():
            lo, hi = brackets[k]
            ok = iv is not None and (hi is None or iv[0] <= hi) and (lo is None or iv[1] >= lo)
            meets.append(dict(seed=i["seed"], ray=k, interval=iv, observed=[lo, hi], meets=bool(ok)))
            olo, ohi = old_brackets[k]
            old_meets += bool(iv is not None and (ohi is None or iv[0] <= ohi) and (olo is None or iv[1] >= olo))
    relay_ok = []
    for r in relays:
        for k, v in r["critical_gain"].items():
            lo, hi = brackets.get(k, (None, None))
            ok = (lo is None or v >= lo / 1.15) and (hi is None or v <= hi * 1.15)
            relay_ok.append(dict(seed=r["seed"], ray=k, ki=v, observed=[lo, hi], within_15_percent=bool(ok)))
    return dict(identifications=len(idents), agreement_among_decided=agree / decided if decided else None,
                decided=decided, undecided_fraction=undecided / total if total else None,
                undecided_definition="undecided_fraction: of the (identification, run) pairs; "
                                     "undecided_fraction_of_verdicts: of the (identification, test gain) verdicts",
                undecided_fraction_of_verdicts=verdicts_undecided / verdicts if verdicts else None,
                own_network=dict(own, agreement_among_decided=own["agree"] / own["decided"] if own["decided"] else None,
                                 undecided_fraction=own["undecided"] / own["total"] if own["total"] else None,
                                 definition="each identification against the runs on its own network only"),
                intervals_meeting_the_bracket=sum(m["meets"] for m in meets), intervals=len(meets),
                interval_checks=meets, relay_within_15_percent=sum(r["within_15_percent"] for r in relay_ok),
                relays=len(relay_ok), relay_checks=relay_ok, observed_brackets=brackets,
                bracket_rule="lo: the highest Ki below which every run on the ray was stable; hi: the lowest Ki from "
                             "which every run was unstable (changed after the MNIST study was seen, from 'first "
                             "unstable run': the count under that rule is intervals_meeting_first_unstable_bracket)",
                intervals_meeting_first_unstable_bracket=old_meets, first_unstable_brackets=old_brackets)


def markdown_table(doc: dict) -> str:
    """README tables of a repeatability file: per identification, then the goals."""
    rays = sorted(doc["goals"]["observed_brackets"], key=float)
    relay = {r["seed"]: r for r in doc["relay"]}
    head = "| identification | chosen model (set) | " + " | ".join(f"interval Kp = {r}·Ki (source)" for r in rays)
    lines = [head + " | relay Kp = 0 (period) | verdicts: stable / unstable / undecided |",
             "|---" * (len(rays) + 4) + "|"]
    for i in doc["identifications"]:
        m = i.get("model", {})
        cells = []
        for r in rays:
            iv = i["critical_gain"].get(r)
            src = i.get("interval_source", {}).get(r, "")
            cells.append("—" if iv is None else f"{iv[0]:.3g} – {iv[1]:.3g} ({src})")
        rl = relay.get(i["seed"])
        rtxt = "—" if rl is None else f"{rl['critical_gain'].get('0', float('nan')):.3g} ({rl['period']:.3g})"
        n = {k: sum(v["predicted"] == k for v in i["verdicts"]) for k in ("stable", "unstable", "undecided")}
        set_txt = f"{m.get('chosen', '?')} ({len(m.get('model_set', []))})" + (" ⚠" if m.get("warning") else "")
        lines.append(f"| seed {i['seed']} | {set_txt} | " + " | ".join(cells) +
                     f" | {rtxt} | {n['stable']} / {n['unstable']} / {n['undecided']} |")
    g = doc["goals"]
    br = "; ".join(f"Kp = {r}·Ki: {lo} – {hi}" for r, (lo, hi) in g["observed_brackets"].items())
    lines += ["", "| goal | measured | |", "|---|---|---|",
              f"| set verdict agrees with the real runs, among decided (≥ 95 %) | {100 * g['agreement_among_decided']:.1f} % "
              f"({round(g['agreement_among_decided'] * g['decided'])} of {g['decided']}) | "
              f"{'met' if g['agreement_among_decided'] >= 0.95 else 'not met'} |",
              f"| undecided (≤ 20 %), of (identification, run) pairs | {100 * g['undecided_fraction']:.1f} % | "
              f"{'met' if g['undecided_fraction'] <= 0.2 else 'not met'} |",
              f"| undecided (≤ 20 %), of (identification, test gain) verdicts | "
              f"{100 * g['undecided_fraction_of_verdicts']:.1f} % | "
              f"{'met' if g['undecided_fraction_of_verdicts'] <= 0.2 else 'not met'} |",
              f"| every interval meets the observed bracket ({br}) | {g['intervals_meeting_the_bracket']} of "
              f"{g['intervals']} (first-unstable bracket: {g.get('intervals_meeting_first_unstable_bracket')}) | "
              f"{'met' if g['intervals_meeting_the_bracket'] == g['intervals'] else 'not met'} |",
              f"| relay within ±15 % of the bracket | {g['relay_within_15_percent']} of {g['relays']} | "
              f"{'met' if g['relay_within_15_percent'] == g['relays'] else 'not met'} |"]
    own = g.get("own_network") or {}
    if own.get("total") and own.get("decided"):
        lines.append(f"| each identification against the runs on its own network | "
                     f"{100 * own['agreement_among_decided']:.1f} % agree ({own['agree']} of {own['decided']}), "
                     f"{100 * own['undecided_fraction']:.1f} % undecided of {own['total']} | |")
    return "\n".join(lines)


def relay_conditioned_goals(doc: dict, root: str = ".", window: int = 5, min_plants: int = 20) -> dict:
    """The goals of a model-set repeatability file re-evaluated with the model set conditioned on the relay.

    Chosen after the dSprites study was seen (so not validated by it; the fresh networks of
    ``docs/results/repeatability/dsprites/fresh/PLAN.md`` test it). For each identification whose Kp = 10·Ki
    interval comes from the model set and that has a relay run, that interval becomes the 95 % interval of the
    plants :func:`~klcontrol.analysis.verdicts.model_set.condition_on_relay` keeps (unchanged when fewer than
    ``min_plants`` are kept or a kept plant never turns unstable on the ray).

    Returns
    -------
    dict
        ``goals`` (as :func:`write_repeatability`'s) and ``intervals`` (seed → ``{"before", "after", "kept",
        "plants"}``).
    """
    from klcontrol.analysis.identification.relay import relay_from_file
    from klcontrol.analysis.verdicts.model_set import set_responses

    tests = [(v["kp"], v["ki"]) for v in doc["identifications"][0]["verdicts"]]
    idents, intervals = [], {}
    for i in doc["identifications"]:
        folder = os.path.join(root, i["folder"])
        crit = dict(i["critical_gain"])
        relays = sorted(glob(os.path.join(folder, "relay_*.csv.gz")))
        if i.get("interval_source", {}).get("10") in ("model set", "model set | relay") and relays:
            best, _, setpoint = _fit_folder(folder, doc["beta_star"], window)
            iv, info = _conditioned_interval(set_responses(best, [setpoint]), relay_from_file(relays[0])["ki"], 10.0,
                                             window, min_plants)
            before = crit["10"]
            crit["10"] = iv or before
            intervals[i["seed"]] = dict(before=before, after=crit["10"], kept=info["kept"], plants=info["plants"])
        verdicts = [dict(kp=kp, ki=ki, predicted=_verdict(ki, crit.get(f"{kp / ki:g}" if ki else "inf")))
                    for kp, ki in tests]
        idents.append(dict(seed=i["seed"], verdicts=verdicts, critical_gain=crit))
    rays = sorted({float(k) for i in doc["identifications"] for k in i["critical_gain"]})
    return dict(goals=_goals(idents, doc["relay"], doc["runs"], rays), intervals=intervals,
                rule="chosen after the dSprites study was seen: model set conditioned on the relay (±15 %)")


def main(argv=None) -> int:
    """Command line: see the module docstring (``--relay-conditioned FILE``: :func:`relay_conditioned_goals`)."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--relay-conditioned"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as fh:
            r = relay_conditioned_goals(json.load(fh))
        g = r["goals"]
        print(json.dumps({"rule": r["rule"], "ray_10_intervals": r["intervals"],
                          **{k: g[k] for k in ("agreement_among_decided", "decided", "undecided_fraction",
                                               "intervals_meeting_the_bracket", "intervals")}}, indent=1))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plant", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--beta-star", type=float, required=True)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--ray", type=float, nargs="+", default=[0.0, 10.0])
    p.add_argument("--identification", action="append", required=True, metavar="SEED=DIR")
    p.add_argument("--runs", nargs="+", required=True, metavar="[NETWORK=]SUMMARY_JSON",
                   help="verify-stability summaries; NETWORK= names the identification seed whose network ran them")
    p.add_argument("--rule", choices=RULES, default="model-set", help="verdict rule (default model-set)")
    p.add_argument("--subset", action="append", default=[], metavar="NAME=SEED,SEED…",
                   help="also evaluate the goals on these identifications against the runs on their networks")
    p.add_argument("--out", required=True)
    p.add_argument("--markdown", action="store_true", help="also print the README tables")
    a = p.parse_args(argv)
    ids = {int(s.split("=", 1)[0]): s.split("=", 1)[1] for s in a.identification}
    subsets = {}
    for item in a.subset:
        name, _, seeds = item.partition("=")
        try:
            subsets[name] = [int(x) for x in seeds.split(",")]
        except ValueError:
            p.error(f"--subset {item!r}: expected NAME=SEED,SEED…")
    doc = write_repeatability(a.out, a.plant, a.batch_size, a.beta_star, ids, a.runs, a.ray, a.window,
                              rule=a.rule, subsets=subsets)
    g = doc["goals"]
    print(json.dumps({k: v for k, v in g.items() if not k.endswith("checks")}, indent=1))
    for name, sub in doc.get("goals_on_subsets", {}).items():
        print(f"subset {name}: " + json.dumps({k: v for k, v in sub["goals"].items() if not k.endswith("checks")},
                                              indent=1))
    if a.markdown:
        print(markdown_table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
