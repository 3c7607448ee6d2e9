"""``klcontrol verify-stability``: run gain sets on the real β-VAE and compare with predicted verdicts."""
from __future__ import annotations


def register(sub) -> None:
    """Register the ``verify-stability`` command."""
    from klcontrol.commands.common import (
        BATCH_SIZE,
        FINITE,
        JOBS,
        NONNEG,
        POSITIVE,
        SEED,
        TRAIN_STEPS,
        OneSetpoint,
        add_window_arg,
        fit_spec,
        number,
    )

    p = sub.add_parser(
        "verify-stability",
        help="run PI gain sets on the real β-VAE from a settled checkpoint; observed vs predicted stability",
        description="Warm-start the dSprites β-VAE from a settled checkpoint (klcontrol identify), close the loop "
        "with DynamicVAE's incremental PI at a constant set point for each gain set on rays Kp = r·Ki, decide "
        "from each trace whether the loop was stable (klcontrol.analysis.verdicts.observed), and put the verdicts beside the "
        "predictions of the given fits (klcontrol.analysis.stability with plant=, linearised at the set point).",
        epilog="example:\n  klcontrol verify-stability --settled runs/identify/settle_b4 --beta-star 4 --window 5 "
        "--ray 0 0.05 0.2 --fit identified=\"$(klcontrol data path identify/fit.json)\" --out runs/stability_real",
    )
    p.add_argument("--settled", required=True, metavar="DIR", help="settled run (its latest checkpoint)")
    p.add_argument("--beta-star", type=POSITIVE, required=True, help="β of the settled run")
    p.add_argument("--setpoint", type=NONNEG, default=None, metavar="C", action=OneSetpoint,
                   help="constant set point (default: the settled run's KL over its last 1000 rows)")
    p.add_argument("--ray", nargs="+", type=NONNEG, action="append", default=[], metavar="R KI",
                   help="a ray: ratio r = Kp/Ki, then the Ki values (repeat for several rays), run with --seeds")
    p.add_argument("--gain", nargs=3, type=FINITE, action="append", default=[], metavar=("KP", "KI", "SEED"),
                   help="one more run (repeat), e.g. another seed near a boundary")
    add_window_arg(p)
    p.add_argument("--seeds", type=SEED, nargs="+", default=[0], help="training seeds of each ray's runs (default 0)")
    p.add_argument("--steps", type=TRAIN_STEPS, default=600, help="updates per run (default 600)")
    p.add_argument("--kick", type=number(0.0, 1e6, lo_open=True), default=1.25,
                   help="β starts at kick·β*, kick > 0 (default 1.25)")
    p.add_argument("--out", default="runs/stability_real", metavar="DIR",
                   help="run directories (default runs/stability_real)")
    p.add_argument("--export", default=None, metavar="DIR", help="copy traces there (e.g. klcontrol/data/stability_real in a clone)")
    p.add_argument("--fit", type=fit_spec, nargs="+", required=True, metavar="[NAME=]JSON",
                   help="models to predict with, each optionally named (default name: the file's stem), e.g. "
                   "identified=FIT.json first_order=$(klcontrol data path cpu/fit.json)")
    p.add_argument("--summary", default=None, metavar="JSON", help="write the runs and verdicts")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure of the (Kp, Ki) plane: boundaries and runs")
    p.add_argument("--jobs", type=JOBS, default=2,
                   help="runs trained at once, one thread each (default 2; capped by the usable CPUs)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=16, help="images per update (default 16)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    p.add_argument("--plant", default=None, metavar="MODULE:FACTORY",
                   help="your own VAE: a factory returning a plant of the protocol (docs/your_vae.md), e.g. "
                        "examples/mnist_vae.py:make or my_vae:make; passed seed=, device=, batch_size= when it accepts "
                        "them (default: klcontrol's dSprites β-VAE)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol verify-stability``."""
    import sys

    from klcontrol.commands.common import check_device, check_output_paths

    check_device(args.device)
    from klcontrol.vae_plant.experiments.stability_runs import observed_brackets, verify_stability

    fits = dict(args.fit)
    if len(fits) < len(args.fit):
        raise ValueError("--fit: two fits share a name; name them NAME=JSON")
    check_output_paths(args, ("summary", "plot"), inputs=list(fits.values()), folders=("out", "export"))
    res = verify_stability(args.out, args.settled, args.beta_star, fits, args.ray, args.gain, setpoint=args.setpoint,
                           window=args.window, seeds=args.seeds, steps=args.steps, kick=args.kick, jobs=args.jobs,
                           batch_size=args.batch_size, device=args.device, export=args.export,
                           summary=args.summary, plot=args.plot, command="klcontrol " + " ".join(sys.argv[1:]),
                           plant=args.plant)
    rows, names = res["rows"], res["names"]
    head = f"{'Kp':>8} {'Ki':>8} {'T':>2} {'seed':>4} " + " ".join(f"{n:>14}" for n in names) + "   observed"
    print(head)
    for r in rows:
        pred = " ".join(f"{('stable' if r[f'predicted_stable_{n}'] else 'UNSTABLE'):>9} {r[f'spectral_radius_{n}']:.3f}"[:14].rjust(14)
                        for n in names)
        obs = "stable" if r["observed_stable"] else "UNSTABLE (" + ", ".join(r["observed"]["reasons"]) + ")"
        print(f"{r['kp']:>8.4g} {r['ki']:>8.4g} {r['window']:>2} {r['seed']:>4} {pred}   {obs}")
    for n in names:
        agree = sum(r[f"predicted_stable_{n}"] == r["observed_stable"] for r in rows)
        per = res["predicted_period"][n]
        cg = ", ".join(f"Kp/Ki={k}: {('%.3g' % v) if v is not None else 'none'}"
                       + (f" (period {per[k]:.3g} updates)" if per.get(k) else "")
                       for k, v in res["predicted_critical_ki"][n].items())
        print(f"{n}: agrees with {agree}/{len(rows)} observed verdicts; predicted critical Ki {cg}")
    for k, v in observed_brackets(rows).items():
        print(f"observed on Kp/Ki = {k:g}: stable at Ki ≤ {v['stable_below']}, unstable from Ki = {v['unstable_from']}"
              f"{'' if not v['mixed'] else ', seeds disagree at Ki = ' + ', '.join(f'{k:g}' for k in v['mixed'])}"
              f"{'' if v['monotone'] else ' (not monotone along the ray)'}")
    return 0
