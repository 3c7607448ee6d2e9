"""``klcontrol fit``: identify the first-order KL plant (a, g(β)) from training traces."""
from __future__ import annotations

import sys


def register(sub) -> None:
    """Register the ``fit`` command."""
    from analysis.trace_io import add_reader_arguments

    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNIDENTIFIED, exit_codes_epilog

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
        + " (the fit is still printed and saved, flagged)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files or run directories")
    p.add_argument("--g", choices=("exp", "spline", "auto"), default="exp",
                   help="g model: A·exp(-kβ) (default), monotone spline, or auto (BIC)")
    add_reader_arguments(p)
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap replicates (default 100; 0: no bootstrap, "
                   "identifiability judged from linearised intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--out", default=None, metavar="JSON", help="save the fit (for klcontrol check / tune)")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure: data vs model, g(β) and g′(β) with bands")
    p.add_argument("--json", action="store_true", help="print the fit summary as JSON")
    from klcontrol.commands.common import add_progress_arg

    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol fit``."""
    from analysis.identification import fit_plant
    from analysis.trace_io import read_traces, reader_kwargs

    from klcontrol.cli import EXIT_OK, EXIT_UNIDENTIFIED, print_json
    from klcontrol.commands.common import show_progress

    traces = []
    for path in args.paths:
        traces += read_traces(path, **reader_kwargs(args))
    for t in traces:  # name each trace by its file and, for TensorBoard, its run
        if t.meta.get("run") not in (None, "."):
            t.meta["source"] = f"{t.meta['source']} (run {t.meta['run']})"
    fit = fit_plant(traces, g=args.g, n_boot=args.n_boot, seed=args.seed, level=args.level,
                    progress=show_progress(args))
    if args.out:
        fit.save(args.out)
    if args.plot:
        from analysis.fit_plots import plot_fit

        plot_fit(fit, args.plot)
    s = fit.summary()
    s.update(out=args.out, plot=args.plot)
    rc = EXIT_OK if fit.identifiable else EXIT_UNIDENTIFIED
    if args.json:
        print_json(s)
        if rc != EXIT_OK:
            _explain(fit)
        return rc
    lvl = f"{100 * fit.level:.0f} %"
    lo, hi = fit.a_ci
    ci = f"{lvl} CI [{lo:.4g}, {hi:.4g}]" if fit.boot.gains else "no bootstrap interval (--n-boot 0)"
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
    print(f"relative KL noise (robust std of residuals): {100 * fit.noise_rel:.2f} %")
    if fit.boot.failures:
        print(f"bootstrap: {fit.boot.failures} of {args.n_boot} replicates failed and were left out")
    print("identifiable: yes (a, g and g′)" if fit.identifiable else
          "identifiable: NO (" + ", ".join(k for k in ("a", "g", "gprime") if not fit.identifiability[k])
          + " not identified)")
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
