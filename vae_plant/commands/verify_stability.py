"""``klcontrol verify-stability``: run gain sets on the real β-VAE and compare with predicted verdicts."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    """Register the ``verify-stability`` command."""
    p = sub.add_parser(
        "verify-stability",
        help="run PI gain sets on the real β-VAE from a settled checkpoint; observed vs predicted stability",
        description="Warm-start the dSprites β-VAE from a settled checkpoint (klcontrol identify), close the loop "
        "with DynamicVAE's incremental PI at a constant set point for each gain set on rays Kp = r·Ki, decide "
        "from each trace whether the loop was stable (analysis.loop_verdict), and put the verdicts beside the "
        "predictions of the given fits (analysis.stability with plant=, linearised at the set point).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--settled", required=True, metavar="DIR", help="settled run (its latest checkpoint)")
    p.add_argument("--beta-star", type=float, required=True, help="β of the settled run")
    p.add_argument("--setpoint", type=float, default=None,
                   help="constant set point (default: the settled run's KL over its last 1000 rows)")
    p.add_argument("--ray", nargs="+", type=float, action="append", default=[], metavar="R KI",
                   help="a ray: ratio r = Kp/Ki, then the Ki values (repeat for several rays), run with --seeds")
    p.add_argument("--gain", nargs=3, type=float, action="append", default=[], metavar=("KP", "KI", "SEED"),
                   help="one more run (repeat), e.g. another seed near a boundary")
    p.add_argument("--window", type=int, default=5, help="moving-average window T")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=600, help="updates per run")
    p.add_argument("--kick", type=float, default=1.25, help="β starts at kick·β*")
    p.add_argument("--out", default="runs/stability_real", metavar="DIR")
    p.add_argument("--export", default=None, metavar="DIR", help="copy traces there (e.g. data/traces/stability_real)")
    p.add_argument("--fit", nargs="+", required=True, metavar="NAME=JSON",
                   help="models to predict with, e.g. identified=FIT.json first_order=data/traces/cpu/fit.json")
    p.add_argument("--summary", default=None, metavar="JSON", help="write the runs and verdicts")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure of the (Kp, Ki) plane: boundaries and runs")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol verify-stability``."""
    import json
    import os
    import sys

    from analysis.identification import load_fit
    from vae_plant.identify import settled_noise
    from vae_plant.stability_runs import observed_brackets, ray_gains, run_gains, summarize
    from vae_plant.trace_log import read_trace_csv

    from klcontrol.cli import _jsonable

    models, paths = [], {}
    for spec in args.fit:
        if "=" not in spec:
            raise ValueError(f"--fit takes NAME=JSON, got {spec!r}")
        n, path = spec.split("=", 1)
        models.append((n, load_fit(path)))
        paths[n] = os.path.relpath(path)
    for r in args.ray:
        if len(r) < 2:
            raise ValueError(f"--ray takes a ratio and at least one Ki, got {r}")
    if not args.ray and not args.gain:
        raise ValueError("give at least one --ray or --gain")
    c = args.setpoint
    if c is None:
        c = round(settled_noise(read_trace_csv(os.path.join(args.settled, "trace.csv"))["kl"])["level"], 2)
    gains = [g for r in args.ray for g in ray_gains(r[0], r[1:], args.window, args.seeds)]
    gains += [dict(kp=kp, ki=ki, window=args.window, seed=int(sd)) for kp, ki, sd in args.gain]
    dirs = run_gains(args.out, args.settled, args.beta_star, c, gains, args.steps, args.kick, args.jobs,
                     args.batch_size, args.device, command="klcontrol " + " ".join(sys.argv[1:]))
    rows = summarize(dirs, [m for _, m in models], [n for n, _ in models], args.export)
    if args.summary:
        os.makedirs(os.path.dirname(os.path.abspath(args.summary)), exist_ok=True)
        with open(args.summary, "w") as fh:
            json.dump(_jsonable(dict(setpoint=c, beta_star=args.beta_star, fits=paths,
                                     criterion="analysis.loop_verdict.observed_stability (defaults)", runs=rows)),
                      fh, indent=1)
    crit = {}
    for n, m in models:
        from analysis.validation_plots import critical_gain

        ratios = sorted({r[0] for r in args.ray} | {kp / ki for kp, ki, _ in args.gain if ki > 0})
        crit[n] = {f"{r:g}": critical_gain(m, r, c, args.window) for r in ratios}
    if args.summary:
        with open(args.summary) as fh:
            d = json.load(fh)
        d["predicted_critical_ki"] = crit
        d["observed_critical_ki"] = {f"{k:g}": v for k, v in observed_brackets(rows).items()}
        with open(args.summary, "w") as fh:
            json.dump(_jsonable(d), fh, indent=1)
    if args.plot:
        from analysis.validation_plots import plot_stability_plane

        plot_stability_plane(rows, dict(models), c, args.plot, args.window)
    head = f"{'Kp':>8} {'Ki':>8} {'T':>2} {'seed':>4} " + " ".join(f"{n:>14}" for n, _ in models) + "   observed"
    print(head)
    for r in rows:
        pred = " ".join(f"{('stable' if r[f'predicted_stable_{n}'] else 'UNSTABLE'):>9} {r[f'spectral_radius_{n}']:.3f}"[:14].rjust(14)
                        for n, _ in models)
        obs = "stable" if r["observed_stable"] else "UNSTABLE (" + ", ".join(r["observed"]["reasons"]) + ")"
        print(f"{r['kp']:>8.4g} {r['ki']:>8.4g} {r['window']:>2} {r['seed']:>4} {pred}   {obs}")
    for n, _ in models:
        agree = sum(r[f"predicted_stable_{n}"] == r["observed_stable"] for r in rows)
        cg = ", ".join(f"Kp/Ki={k}: {('%.3g' % v) if v is not None else 'none'}" for k, v in crit[n].items())
        print(f"{n}: agrees with {agree}/{len(rows)} observed verdicts; predicted critical Ki {cg}")
    for k, v in observed_brackets(rows).items():
        print(f"observed on Kp/Ki = {k:g}: stable at Ki ≤ {v['stable_below']}, unstable from Ki = {v['unstable_from']}"
              f"{'' if not v['mixed'] else ', seeds disagree at Ki = ' + ', '.join(f'{k:g}' for k in v['mixed'])}"
              f"{'' if v['monotone'] else ' (not monotone along the ray)'}")
    return 0
