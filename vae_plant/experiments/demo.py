"""The whole job on the demo's own VAE, with a Markdown report and figures (``klcontrol demo``).

One story, the chain a user runs on their own VAE (:func:`run_demo`):

1. **its run**: train the β-VAE on procedural dSprites under DynamicVAE's control law, with a recipe short enough
   for a CPU (:data:`DEMO_STEPS` updates, :func:`demo_controller`), and draw its latent traversals;
2. **a model-free measurement on this network**: a relay experiment (:class:`~klcontrol.analysis.identification.
   relay.RelayProbe`, :data:`RELAY_STEPS` updates from the trained network, its optimiser state included) measures
   the critical integral gain and the period of the KL's ring;
3. **its fit**: a first-order plant fitted to this VAE's two runs, with its fit % and identifiability, and the
   critical gain it predicts beside the relay's;
4. **its gains**: the recommendation (integral ray, gain margin :data:`RELAY_MARGIN` against the relay's measured
   boundary), and the gains it ran and the paper's, judged on the fit and against the relay side by side;
5. **the same question where a model has been validated**: klcontrol's VAE at batch 16, where recorded traces give a
   first-order fit and ``klcontrol identify`` a model whose verdicts held on real runs; the first-order designs
   are checked on both.

``report.md`` opens with a five-line summary (:func:`summary_lines`, also printed by the CLI); ``summary.json`` holds
every number.  The demo writes only files it lists in ``.klcontrol-demo.json`` and refuses to replace any other.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo", "demo_controller", "summary_lines", "default_threads", "default_traces_dir", "find_traces",
           "DEMO_STEPS", "DEMO_STOP", "DEMO_KI", "DEMO_BETA0", "RELAY_STEPS", "RELAY_H", "RELAY_MARGIN",
           "REAL_BETA_RANGE", "SCHEDULE_STEPS", "DEMO_FILES"]

#: Training updates of the demo's own run (the ``demo`` schedule: batch 32, Adam lr 1e-3).
DEMO_STEPS = 800
#: Integral gain and β(0) of the demo's run (the paper's: 0.005 and 150; see :func:`demo_controller`).
DEMO_KI, DEMO_BETA0 = 0.01, 10.0
#: Final KL set point of the demo's run (nats).  The paper's 20 nats needs β ≈ 1, where all ten latents
#: carry a little of everything; at 12 nats six latents carry the position and size of the sprite.
DEMO_STOP = 12.0
#: Updates of the relay experiment on the trained network (≥ 3 whole cycles of a ring of period ≤ 80 after the
#: 30 % transient the estimate skips; the demo's network rings with a period near 20).
RELAY_STEPS = 400
#: Relay step, a fraction of β* per update (as ``klcontrol identify --relay-h``).
RELAY_H = 0.04
#: The recommended integral gain is the relay's critical gain divided by this: the relay is accurate to ~15 %
#: (docs/your_vae.md), and the boundary moves as the network keeps learning (on klcontrol's VAE by ~10 % between
#: networks); 3 leaves room for both and for the classical gain margin of 2.
RELAY_MARGIN = 3.0
#: β interval of the shipped real traces over which the gains are checked and tuned: the open-loop runs span
#: β = 1 … 16 and the closed-loop run 6.4 … 20; the ends are where g′ rests on a single run.
REAL_BETA_RANGE = (2.0, 16.0)
#: Length of the run the whole-run gain design is made for: the `klcontrol compare --budget cpu` budget.
SCHEDULE_STEPS = 5000
#: The recorded traces fitted by default: shipped with the package (:mod:`klcontrol.data`, ``cpu/``).
DEFAULT_TRACES = "cpu"
#: Every file the demo writes directly in its output directory (besides its run directories and its manifest).
DEMO_FILES = ("report.md", "summary.json", "vae_trace.png", "traversals.png", "relay.png", "fit_own.png",
              "fit_real_traces.png")
_MANIFEST = ".klcontrol-demo.json"
#: The plant the relay runs through: the dSprites VAE as a protocol plant (what ``klcontrol identify`` uses).
_PLANT_SPEC = "klcontrol.vae_plant.training.dsprites_plant:make"
_PATTERNS = ("*.csv.gz", "*.csv", "*.jsonl", "*.jsonl.gz")


def default_threads() -> int:
    """Torch threads for the demo: 1 on a machine with ≤ 2 usable cores, else up to 4.

    On two busy cores one thread ran an update in 1.2 s where torch's default took 2.5–4.3 s; the demo's small
    network gains little beyond four threads.

    Returns
    -------
    int
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return 1 if n <= 2 else min(n, 4)


def demo_controller(steps: int = DEMO_STEPS):
    """DynamicVAE's incremental PI, scaled to a short run at a high learning rate.

    The law, window (T = 5) and Kp are the paper's; the set point is the paper's step-ramp
    compressed so that it reaches :data:`DEMO_STOP` after 5/8 of the run.  β(0) = 10 instead of
    150, and Ki = 0.01 instead of 0.005: from 150 the integral term alone would need tens of
    thousands of updates to bring β down to where the model learns (``Ki·C`` per update).

    Parameters
    ----------
    steps : int
        Length of the run.

    Returns
    -------
    IncrementalPI
    """
    from klcontrol.controllers import IncrementalPI
    from klcontrol.setpoints import StepRamp

    paper = StepRamp.dynamicvae_dsprites()
    sp = StepRamp(paper.start, DEMO_STOP, paper.step, paper.period, paper.ramp)
    sp = sp.compressed(sp.total_steps / max(1.0, 0.625 * steps))
    return IncrementalPI.dynamicvae_dsprites(setpoint=sp, beta0=DEMO_BETA0, ki=DEMO_KI)


def default_traces_dir() -> Path | None:
    """The shipped ``cpu/`` traces (:mod:`klcontrol.data`), if the installation has them.

    Returns
    -------
    Path or None
    """
    from klcontrol import data

    d = data.path(DEFAULT_TRACES) if data.exists(DEFAULT_TRACES) else None
    return d if d is not None and _trace_files(d) else None


def _trace_files(d: Path) -> list:
    return sorted(p for pat in _PATTERNS for p in d.glob(pat)) if d.is_dir() else []


def find_traces(traces=None):
    """The recorded traces to fit: ``(dir, files)``, or ``(None, reason)`` when the default ones are absent.

    Parameters
    ----------
    traces : str or Path, optional
        A directory of ``*.csv.gz``, ``*.csv``, ``*.jsonl`` or ``*.jsonl.gz`` traces; default
        :func:`default_traces_dir`.

    Raises
    ------
    ValueError
        If an explicitly given directory holds no traces.
    """
    if traces is None:
        d = default_traces_dir()
        if d is None:
            return None, (f"no recorded traces shipped in klcontrol's data ({DEFAULT_TRACES}/): the installation is "
                          "incomplete (reinstall klcontrol); pass --traces DIR to fit recorded traces")
        return d, _trace_files(d)
    d = Path(traces)
    files = _trace_files(d)
    if not files:
        raise ValueError(f"--traces {traces}: no *.csv.gz, *.csv, *.jsonl or *.jsonl.gz traces there")
    return d, files


def _shown(p) -> str:
    """A path as the user would type it: a shipped name, or relative to the current directory when below it."""
    from klcontrol import data

    p = Path(p)
    try:
        return f"klcontrol data {p.resolve().relative_to(data.path().resolve()).as_posix()}"
    except ValueError:
        pass
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _check_outputs(out: Path) -> set:
    """Refuse before any work when ``out`` holds a file the demo would write that an earlier demo did not; return
    the names an earlier demo listed as its own (the only files the demo may remove)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    mine = set()
    man = out / _MANIFEST
    if man.is_file():
        try:
            mine = set(json.loads(man.read_text(encoding="utf-8")).get("files", []))
        except (OSError, ValueError, AttributeError):
            mine = set()
    theirs = [n for n in DEMO_FILES if os.path.lexists(out / n) and n not in mine]
    if theirs:
        raise ValueError(f"--out {out}: {', '.join(theirs)} already there and not written by klcontrol demo; the demo "
                         "replaces only its own files: choose another --out or move them")
    return mine & set(DEMO_FILES)


def _write_manifest(out: Path, written) -> None:
    from klcontrol.fileio import write_json

    write_json(out / _MANIFEST, {"made_by": "klcontrol demo", "files": sorted(written)})


def run_demo(out, *, traces=None, device: str = "cpu", steps: int = DEMO_STEPS, seed: int = 0,
             n_boot: int = 40, progress: bool = True, log=None, relay_steps: int = RELAY_STEPS) -> dict:
    """Train, measure, fit, recommend; write ``report.md``, ``summary.json`` and figures to ``out``.

    Parameters
    ----------
    out : str or Path
        Output directory (created; the demo's own earlier files there are replaced, nothing else).
    traces : str or Path, optional
        Directory of recorded traces for section 5 (default: :func:`default_traces_dir`; without it the report
        says the fit was skipped).
    device : {"cpu", "cuda"}
        Training device.
    steps : int
        Training updates (default :data:`DEMO_STEPS`; fewer for a quick check).
    seed : int
        Training seed.
    n_boot : int
        Bootstrap resamples of each plant fit.
    progress : bool
        Print stages and progress bars.
    log : callable, optional
        Receives each stage line (default ``print`` when ``progress``).
    relay_steps : int
        Updates of the relay experiment (0: skip it; the recommendation then falls back to the paper's gains).

    Returns
    -------
    dict
        The summary written to ``summary.json`` (figure paths relative to ``out``).

    Raises
    ------
    ValueError
        An explicit ``traces`` directory without traces, or a file in ``out`` the demo did not write (nothing is
        written then).
    """
    from klcontrol.analysis.identification.first_order import fit_plant
    from klcontrol.analysis.identification.plots import plot_fit
    from klcontrol.fileio import write_json, write_text
    from klcontrol.plotting import plot_trace

    say = (log or (lambda m: print(f"[demo] {m}", flush=True))) if progress else (lambda m: None)
    out = Path(out)
    relay_steps = int(relay_steps)
    if relay_steps and relay_steps < 100:
        raise ValueError(f"--relay-steps must be 0 or ≥ 100 (three whole cycles after the transient), got {relay_steps}")
    found = find_traces(traces)  # before anything is written: a bad directory leaves no trace
    earlier = _check_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    figures = {}

    say(f"1/5 training the β-VAE for {steps} updates (DynamicVAE's law, Kp {_ran_gains()[0]:g}, Ki {DEMO_KI:g}) ...")
    vae = _train(out, steps, seed, device, progress)
    figures["vae_trace"] = str(out / "vae_trace.png")
    plot_trace(vae["trace"], figures["vae_trace"],
               title=f"β-VAE on procedural dSprites, DynamicVAE's law ({steps} updates)")
    figures["traversals"] = str(out / "traversals.png")
    from klcontrol.vae_plant.metrics.diagnostics import traversals_figure

    travers = traversals_figure(vae["result"], figures["traversals"])

    say(f"2/5 relay experiment on the trained network ({relay_steps} updates) ..." if relay_steps else
        "2/5 relay experiment skipped (--relay-steps 0)")
    relay = _relay(out, vae, relay_steps, seed, device, progress, figures) if relay_steps else {
        "available": False, "reason": "skipped (--relay-steps 0)"}

    say("3/5 fitting a first-order plant to this VAE's runs ...")
    runs = [vae["trace"]] + ([relay["_trace"]] if relay.get("_trace") is not None else [])
    own = {"available": False}
    try:
        fit = fit_plant(runs, g="auto", n_boot=n_boot, seed=0)
    except ValueError as exc:  # e.g. a run too short to fit
        own["reason"] = str(exc)
    else:
        figures["fit_own"] = str(out / "fit_own.png")
        plot_fit(fit, figures["fit_own"], title="first-order fit to this VAE's runs (training, relay)")
        own = {"available": True, "fit": fit.summary(), "fit_percent": fit.fit_percents(),
               "identifiable": bool(fit.identifiable), "reasons": list(fit.identifiability["reasons"]), "_fit": fit}

    say("4/5 gains for this VAE: the relay's boundary and the fit's verdicts ...")
    gains = _gains(own, relay)

    say("5/5 klcontrol's batch-16 operating point: first-order fit and identified model ...")
    real = _fit_real_traces(*found, out, figures, n_boot)
    if real["available"]:
        _check_and_tune_real(real)
    identified = _check_identified(found[0], real)

    summary = {
        "vae_run": vae["summary"],
        "traversals": travers,
        "relay": {k: v for k, v in relay.items() if not k.startswith("_")},
        "own_fit": {k: v for k, v in own.items() if not k.startswith("_")},
        "gains": gains,
        "real_traces": {k: v for k, v in real.items() if not k.startswith("_")},
        "identified": identified,
        "figures": {k: os.path.relpath(v, out) for k, v in figures.items()},  # next to report.md
        "seconds": round(time.time() - t0, 1),
    }
    summary["summary_lines"] = summary_lines(summary)
    for name in earlier:  # an earlier demo's figure that this run did not draw would contradict the report
        if name.endswith(".png") and name not in summary["figures"].values():
            (out / name).unlink(missing_ok=True)
    _write_manifest(out, list(DEMO_FILES))  # first: a stop while writing leaves the files known as the demo's
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", "\n".join(_report(summary, real)))
    return summary


def _ran_gains():
    from klcontrol.papers import DYNAMICVAE_GAINS

    return DYNAMICVAE_GAINS[0], DEMO_KI


def _relay(out: Path, vae, steps, seed, device, progress, figures) -> dict:
    """The relay experiment on the trained network, from its final checkpoint (optimiser state included)."""
    from klcontrol.analysis.identification.relay import RelayProbe, relay_critical_gain
    from klcontrol.analysis.identification.traces import read_trace
    from klcontrol.plotting import plot_trace
    from klcontrol.vae_plant.experiments.identify import _start
    from klcontrol.vae_plant.training.plant_runner import run_plant

    s = vae["summary"]
    beta_star, level = s["final_beta"], s["final_kl"]
    h = RELAY_H * beta_star
    design = dict(kind="relay", ratio=0.0, h=h, setpoint=level, window=5, beta=beta_star, steps=int(steps))
    run_dir = out / "relay_run"
    _start(run_dir, design)  # the demo's own earlier relay run is replaced; anything else is refused
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps), unit="step", desc="relay", mininterval=0.5, dynamic_ncols=True)
    try:
        run_plant(run_dir, _PLANT_SPEC, RelayProbe(0.0, h, level, beta_star, 5), int(steps), seed=seed + 50,
                  device=device, batch_size=s["batch_size"], init_from=out / "vae_run", flush_every=10,
                  command=f"klcontrol demo (relay, {steps} updates)",
                  progress=(lambda k, n: bar.update(k - bar.n)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    tr = read_trace(run_dir / "trace.csv")
    tr.setpoint = np.full(len(tr), level)
    tr.meta["source"] = "relay on the trained network"
    figures["relay"] = str(out / "relay.png")
    plot_trace(tr, figures["relay"], title=f"relay: β ± {h:.3g} per update on the sign of the filtered KL error "
               f"(set point {level:.2f} nats)")
    res = {"available": False, "beta_star": beta_star, "setpoint": level, "h": h, "steps": int(steps),
           "run": "relay_run", "_trace": tr}
    try:
        r = relay_critical_gain(tr.beta, tr.kl, 0.0, h, level, 5)
    except ValueError as exc:
        res["reason"] = str(exc)
        return res
    res.update(available=True, ki_critical=r["ki"], period=r["period"], cycles=r["cycles"],
               loop_phase_deg=r["loop_phase_deg"], ki_describing_function=r["ki_describing_function"])
    return res


def _first_order_critical_ki(fit) -> float:
    """The critical Ki on the integral ray over the fit's own β range (exact, robust over its g′ range)."""
    from klcontrol.analysis.verdicts.fits import check_first_order

    probe = 1e-3
    v = check_first_order(fit, 0.0, probe, window=5, delay=0, beta_range=fit.beta_range, widen=False)
    gm = v["gain_margin"]
    return float(probe * gm) if gm is not None and math.isfinite(gm) else math.inf


def _gains(own, relay) -> dict:
    """The recommendation and the verdicts of the ran, the paper's and the recommended gains, side by side."""
    from klcontrol.analysis.verdicts.fits import check_first_order
    from klcontrol.papers import DYNAMICVAE_GAINS

    out = {"margin": RELAY_MARGIN}
    if relay.get("available"):
        rec = (0.0, relay["ki_critical"] / RELAY_MARGIN)
        out["recommended"] = {"kp": rec[0], "ki": rec[1], "source": "relay",
                              "why": f"the critical Ki the relay measured on this network divided by {RELAY_MARGIN:g}: "
                                     f"a gain margin of {RELAY_MARGIN:g}"}
    else:
        rec = tuple(DYNAMICVAE_GAINS)
        out["recommended"] = {"kp": rec[0], "ki": rec[1], "source": "paper",
                              "why": "no relay boundary was measured: the paper's gains, which are slow but far "
                                     "from the boundary on every plant klcontrol has measured"}
    cands = {"ran": _ran_gains(), "paper": tuple(DYNAMICVAE_GAINS), "recommended": rec}
    fit = own.get("_fit")
    if fit is not None:
        out["first_order_critical_ki"] = _first_order_critical_ki(fit)
    rows = {}
    for name, (kp, ki) in cands.items():
        row = {"kp": float(kp), "ki": float(ki)}
        if fit is not None:
            v = check_first_order(fit, kp, ki, window=5, delay=0, beta_range=fit.beta_range, widen=False)
            row["first_order"] = "stable" if v["stable"] else "unstable"
            row["first_order_gain_margin"] = v["gain_margin"]
        if relay.get("available"):
            kc = relay["ki_critical"]
            # The relay measures the Kp = 0 ray. On a ray with Kp > 0 the proportional part adds phase lead near
            # the ring's period, so Ki below the integral ray's critical gain is the conservative reading.
            row["relay"] = ("stable" if ki < kc else "unstable") if kp == 0 else (
                "below the Kp = 0 boundary" if ki < kc else "above the Kp = 0 boundary")
            row["ki_over_critical"] = float(ki / kc)
        rows[name] = row
    out["verdicts"] = rows
    return out


def _f(v, fmt=".3g") -> str:
    return "∞" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def summary_lines(s) -> list:
    """The five-line summary at the top of the report (and printed by ``klcontrol demo``), from the numbers.

    Parameters
    ----------
    s : dict
        The demo's summary (``summary.json``).

    Returns
    -------
    list of str
    """
    v, r, g, own, idf = s["vae_run"], s["relay"], s["gains"], s["own_fit"], s["identified"]
    ctl, rec = v["controller"], g["recommended"]
    lines = [f"This VAE: {v['steps']} updates (batch {v['batch_size']}, lr {v['lr']:g}) under Kp {ctl['kp']:g}, "
             f"Ki {ctl['ki']:g} from β {ctl['beta0']:g}; it ends at β {v['final_beta']:.2f}, KL "
             f"{v['final_kl']:.2f} nats (set point {v['final_setpoint']:.2f}), {s['traversals']['active']} of "
             f"{len(s['traversals']['kl'])} latents in use."]
    if r.get("available"):
        lines.append(f"Use Kp {rec['kp']:g}, Ki {rec['ki']:.3g} on it (gain margin {RELAY_MARGIN:g}): a "
                     f"{r['steps']}-update relay experiment on this network measured the critical Ki at "
                     f"{r['ki_critical']:.3g} (its KL rings with a period of {r['period']:.1f} updates).")
    else:
        lines.append(f"Use the paper's Kp {rec['kp']:g}, Ki {rec['ki']:g}: the relay measured no boundary "
                     f"({r.get('reason', 'not run')}).")
    if own.get("available"):
        pct = ", ".join(f"{p:.0f} %" for p in own["fit_percent"])
        crit = g.get("first_order_critical_ki")
        # an unidentified fit's boundary is whatever its unresolved g′ makes it: not a number to put beside the relay
        versus = (f"; it puts the critical Ki at {_f(crit)}, {_f(crit / r['ki_critical'], '.2g')}× the relay's"
                  if r.get("available") and crit is not None and own["identifiable"] else
                  "; a boundary from it would mean nothing" if not own["identifiable"] else "")
        lines.append(f"Its own first-order fit (fit {pct} on the training and relay runs) is "
                     + ("identifiable" if own["identifiable"] else "NOT identifiable (" + own["reasons"][0].split(": ", 1)[-1]
                        .split(":")[0] + ")") + versus + ".")
    else:
        lines.append(f"No first-order fit of its own runs: {own.get('reason', 'not fitted')}.")
    if idf.get("available"):
        parts = []
        for name, row in idf["verdicts"].items():
            fo = row.get("first_order_stable")
            parts.append(f"{name} ({row['kp']:.3g}, {row['ki']:.3g}): "
                         + ("" if fo is None else f"first-order {'stable' if fo else 'UNSTABLE'}, ")
                         + f"identified {'stable' if row['stable'] else 'UNSTABLE'}")
        lines.append("At klcontrol's batch-16 operating point, first-order vs identified verdicts: " + "; ".join(parts)
                     + ".")
    else:
        lines.append(f"No identified model to compare with: {idf['reason']}.")
    lines.append("Why: the KL rings, and that ring decides stability; a first-order model averages it away, while the "
                 "relay and the identified model keep it (README, “Does the model hold on the real VAE?”).")
    return lines


def _report(s, real) -> list:
    v, tv, r, own, g = s["vae_run"], s["traversals"], s["relay"], s["own_fit"], s["gains"]
    ctl = v["controller"]
    lines = ["# klcontrol demo report", "", "## Summary", ""]
    lines += [f"{i}. {t}" for i, t in enumerate(s["summary_lines"], 1)]
    lines += [
        "",
        "## 1. The β-VAE under DynamicVAE's control law",
        f"{v['steps']} updates on procedural dSprites (batch {v['batch_size']}, Adam lr {v['lr']:g}), "
        f"incremental PI with Kp = {ctl['kp']:g}, Ki = {ctl['ki']:g}, β(0) = {ctl['beta0']:g}, window "
        f"{ctl['window']}, set point the paper's step-ramp compressed to reach {ctl['setpoint_stop']:g} nats "
        f"within the run. Over the last updates: β {v['final_beta']:.2f}, KL {v['final_kl']:.2f} nats "
        f"(set point {v['final_setpoint']:.2f}), reconstruction {v['final_recon']:.1f} nats.",
        "",
        "![VAE trace](vae_trace.png)",
        "",
        "![latent traversals](traversals.png)",
        "",
        _traversal_text(tv),
        "",
        "## 2. The relay experiment on this network",
    ]
    if r.get("available"):
        lines += [
            f"From the trained network (its optimiser state included), β = {r['beta_star']:.3g} ± {r['h']:.3g} per "
            f"update on the sign of the filtered KL's error against {r['setpoint']:.2f} nats, for {r['steps']} "
            f"updates (Åström–Hägglund; `relay_run/`). The loop settles into a limit cycle of period "
            f"{r['period']:.1f} updates ({r['cycles']} whole cycles measured); the KL's response at that period "
            f"gives the critical integral gain **Ki = {r['ki_critical']:.3g}** (Kp = 0; the describing function "
            f"alone gives {r['ki_describing_function']:.3g}; loop phase off the crossover by "
            f"{r['loop_phase_deg']:.1f}°). Expect it within ~15 % (docs/your_vae.md).",
            "",
            "![relay](relay.png)",
        ]
    else:
        lines.append(f"No boundary measured: {r.get('reason', 'not run')}.")
    lines += ["", "## 3. A first-order fit of this VAE's runs"]
    if own.get("available"):
        f = own["fit"]
        lines += [
            f"`klcontrol fit --g auto` on the training run and the relay run: a = {f['a']:.3g} (time constant "
            f"{f['time_constant_steps']:.0f} updates), g′ over β ∈ [{f['beta_range'][0]:.3g}, "
            f"{f['beta_range'][1]:.3g}] in [{f['gprime_range'][0]:.3g}, {f['gprime_range'][1]:.3g}]; fit % "
            + ", ".join(f"{p:.1f}" for p in own["fit_percent"]) + " (100 perfect, 0 no better than a constant); "
            + ("identifiable." if own["identifiable"] else "**not identifiable**:"),
        ]
        lines += [f"- {x}" for x in own["reasons"]]
        crit = g.get("first_order_critical_ki")
        if crit is not None:
            rel = (f", {_f(crit / r['ki_critical'], '.2g')}× the relay's {r['ki_critical']:.3g}"
                   if r.get("available") else "")
            lines += ["", f"The fit puts the critical Ki on the Kp = 0 ray at {_f(crit)}{rel}"
                      + ("" if own["identifiable"] else " — a number its unresolved g′ makes up, shown only to say "
                         "that an unidentified fit must not be used")
                      + ": a first-order model has no ring, so even identified it misplaces the boundary the ring "
                      "decides."]
        lines += ["", "![first-order fit](fit_own.png)"]
    else:
        lines.append(f"Not fitted: {own.get('reason')}.")
    lines += ["", "## 4. Gains for this VAE", "",
              f"Recommended: **Kp = {g['recommended']['kp']:g}, Ki = {g['recommended']['ki']:.3g}** "
              f"({g['recommended']['why']}).", "",
              "| gains | Kp | Ki | first-order fit" + ("" if own.get("identifiable") else " (not identifiable)")
              + " | gain margin (fit) | relay on this network | Ki / relay's critical Ki |",
              "|---|---|---|---|---|---|---|"]
    for name, row in g["verdicts"].items():
        lines.append(f"| {name} | {row['kp']:g} | {row['ki']:.3g} | {row.get('first_order', '—')} | "
                     f"{_f(row.get('first_order_gain_margin')) if 'first_order' in row else '—'} | "
                     f"{row.get('relay', '—')} | {_f(row.get('ki_over_critical'), '.2f') if 'relay' in row else '—'} |")
    lines += ["", "The relay measures the integral ray; gains with Kp > 0 are read by their Ki (the proportional "
              "part adds phase lead near the ring's period, so that reading is conservative).", ""]
    lines += ["## 5. klcontrol's VAE at batch 16: first-order fit vs identified model", "",
              "The demo's network is young and trained fast (lr 1e-3); klcontrol's shipped data hold the same "
              "question at batch 16, lr 1e-4: recorded traces for a first-order fit, and a model identified "
              "there that predicted real closed-loop runs.", "", "### 5a. The first-order fit of the recorded traces"]
    lines += _real_fit_lines(real)
    if real["available"]:
        rp = real["paper_gains"]
        (blo, bhi), (glo, ghi) = rp["beta_range"], rp["gprime_range"]
        lines += [
            "",
            f"Paper's gains over β ∈ [{blo:g}, {bhi:g}] with g′ in its bootstrap band [{glo:.3f}, {ghi:.3f}]: "
            f"**{'stable' if rp['stable'] else 'unstable'}** (gain margin {rp['gain_margin']:.3g}). Designed on this "
            "fit: the linear design (`klcontrol tune --fit F --window 5`) and the whole-run design for "
            f"{SCHEDULE_STEPS} updates from β0 = 150 (`--schedule-steps {SCHEDULE_STEPS} --max-jitter 0.2`):",
            "",
            "```",
            real["_tuned"].table(),
            "```",
            "",
            "```",
            real["_schedule_tuned"].table(),
            "```",
        ]
    lines += [""] + _identified_lines(s["identified"])
    return lines


#: The plant identified at an operating point of the real VAE (``klcontrol identify`` + ``klcontrol fit
#: --model hammerstein``), beside the recorded traces' directory: ``identify/fit.json`` (:mod:`klcontrol.data`).
IDENTIFIED_FIT = Path("identify") / "fit.json"


def _check_identified(traces_dir, real) -> dict:
    """Verdicts of the paper's and the real-trace designs on the model identified at the real operating point.

    That model predicts held-out real runs ≥ 83 % and the stability of 18 of 19 real closed-loop runs
    (README, "Does the model hold on the real VAE?"), where the first-order fit does neither, so the demo
    prefers it wherever it has the data: around the β it was identified at.
    """
    from klcontrol.analysis.verdicts.fits import check_first_order, check_fit_file
    from klcontrol.papers import DYNAMICVAE_GAINS as PAPER_GAINS

    path = None if traces_dir is None else Path(traces_dir).parent / IDENTIFIED_FIT
    if path is None or not path.is_file():
        return {"available": False, "reason": f"no identified model at {path or IDENTIFIED_FIT}"}
    gains = {"paper": PAPER_GAINS}
    if real.get("available"):
        gains["linear design (real-trace fit)"] = (real["tuned"]["kp"], real["tuned"]["ki"])
        gains["whole-run design (real-trace fit)"] = (real["schedule_tuned"]["kp"], real["schedule_tuned"]["ki"])
    out = {"available": True, "fit": _shown(path), "verdicts": {}}
    for name, (kp, ki) in gains.items():
        ident = check_fit_file(path, kp, ki, window=5, delay=0, point=True)
        row = {"kp": kp, "ki": ki, "stable": ident["stable"], "gain_margin": ident["gain_margin"],
               "worst_spectral_radius": ident["worst_spectral_radius"], "setpoints": ident["setpoints"]}
        if real.get("available"):
            fo = check_first_order(real["_fit"], kp, ki, window=5, delay=0,
                                   beta_range=_fit_range(path), widen=False)
            row.update(first_order_stable=fo["stable"], first_order_gain_margin=fo["gain_margin"])
        out["verdicts"][name] = row
    out["beta_range"] = list(_fit_range(path))
    return out


def _fit_range(path):
    from klcontrol.analysis.identification.fits import load_fit

    r = getattr(load_fit(path), "beta_range", None)
    return tuple(r) if r is not None else REAL_BETA_RANGE


def _train(out: Path, steps, seed, device, progress) -> dict:
    from klcontrol.papers import DYNAMICVAE_GAINS, DYNAMICVAE_WINDOW
    from klcontrol.vae_plant.training.run_lock import remove_run
    from klcontrol.vae_plant.training.trainer import train

    run_dir = out / "vae_run"
    remove_run(run_dir)  # the demo's own previous run: start afresh (a folder klcontrol did not make is refused)
    ctrl = demo_controller(steps)
    res = train(run_dir, preset="demo", controller=ctrl, steps=steps, seed=seed, device=device, progress=progress,
                command=f"klcontrol demo (steps={steps})")
    tr = res.to_trace()
    last = slice(-max(1, min(50, len(tr) // 5)), None)  # the batch KL is noisy: average the last updates
    return {"result": res, "trace": tr, "summary": {
        "steps": len(tr), "batch_size": res.config["settings"]["batch_size"], "lr": res.config["settings"]["lr"],
        "controller": {"kp": DYNAMICVAE_GAINS[0], "ki": DEMO_KI, "beta0": DEMO_BETA0, "window": DYNAMICVAE_WINDOW,
                       "setpoint_stop": DEMO_STOP},
        "final_beta": float(np.mean(tr.beta[last])), "final_kl": float(np.mean(tr.kl[last])),
        "final_setpoint": float(tr.setpoint[-1]), "final_recon": float(np.mean(res.trace["recon"][last])),
    }}



def _fit_real_traces(d, files, out: Path, figures, n_boot) -> dict:
    """Fit the plant to recorded traces; the ``"real_traces"`` part of the summary."""
    from klcontrol.analysis.identification.first_order import fit_plant
    from klcontrol.analysis.identification.plots import plot_fit

    if d is None:  # an earlier demo's fit_real_traces.png is removed with the run's other stale figures
        return {"available": False, "reason": files}
    shown = _shown(d)
    fit = fit_plant(files, g="auto", n_boot=n_boot, seed=0)
    figures["fit_real"] = str(out / "fit_real_traces.png")
    plot_fit(fit, figures["fit_real"], title=f"fit to the {len(files)} recorded β-VAE traces in {shown}")
    return {"available": True, "dir": shown, "files": [p.name for p in files], "fit": fit.summary(), "_fit": fit}


def _check_and_tune_real(real) -> None:
    """Robust stability of the paper's gains and tuned gains on the real-trace fit, as ``klcontrol check --fit``."""
    from klcontrol.analysis.tuning.design import tune
    from klcontrol.analysis.tuning.schedule import tune_schedule
    from klcontrol.analysis.verdicts.fits import check_first_order
    from klcontrol.papers import DYNAMICVAE_GAINS as PAPER_GAINS
    from klcontrol.setpoints import StepRamp

    fit = real["_fit"]
    lo, hi = max(REAL_BETA_RANGE[0], fit.beta_range[0]), min(REAL_BETA_RANGE[1], fit.beta_range[1])
    if not hi > lo:
        lo, hi = fit.beta_range
    pg = check_first_order(fit, *PAPER_GAINS, window=5, delay=0, beta_range=(lo, hi), widen=True)
    real["beta_range_checked"], real["gprime_range_checked"] = pg["beta_range"], pg["gprime_range"]
    real["paper_gains"] = pg
    real["_tuned"] = tune(a=fit.a, gprime=tuple(pg["gprime_range"]), window=5, delay=0)
    real["tuned"] = real["_tuned"].to_dict()
    # The whole-run design for the `klcontrol compare --budget cpu` schedule, as `klcontrol tune --fit F
    # --window 5 --schedule-steps 5000 --max-jitter 0.2` computes it (g′ over the fit's β range).
    from klcontrol.papers import DYNAMICVAE_DSPRITES_STEPS as PAPER_STEPS

    real["_schedule_tuned"] = tune_schedule(
        fit, StepRamp.dynamicvae_dsprites().compressed(PAPER_STEPS / SCHEDULE_STEPS), SCHEDULE_STEPS,
        gprime=fit.gprime_range(*fit.beta_range), window=5, max_jitter=0.2)
    real["schedule_tuned"] = real["_schedule_tuned"].to_dict()


def _identified_lines(idf) -> list:
    """Section 5: the same gains on the model identified at the real operating point."""
    lines = ["### 5b. The model identified at the real operating point", ""]
    if not idf["available"]:
        return lines + [f"Not checked: {idf['reason']} (`klcontrol identify`, then `klcontrol fit --model "
                        "hammerstein`; see README, *Does the model hold on the real VAE?*).", ""]
    lo, hi = idf["beta_range"]
    lines += [
        f"`{idf['fit']}` was identified on the real β-VAE (batch 16) around β* = 4 with designed excitation "
        f"(β ∈ [{lo:.3g}, {hi:.3g}]); it predicts held-out real runs and the stability of real closed-loop runs "
        "far better than the first-order fit, so its verdict is the one to trust there. "
        "`klcontrol check --fit` linearises it at that operating range:",
        "",
        "| gains (Kp, Ki) | identified model | gain margin | first-order fit, same β range | gain margin |",
        "|---|---|---|---|---|",
    ]
    for name, r in idf["verdicts"].items():
        fo = ("stable" if r["first_order_stable"] else "**unstable**") if "first_order_stable" in r else "—"
        fom = f"{r['first_order_gain_margin']:.3g}" if "first_order_gain_margin" in r else "—"
        lines.append(f"| {name} ({r['kp']:.4g}, {r['ki']:.4g}) | {'stable' if r['stable'] else '**unstable**'} | "
                     f"{r['gain_margin']:.3g} | {fo} | {fom} |")
    lines.append("")
    bad = [n for n, r in idf["verdicts"].items() if not r["stable"] and r.get("first_order_stable")]
    if bad:
        lines += [f"The first-order fit calls {', '.join(bad)} stable; the identified model does not, and on the "
                  "real VAE the identified model's verdicts held for 18 of 19 runs (the first-order model's for 9).",
                  ""]
    return lines


def _traversal_text(tv) -> str:
    """What the traversal figure shows, from its numbers."""
    kl, change, thr = np.asarray(tv["kl"]), np.asarray(tv["row_change"]), tv["active_threshold_nats"]
    active = kl > thr
    text = (f"{tv['active']} of {kl.size} latents carry more than {thr:g} nats (KL per latent, largest first: "
            f"{', '.join(f'{k:.2f}' for k in kl)}). ")
    if active.any() and not active.all():
        text += (f"Moving one of them from {tv['values'][0]:g} to {tv['values'][1]:g} changes the decoded image by "
                 f"{100 * change[active].mean():.1f} % of the pixel range on average (mean |Δpixel| between the "
                 f"two ends of its row), one of the others by {100 * change[~active].mean():.1f} %: a latent with "
                 "little KL carries little information about the image, so moving it changes little. ")
    elif not active.any():
        text += "No latent is in use yet: train longer (the demo's default is 800 updates). "
    from klcontrol import papers
    from klcontrol.setpoints import StepRamp

    return text + (f"The paper's own schedule (β(0) = {papers.DYNAMICVAE_BETA0:g}, Ki = {papers.DYNAMICVAE_GAINS[1]:g}, "
                   f"{papers.DYNAMICVAE_DSPRITES_SETPOINT[1]:g} nats after "
                   f"{StepRamp.dynamicvae_dsprites().total_steps:,} updates at lr 1e-4) is far longer; "
                   f"`klcontrol compare --budget cpu` runs it compressed into {SCHEDULE_STEPS} updates.")


def _real_fit_lines(real) -> list:
    if not real["available"]:
        return [f"Not fitted: {real['reason']}."]
    r = real["fit"]
    return [
        f"{len(real['files'])} traces from `{real['dir']}` ({', '.join(real['files'])}), fitted with "
        f"`klcontrol fit --g auto` ({r['gain_model']} steady-state model chosen by BIC):",
        f"a = {r['a']:.3g} (95 % CI {r['a_ci'][0]:.3g} … {r['a_ci'][1]:.3g}); time constant "
        f"{r['time_constant_steps']:.0f} steps; β seen {r['beta_range'][0]:g} … {r['beta_range'][1]:g}; "
        f"g′ over that range [{r['gprime_range'][0]:.3f}, {r['gprime_range'][1]:.3f}]; relative residual noise "
        f"{100 * r['noise_rel']:.0f} % (the first-order model only roughly describes the real transient: the "
        "real KL stays near 0 for a few hundred updates, then rises faster than the model).",
        *([] if r.get("identifiable", True) else [
            "",
            "`klcontrol fit` calls this fit **not identifiable**: "
            + "; ".join(x.split(": ", 1)[-1] for x in (r.get("identifiability") or {}).get("reasons", []))
            + ". `check` and `tune` refuse it without `--allow-unidentified`; it is shown here as the verdicts "
            "the first-order route would give, beside the identified model."]),
        "",
        "![fit to real traces](fit_real_traces.png)",
    ]
