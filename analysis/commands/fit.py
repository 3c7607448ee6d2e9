"""``klcontrol fit``: identify the first-order KL plant (a, g(β)) from training traces."""
from __future__ import annotations


def register(sub) -> None:
    """Register the ``fit`` command."""
    p = sub.add_parser(
        "fit",
        help="fit a and g(β) of the first-order KL plant to training traces",
        description="Fit y(t) = y(t-1)/(1+a) + a/(1+a)·g(β(t)) to CSV, JSONL or TensorBoard traces (or trainer run "
        "directories) by simulation-error least squares, with bootstrap confidence intervals. Row t must hold "
        "β(t) and the KL after update t (use --kl-lag 1 if the KL was logged in the forward pass of step t).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files or run directories")
    p.add_argument("--g", choices=("exp", "spline", "auto"), default="exp",
                   help="g model: A·exp(-kβ) (default), monotone spline, or auto (BIC)")
    p.add_argument("--step-col", default="step", help="step column / tag (default step)")
    p.add_argument("--beta-col", default="beta", help="β column / tag (default beta)")
    p.add_argument("--kl-col", default="kl", help="KL column / tag (default kl)")
    p.add_argument("--kl-lag", type=int, choices=(0, 1), default=0,
                   help="1 if row t holds the KL before update t (default 0)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap replicates (default 100; 0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--out", default=None, metavar="JSON", help="save the fit (for klcontrol check / tune)")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure: data vs model, g(β) and g′(β) with bands")
    p.add_argument("--json", action="store_true", help="print the fit summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol fit``."""
    from analysis.identification import fit_plant

    from klcontrol.cli import print_json

    fit = fit_plant(args.paths, g=args.g, n_boot=args.n_boot, seed=args.seed, level=args.level, kl_lag=args.kl_lag,
                    columns={"step": args.step_col, "beta": args.beta_col, "kl": args.kl_col},
                    progress=not args.json)
    if args.out:
        fit.save(args.out)
    if args.plot:
        from analysis.fit_plots import plot_fit

        plot_fit(fit, args.plot)
    s = fit.summary()
    s.update(out=args.out, plot=args.plot)
    if args.json:
        print_json(s)
        return 0
    lvl = f"{100 * fit.level:.0f} %"
    lo, hi = fit.a_ci
    print(f"a = {fit.a:.4g} (time constant {fit.time_constant:.0f} steps), {lvl} CI [{lo:.4g}, {hi:.4g}]")
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
    print(f"β range seen [{b0:g}, {b1:g}]: g′ ∈ [{g0:.4g}, {g1:.4g}] (with {lvl} band [{c0:.4g}, {c1:.4g}])")
    print(f"relative KL noise (robust std of residuals): {100 * fit.noise_rel:.2f} %")
    if args.out:
        print(f"fit saved to {args.out}")
    if args.plot:
        print(f"figure written to {args.plot}")
    return 0
