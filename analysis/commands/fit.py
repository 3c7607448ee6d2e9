"""``klcontrol fit``: identify the first-order KL plant (a, g(β)) from training traces."""
from __future__ import annotations

import os
import sys


def register(sub) -> None:
    """Register the ``fit`` command."""
    from klcontrol.analysis.identification.traces import add_reader_arguments
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNIDENTIFIED, exit_codes_epilog
    from klcontrol.commands.common import N_BOOT, SEED, add_deprecated_alias, number

    p = sub.add_parser(
        "fit",
        help="fit a and g(β) of the first-order KL plant to training traces",
        description="Fit y(t) = y(t-1)/(1+a) + a/(1+a)·g(β(t)) to CSV, JSONL or TensorBoard traces (or trainer run "
        "directories) by simulation-error least squares, with bootstrap confidence intervals. Every update is "
        "simulated: a β logged at step s is held until the next logged row (zero-order hold), so logs written every "
        "N updates fit as well as dense ones. Row s must hold the β used in update s and the KL after update s "
        "(--kl-lag 1 if the KL was logged in the forward pass of step s, --beta-logged after if β was logged by a "
        "controller after the update). A TensorBoard directory with several runs gives one trace per run (--run "
        "NAME picks one). Every fit says whether the data identify a, g and g′ (\"identifiable\" in --json and "
        "the saved file); klcontrol check and tune refuse a fit that is not identifiable.",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_ERROR, 2, EXIT_UNIDENTIFIED)
        + " (the fit is still printed and saved, flagged)"
        + "\n\nexample:\n  klcontrol fit \"$(klcontrol data path cpu/fixed_beta4.csv.gz)\" "
        "\"$(klcontrol data path cpu/fixed_beta8.csv.gz)\" --n-boot 20 --out fit.json",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files or run directories")
    p.add_argument("--g", choices=("exp", "spline", "auto"), default="exp",
                   help="g model: A·exp(-kβ) (default), monotone spline, or auto (BIC)")
    add_reader_arguments(p)
    p.add_argument("--n-boot", type=N_BOOT, default=100, help="bootstrap replicates (default 100; 0: no bootstrap, "
                   "identifiability judged from linearised intervals)")
    p.add_argument("--seed", type=SEED, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=number(0.0, 0.9999, lo_open=True), default=0.95,
                   help="confidence level (default 0.95)")
    p.add_argument("--out", default=None, metavar="JSON", help="save the fit (for klcontrol check / tune)")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure: data vs model, g(β) and g′(β) with bands")
    p.add_argument("--json", action="store_true", help="print the fit summary as JSON")
    m = p.add_argument_group("operating-point models and validation (docs/identification.md)")
    m.add_argument("--model", choices=("first_order", "hammerstein"), default="first_order",
                   help="first_order: the paper's model above (default); hammerstein: g(β) from --static traces "
                   "followed by G(q) with unit DC gain, structures first order / two time constants / OE (orders "
                   "by AIC), the one that predicts --validate traces best is saved")
    m.add_argument("--plan", default=None, metavar="JSON",
                   help="the plan of an in-loop experiment (InLoopExperiment.save, docs/your_vae.md): PATH is the "
                   "one log of that run, cut into its phases and fitted as with --model hammerstein")
    m.add_argument("--static", nargs="+", default=None, metavar="PATH",
                   help="constant-β settled traces giving g(β) (hammerstein)")
    m.add_argument("--validate", nargs="+", default=None, metavar="HELDOUT",
                   help="held-out traces: NRMSE fit %% of the 50-update mean and raw KL, residual whiteness, "
                   "cross-correlation with β")
    m.add_argument("--report", default=None, metavar="JSON", help="write the validation report (all candidates)")
    m.add_argument("--compare-fit", dest="compare", default=None, metavar="JSON",
                   help="another saved fit (e.g. the first-order shipped one: klcontrol data path cpu/fit.json) validated beside (hammerstein)")
    m.add_argument("--summary", default=None, metavar="JSON",
                   help="write {held_out: [{trace, fit, closed_loop, fit_percent, first_order_fit_percent, ...}]} "
                   "(hammerstein; needs --out, --validate and --compare-fit)")
    add_deprecated_alias(m, "--compare", "--compare-fit", dest="compare")
    from klcontrol.commands.common import add_progress_arg

    add_progress_arg(p)
    p.set_defaults(func=run)


def _print_validation(rows):
    print(f"{'held-out trace':<44} {'fit % (50-mean)':>15} {'fit % (raw)':>11} {'Ljung-Box p':>11} {'max|xcorr β|':>12}")
    for v in rows:
        print(f"{v['trace']:<44} {v['fit_percent']:>15.1f} {v['fit_percent_raw']:>11.1f} {v['ljung_box_p']:>11.2g} "
              f"{v['xcorr_max']:>12.3f}")


def _run_hammerstein(args) -> int:
    from klcontrol.analysis.identification.files import fit_hammerstein_files
    from klcontrol.analysis.identification.traces import reader_kwargs
    from klcontrol.cli import print_json

    if args.plan:
        from klcontrol.analysis.identification.files import fit_plan_files

        if len(args.paths) != 1 or args.static or args.validate:
            raise ValueError("--plan takes the one log of the in-loop run as PATH (no --static, no --validate: "
                             "the plan names the phases)")
        best, rep = fit_plan_files(args.plan, args.paths[0], reader=reader_kwargs(args), out=args.out,
                                   compare=args.compare, report=args.report, summary=args.summary, plot=args.plot)
        held = [h["trace"] for h in rep["candidates"][rep["chosen"]]["held_out"]]
    else:
        best, rep = fit_hammerstein_files(args.paths, static=args.static, reader=reader_kwargs(args),
                                          validate=args.validate, out=args.out, compare=args.compare,
                                          report=args.report, summary=args.summary, plot=args.plot)
        held = args.validate
    g = best.g
    if args.json:
        print_json(dict(model=best.to_dict(), report=rep, out=args.out))
        return 0
    print(f"g(β): log-PCHIP through {len(g.betas)} settled points, β ∈ [{g.betas[0]:g}, {g.betas[-1]:g}]")
    for i, r in enumerate(rep["candidates"]):
        tc = ", ".join(f"{t:.3g}" for t in r["time_constants"])
        ho = "" if r["held_out_min"] is None else (f", worst held-out fit {r['held_out_min']:.1f} % (50-mean), "
                                                   f"fit at the controller's time scale {r['score']:.1f} %")
        ring = "" if r.get("ring_period") is None else f", ring period {r['ring_period']:.3g}"
        band = "" if r.get("band_rms") is None else (f", loop band {r['band_rms']:.2g} s.e. "
                                                     f"({'passes' if r['passes_band'] else 'REJECTED'})")
        mark = " ← chosen" if i == rep["chosen"] else (" (in the model set)" if i in rep.get("model_set", ()) else "")
        print(f"{r['structure']}{'' if r['orders'] is None else tuple(r['orders'])}: τ = [{tc}] updates{ring}, "
              f"AIC {r['aic']:.1f}{ho}{band}{mark}")
    if rep.get("warning"):
        print(f"WARNING: {rep['warning']}")
    print(f"chosen by {rep['rule']}: {best!r}")
    if held:
        _print_validation(rep["candidates"][rep["chosen"]]["held_out"])
    if args.compare:
        print(f"beside it, {args.compare}:")
        _print_validation(rep["compare"]["held_out"])
    if args.out:
        print(f"fit saved to {args.out}")
    return 0


def _check_outputs(args) -> None:
    """Before any work: no output would replace an input (flag and path named), and every output's folder exists
    (created when missing, so a figure's folder typo cannot cost a long fit)."""
    from klcontrol.commands.common import check_output_paths

    inputs = [*args.paths, *(args.static or []), *(args.validate or []), args.compare, args.plan]
    check_output_paths(args, ("out", "report", "summary", "plot"), inputs)


def run(args) -> int:
    """Execute ``klcontrol fit``."""
    _check_outputs(args)
    from klcontrol.analysis.identification.files import fit_first_order_files
    from klcontrol.analysis.identification.traces import reader_kwargs
    from klcontrol.cli import EXIT_OK, EXIT_UNIDENTIFIED, print_json
    from klcontrol.commands.common import show_progress

    if args.model == "hammerstein" or args.plan:
        return _run_hammerstein(args)
    fit, s = fit_first_order_files(args.paths, reader=reader_kwargs(args), g=args.g, n_boot=args.n_boot,
                                   seed=args.seed, level=args.level, out=args.out, plot=args.plot,
                                   validate=args.validate, report=args.report, progress=show_progress(args))
    rc = EXIT_OK if fit.identifiable else EXIT_UNIDENTIFIED
    if args.json:
        print_json(s)
        if rc != EXIT_OK:
            _explain(fit)
        return rc
    lvl = f"{100 * fit.level:.0f} %"
    lo, hi = fit.a_ci
    ci = f"{lvl} CI [{lo:.4g}, {hi:.4g}]" if fit.boot.gains else (
        "no bootstrap interval (--n-boot 0)" if not args.n_boot else
        f"no bootstrap interval: {args.n_boot} replicates ran, all failed (none could be refitted: a non-finite "
        "or singular replicate)")
    print(f"a = {fit.a:.4g} (time constant {fit.time_constant:.0f} steps), {ci}")
    if fit.a_rise_time_mean is not None:
        print(f"paper's 63.2 % rise-time estimate (open-loop traces): a ≈ {fit.a_rise_time_mean:.4g}")
    if fit.gain_model == "exp":
        print(f"g(β) = {s['A']:.4g}·exp(-{s['k']:.4g}·β)")
    else:
        print(f"g(β): monotone spline on β ∈ [{fit.beta_range[0]:g}, {fit.beta_range[1]:g}]")
    if len(fit.bic) > 1:
        print("BIC: " + ", ".join(f"{k} {v:.1f}" for k, v in fit.bic.items()) + f" → {fit.gain_model}")
    b0, b1 = fit.beta_range
    g0, g1 = s["gprime_range"]
    c0, c1 = s["gprime_range_ci"]
    band = f" (with {lvl} band [{c0:.4g}, {c1:.4g}])" if fit.boot.gains else ""
    print(f"β range seen [{b0:g}, {b1:g}]: g′ ∈ [{g0:.4g}, {g1:.4g}]{band}")
    print(f"model error (robust std of the residuals relative to the KL): {100 * fit.noise_rel:.2f} %")
    if fit.traces:
        names = [str(t.meta.get("source", f"trace {i}")) for i, t in enumerate(fit.traces)]
        print("fit % per trace (NRMSE of the logged KL; 100 perfect, 0 no better than a constant): "
              + ", ".join(f"{os.path.basename(n)} {p:.1f} %" for n, p in zip(names, fit.fit_percents())))
    if fit.boot.failures and fit.boot.gains:
        print(f"bootstrap: {args.n_boot} replicates ran, {fit.boot.failures} failed and were left out")
    if fit.identifiable:
        print("identifiable: yes (a, g and g′; every trace predicted better than a constant)")
    else:
        missing = [k for k in ("a", "g", "gprime") if not fit.identifiability[k]]
        parts = [", ".join(missing) + " not identified"] if missing else []
        if not fit.identifiability.get("fit", True):
            parts.append("a trace predicted no better than a constant")
        print("identifiable: NO (" + "; ".join(parts) + ")")
    if args.validate:
        _print_validation(s["validation"])
    if args.out:
        print(f"fit saved to {args.out}" + ("" if fit.identifiable else " (flagged not identifiable)"))
    if args.plot:
        print(f"figure written to {args.plot}")
    if rc != EXIT_OK:
        _explain(fit)
    return rc


def _explain(fit) -> None:
    print("klcontrol fit: the data do not identify the plant:", file=sys.stderr)
    for r in fit.identifiability["reasons"]:
        print(f"  - {r}", file=sys.stderr)
    print("klcontrol check and tune refuse this fit (override: --allow-unidentified). Longer logs, a wider β range "
          "or several open-loop runs at different β identify the plant.", file=sys.stderr)
    gaps = _logging_interval(fit)
    if gaps > 1:
        print(f"  Your logs hold one row every {gaps:g} updates: log every update (PyTorch Lightning: "
              "Trainer(log_every_n_steps=1); its default 50 leaves the fast dynamics unseen).", file=sys.stderr)


def _logging_interval(fit) -> float:
    """The smallest median step between logged rows over the fitted traces (1: every update logged)."""
    import numpy as np

    gaps = [float(np.median(np.diff(np.asarray(t.step, dtype=float)))) for t in (getattr(fit, "traces", None) or [])
            if len(t.step) > 1]
    return min(gaps) if gaps else 1.0
