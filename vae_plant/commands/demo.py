"""``klcontrol demo``: the main job, end to end, with a Markdown report and figures.

1. trains the β-VAE briefly on procedural dSprites under DynamicVAE control;
2. fits a first-order plant to open- and closed-loop traces of the paper's
   dSprites plant model, and to the real training traces shipped in the
   repository's ``data/traces/cpu`` (when klcontrol runs from a clone; the
   demo's own run is far shorter than the plant's time constant);
3. checks the paper's gains for robust stability over each fit's g′ range;
4. suggests tuned gains for each fit and simulates both gain sets on the model
   fit (plus latent traversals of the trained model);
5. writes ``report.md``, ``summary.json`` and PNG figures to ``--out``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

#: β interval of the shipped real traces over which the gains are checked and tuned: the open-loop runs span
#: β = 1 … 16 and the closed-loop run 6.4 … 20; the ends are where g′ rests on a single run.
REAL_BETA_RANGE = (2.0, 16.0)
#: Length of the run the whole-run gain design is made for: the `klcontrol compare --budget cpu` budget.
SCHEDULE_STEPS = 5000


def register(sub) -> None:
    """Register the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="train, fit, check, tune: the whole loop end to end, with a report",
        description="Train the β-VAE briefly under DynamicVAE control, fit a plant, check the paper's gains, "
        "suggest tuned gains and write a report with figures.",
    )
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--preset", default="tiny", choices=("tiny", "cpu", "paper"), help="training schedule (default tiny)")
    p.add_argument("--steps", type=int, default=120, help="training updates (default 120)")
    p.add_argument("--traces", default=None,
                   help="directory of recorded traces (*.csv.gz, *.csv, *.jsonl) to fit besides the model plant "
                        "(default: the repository's data/traces/cpu when klcontrol runs from a clone)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def shipped_traces_dir() -> Path | None:
    """The repository's ``data/traces/cpu``, if klcontrol runs from a clone that has it.

    Returns
    -------
    Path or None
        ``None`` for an installed wheel (the traces are not packaged).
    """
    d = Path(__file__).resolve().parents[2] / "data" / "traces" / "cpu"
    return d if _trace_files(d) else None


def _trace_files(d: Path) -> list:
    return sorted(p for pat in ("*.csv.gz", "*.csv", "*.jsonl", "*.jsonl.gz") for p in d.glob(pat)) if d.is_dir() else []


def _stage(msg, quiet):
    if not quiet:
        print(f"[demo] {msg}", flush=True)


def run(args) -> int:
    """Execute ``klcontrol demo``."""
    import numpy as np

    from analysis.fit_plots import plot_fit
    from analysis.identification import fit_plant
    from analysis.plots import region_figure
    from analysis.stability import robust_stability
    from analysis.tuning import PAPER_GAINS, tune
    from vae_plant.train import train

    from klcontrol.cli import print_json
    from klcontrol.controllers import FixedBeta, IncrementalPI
    from klcontrol.plant import ExpGain, FirstOrderPlant
    from klcontrol.plotting import plot_trace
    from klcontrol.setpoints import StepRamp
    from klcontrol.simulate import simulate

    out = args.out
    traces = _find_traces(args.traces)  # before anything is written: a bad --traces leaves no trace
    os.makedirs(out, exist_ok=True)
    quiet = args.json
    t0 = time.time()
    figures = {}

    _stage(f"1/4 training the β-VAE for {args.steps} steps ({args.preset} preset, DynamicVAE control) ...", quiet)
    run_dir = os.path.join(out, "vae_run")
    if os.path.isdir(run_dir):  # the demo's own previous run: start afresh
        import shutil

        shutil.rmtree(run_dir)
    res = train(run_dir, preset=args.preset, controller="dynamicvae", steps=args.steps,
                seed=0, device=args.device, progress=not quiet)
    vae_tr = res.to_trace()
    figures["vae_trace"] = os.path.join(out, "vae_trace.png")
    plot_trace(vae_tr, figures["vae_trace"], title=f"β-VAE on procedural dSprites, DynamicVAE control ({args.steps} steps)")

    figures["traversals"] = os.path.join(out, "traversals.png")
    _traversals(res, figures["traversals"])

    _stage("2/4 fitting the plant ...", quiet)
    # The paper's dSprites plant model (Appendix C.1: a ≈ 1/2500, g′ = −3.2·exp(−0.121β)), logged with 5 %
    # minibatch noise: two open-loop runs and one closed-loop run, standing in for long training logs.
    truth = FirstOrderPlant(1 / 2500, ExpGain(3.2 / 0.121, 0.121))
    runs = [simulate(FixedBeta(b), truth, 12_000, y0=0.0, noise_rel=0.05, seed=i) for i, b in enumerate((15.0, 30.0))]
    runs.append(simulate(IncrementalPI(0.01, 0.005, StepRamp(0.5, 20.0, 0.15, 6000, 1000), beta0=40.0, filter=5),
                         truth, 24_000, noise_rel=0.05, seed=7))
    fit = fit_plant(runs, n_boot=40, seed=0)
    figures["fit"] = os.path.join(out, "fit.png")
    plot_fit(fit, figures["fit"], title="fit to the paper's dSprites plant model, 5 % KL noise")
    real = _fit_real_traces(*traces, out, figures)


    _stage("3/4 robust stability of the paper's gains over the fitted g′ range ...", quiet)
    g_lo, g_hi = fit.gprime_range(5.0, 30.0)
    verdict = robust_stability(*PAPER_GAINS, fit.a, g_lo, g_hi, window=5, delay=0)
    figures["stability"] = os.path.join(out, "stability_region.png")
    region_figure(a=fit.a, gprime=g_lo, box="near", windows=(1, 5), delays=(0, 1), n=200,
                  path=figures["stability"])

    _stage("4/4 tuning gains and simulating both on the fitted plant ...", quiet)
    tuned = tune(a=fit.a, gprime=(g_lo, g_hi), window=5, delay=0)
    if real["available"]:
        _check_and_tune_real(real)
    sp = StepRamp(0.5, 20.0, 0.15, 6000, 1000)
    both = IncrementalPI(np.array([tuned.kp, PAPER_GAINS[0]]), np.array([tuned.ki, PAPER_GAINS[1]]), sp,
                         beta0=150.0, filter=5)
    cmp_tr = simulate(both, fit, 60_000, noise_rel=0.05, seed=1)
    figures["tuned_vs_paper"] = os.path.join(out, "tuned_vs_paper.png")
    plot_trace(cmp_tr, figures["tuned_vs_paper"], labels=["tuned", "paper"],
               title=f"fitted plant: tuned (Kp={tuned.kp:.3g}, Ki={tuned.ki:.3g}) vs paper (0.01, 0.005)")
    sim = cmp_tr.metrics()
    beta_noise = [float(np.std(np.diff(cmp_tr.beta[30_000:, i]))) for i in range(2)]

    summary = {
        "vae_run": {"steps": len(vae_tr), "final_beta": float(vae_tr.beta[-1]), "final_kl": float(vae_tr.kl[-1]),
                    "final_setpoint": float(vae_tr.setpoint[-1])},
        "fit": fit.summary(),
        "true_plant_model": truth.to_dict(),
        "real_traces": {k: v for k, v in real.items() if not k.startswith("_")},
        "paper_gains": {"kp": PAPER_GAINS[0], "ki": PAPER_GAINS[1], "robust": verdict.to_dict()},
        "tuned": tuned.to_dict(),
        "simulated_on_fit": {name: {"tracking_rmse": sim["tracking_rmse"][i], "overshoot": sim["overshoot"][i],
                                    "beta_step_noise": beta_noise[i]} for i, name in enumerate(("tuned", "paper"))},
        "figures": figures,
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(_plain(summary), fh, indent=2)
    _write_report(os.path.join(out, "report.md"), summary, fit, verdict, tuned, (g_lo, g_hi), real)
    if args.json:
        print_json(summary)
    else:
        print(tuned.table())
        print(f"[demo] paper gains robustly stable on the fitted plant model: {verdict.stable}")
        if real["available"]:
            print(f"[demo] on the fit to the real traces: {real['paper_gains']['stable']} "
                  f"(tuned there: Kp={real['tuned']['kp']:.3g}, Ki={real['tuned']['ki']:.3g})")
        else:
            print(f"[demo] {real['reason']}")
        print(f"[demo] wrote {os.path.join(out, 'report.md')}, summary.json and {len(figures)} figures "
              f"in {summary['seconds']} s")
    return 0


def _find_traces(traces_dir):
    """``(dir, files)`` of the traces to fit, or ``(None, reason)`` when the shipped ones are absent."""
    if traces_dir is None:
        d = shipped_traces_dir()
        if d is None:
            return None, ("the shipped real traces (data/traces/cpu) were not found: they come with a clone of the "
                          "repository, not with an installed package; pass --traces DIR to fit recorded traces")
        return d, _trace_files(d)
    d = Path(traces_dir)
    files = _trace_files(d)
    if not files:
        raise ValueError(f"--traces {traces_dir}: no *.csv.gz, *.csv, *.jsonl or *.jsonl.gz traces there")
    return d, files


def _fit_real_traces(d, files, out, figures) -> dict:
    """Fit the plant to recorded traces; the ``"real_traces"`` part of the summary."""
    from analysis.fit_plots import plot_fit
    from analysis.identification import fit_plant

    if d is None:
        stale = Path(out) / "fit_real_traces.png"  # from an earlier demo into the same directory
        stale.unlink(missing_ok=True)
        return {"available": False, "reason": files}
    repo = Path(__file__).resolve().parents[2]
    shown = str(d.resolve().relative_to(repo)) if d.resolve().is_relative_to(repo) else str(d)
    fit = fit_plant(files, g="auto", n_boot=40, seed=0)
    figures["fit_real"] = os.path.join(out, "fit_real_traces.png")
    plot_fit(fit, figures["fit_real"], title=f"fit to the {len(files)} recorded β-VAE traces in {shown}")
    return {"available": True, "dir": shown, "files": [p.name for p in files], "fit": fit.summary(), "_fit": fit}


def _check_and_tune_real(real) -> None:
    """Robust stability of the paper's gains and tuned gains on the real-trace fit, as ``klcontrol check --fit``.

    The g′ interval over :data:`REAL_BETA_RANGE` is widened to the bootstrap band and checked at the fitted a
    and at both ends of its interval, because on real traces the first-order model is only approximate.
    """
    import math

    from analysis.stability import robust_stability
    from analysis.tuning import PAPER_GAINS, tune

    fit = real["_fit"]
    lo, hi = max(REAL_BETA_RANGE[0], fit.beta_range[0]), min(REAL_BETA_RANGE[1], fit.beta_range[1])
    if not hi > lo:
        lo, hi = fit.beta_range
    g_lo, g_hi = fit.gprime_range(lo, hi, ci=True)
    a_values = [fit.a] + [v for v in fit.a_ci if math.isfinite(v)]
    per_a = [(a, robust_stability(*PAPER_GAINS, a, g_lo, g_hi, window=5, delay=0)) for a in a_values]
    real["beta_range_checked"] = [lo, hi]
    real["gprime_range_checked"] = [g_lo, g_hi]
    real["paper_gains"] = {
        "kp": PAPER_GAINS[0], "ki": PAPER_GAINS[1], "stable": all(r.stable for _, r in per_a),
        "worst_spectral_radius": max(r.worst_spectral_radius for _, r in per_a),
        "gain_margin": min(r.gain_margin for _, r in per_a),
        "per_a": [dict(a=a, **r.to_dict()) for a, r in per_a],
    }
    real["_tuned"] = tune(a=fit.a, gprime=(g_lo, g_hi), window=5, delay=0)
    real["tuned"] = real["_tuned"].to_dict()
    # The whole-run design for the `klcontrol compare --budget cpu` schedule, as `klcontrol tune --fit F
    # --window 5 --schedule-steps 5000 --max-jitter 0.2` computes it (g′ over the fit's β range).
    from analysis.schedule_tuning import tune_schedule

    from klcontrol.setpoints import StepRamp

    steps = SCHEDULE_STEPS
    real["_schedule_tuned"] = tune_schedule(
        fit, StepRamp.dynamicvae_dsprites().compressed(800_000 / steps), steps,
        gprime=fit.gprime_range(*fit.beta_range), window=5, max_jitter=0.2)
    real["schedule_tuned"] = real["_schedule_tuned"].to_dict()


def _traversals(res, path):
    """Latent traversals of the trained model around one procedural sprite, rows ordered by per-latent KL."""
    import torch

    from vae_plant.data import DSprites
    from vae_plant.diagnostics import plot_traversals

    model = res.model
    dev = next(model.parameters()).device
    x, _ = DSprites()[400_000]
    with torch.no_grad():
        mu, _ = model.encode(x[None].float().to(dev))

    def decode(z):
        with torch.no_grad():
            return torch.sigmoid(model.decode(torch.as_tensor(z, device=dev))).cpu().numpy()

    plot_traversals(decode, mu[0].cpu().numpy(), res.trace["kl_latent"][-1], path=path,
                    title="latent traversals (rows: latents by KL, largest first)")


def _plain(o):
    from klcontrol.cli import _jsonable

    return _jsonable(o)


def _write_report(path, s, fit, verdict, tuned, g_range, real):
    f = s["fit"]
    lines = [
        "# klcontrol demo report",
        "",
        "## 1. The β-VAE under DynamicVAE control",
        f"{s['vae_run']['steps']} updates on procedural dSprites: final β {s['vae_run']['final_beta']:.2f}, "
        f"KL {s['vae_run']['final_kl']:.3f} nats (set point {s['vae_run']['final_setpoint']:.2f}).",
        "",
        "![VAE trace](vae_trace.png)",
        "",
        "![latent traversals](traversals.png)",
        "",
        "A few hundred updates starting from β = 150 teach the model little (KL near 0), so these traversals show a "
        "barely trained decoder; `klcontrol demo --preset cpu --steps 5000` or `--device cuda --preset paper` trains "
        "long enough for the latents to pick up factors.",
        "",
        "## 2. Plant fits",
        "The demo's own run (a few hundred steps at most) cannot identify a plant whose time constant is a thousand "
        "steps or more, so the plant is fitted twice: to the paper's dSprites plant model, and to the real training "
        "traces shipped with the repository.",
        "",
        "### 2a. The paper's dSprites plant model",
        "Two open-loop runs (β = 15, 30) and one closed-loop run of the model a = 1/2500, g = 26.45·exp(−0.121β), "
        "with 5 % KL noise:",
        f"a = {f['a']:.3g} (95 % CI {f['a_ci'][0]:.3g} … {f['a_ci'][1]:.3g}); time constant {f['time_constant_steps']:.0f} steps.",
        f"g′ over β ∈ [5, 30]: [{g_range[0]:.3f}, {g_range[1]:.3f}].",
        "",
        "![fit](fit.png)",
        "",
        "### 2b. Real β-VAE training traces",
    ]
    lines += _real_fit_lines(real) + [
        "",
        "## 3. Stability of the paper's gains (Kp = 0.01, Ki = 0.005, window 5, delay 0)",
        f"On the model fit, robustly stable over its g′ range: **{verdict.stable}**; worst spectral radius "
        f"{verdict.worst_spectral_radius:.6f}; gains may be scaled by up to {verdict.gain_margin:.3g}.",
        "",
    ]
    if real["available"]:
        pg = real["paper_gains"]
        (blo, bhi), (glo, ghi) = real["beta_range_checked"], real["gprime_range_checked"]
        a_list = ", ".join(f"{r['a']:.3g}" for r in pg["per_a"])
        lines += [
            f"On the real-trace fit, over β ∈ [{blo:g}, {bhi:g}] with g′ widened to its bootstrap band "
            f"[{glo:.3f}, {ghi:.3f}] and a at its estimate and both ends of its interval "
            f"({a_list}): **{pg['stable']}**; worst spectral radius "
            f"{pg['worst_spectral_radius']:.6f}, gain margin {pg['gain_margin']:.3g}.",
            "",
        ]
    lines += [
        "![stability region](stability_region.png)",
        "",
        "## 4. Tuned gains",
        f"On the model fit. Objective: {tuned.objective}.",
        "",
        "```",
        tuned.table(),
        "```",
        "",
    ]
    if real["available"]:
        lines += [
            "On the real-trace fit (same objective, g′ range of section 3):",
            "",
            "```",
            real["_tuned"].table(),
            "```",
            "",
            f"For a whole run of {SCHEDULE_STEPS} updates from β0 = 150 on DynamicVAE's schedule compressed to fit "
            f"(the `klcontrol compare --budget cpu` budget), chosen by simulating the real-trace fit "
            f"(`klcontrol tune --fit F --window 5 --schedule-steps {SCHEDULE_STEPS} --max-jitter 0.2`). "
            "Objective: " + real["_schedule_tuned"].objective + ".",
            "",
            "```",
            real["_schedule_tuned"].table(),
            "```",
            "",
            "README.md (section *Gains on the real VAE*) reports how these gains and the paper's did when the real "
            "β-VAE was trained with them.",
            "",
        ]
    lines += [
        "Simulated on the model fit (step-ramp to 20 nats, 5 % KL noise, 60 000 steps):",
        "",
        "| gains | tracking RMSE (nats) | overshoot (nats) | std of Δβ per step |",
        "|---|---|---|---|",
    ]
    for name, r in s["simulated_on_fit"].items():
        lines.append(f"| {name} | {r['tracking_rmse']:.4f} | {r['overshoot']:.4f} | {r['beta_step_noise']:.4g} |")
    lines += [
        "",
        "The tuned gains are designed for the linearised loop over the fitted g′ range; the initial descent from "
        "β0 = 150, where g′ ≈ 0, is governed by Ki alone, so compare the two runs after that transient.",
        "",
        "![tuned vs paper](tuned_vs_paper.png)",
        "",
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


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
        f"{100 * r['noise_rel']:.0f} % (the first-order model only roughly describes the real transient).",
        "",
        "![fit to real traces](fit_real_traces.png)",
    ]
