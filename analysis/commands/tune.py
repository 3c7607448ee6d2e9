"""``klcontrol tune``: recommend Kp, Ki for a fitted plant and compare with the paper's gains."""
from __future__ import annotations

from klcontrol.papers import DYNAMICVAE_BETA0, DYNAMICVAE_DSPRITES_STEPS, DYNAMICVAE_GAINS
from klcontrol.registry import LINEAR_KINDS

def register(sub) -> None:
    """Register the ``tune`` command."""
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNIDENTIFIED, exit_codes_epilog

    p = sub.add_parser(
        "tune",
        help="recommend robustly stable, fast, quiet Kp/Ki for a fitted plant",
        description="Choose Kp, Ki stable for every g′ of the fitted range, fastest worst-case decay under "
        "overshoot and noise-gain bounds (or least noise under a settling target). A fit that klcontrol fit "
        "marked not identifiable, or whose g′ band reaches 0, is refused (override: --allow-unidentified).",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNIDENTIFIED, EXIT_ERROR, 2),
    )
    src = p.add_argument_group("plant (a fit file, or a and a g′ range)")
    src.add_argument("--fit", default=None, help="fit.json written by `klcontrol fit --out`")
    src.add_argument("--a", type=float, default=None, help="plant rate a")
    src.add_argument("--gprime", type=float, nargs="+", default=None, metavar="G", help="g′, or g′min g′max")
    src.add_argument("--beta-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                     help="with --fit: β range the schedule visits (default: the β range of the fitted traces)")
    src.add_argument("--allow-unidentified", action="store_true",
                     help="tune for a fit that is not identifiable (or whose g′ band reaches 0) instead of refusing")
    p.add_argument("--window", type=int, default=1, help="moving-average window T (default 1)")
    p.add_argument("--delay", type=int, choices=(0, 1), default=0, help="measurement delay d (default 0)")
    p.add_argument("--controller", choices=LINEAR_KINDS, default="incremental",
                   help="controller whose linearised loop is designed (default incremental)")
    p.add_argument("--settling", type=float, default=None, help="target worst-case 2 %% settling time (steps)")
    p.add_argument("--max-overshoot", type=float, default=0.05, help="largest linear step overshoot (default 0.05)")
    p.add_argument("--compare", type=float, nargs=2, default=DYNAMICVAE_GAINS, metavar=("KP", "KI"),
                   help="reference gains (default: the paper's %g %g)" % DYNAMICVAE_GAINS)
    sch = p.add_argument_group("schedule tuning (simulate the fitted plant over a whole run; needs --fit)")
    sch.add_argument("--schedule-steps", type=int, default=None, metavar="N",
                     help="choose the gains with the least simulated tracking error over DynamicVAE's step-ramp "
                     "schedule run for N updates (compressed to N like `klcontrol compare`), from β0")
    sch.add_argument("--no-compress", action="store_true", help="run the schedule at the paper's speed")
    sch.add_argument("--beta0", type=float, default=DYNAMICVAE_BETA0, help="initial β (default %g)" % DYNAMICVAE_BETA0)
    sch.add_argument("--noise-std", type=float, default=0.5,
                     help="KL measurement noise in nats (default 0.5: batch 16 on dSprites)")
    sch.add_argument("--max-jitter", type=float, default=None, help="largest β jitter, std of Δβ (default none)")
    sch.add_argument("--max-overshoot-nats", type=float, default=1.0, help="largest overshoot in nats (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure of both simulated responses")
    p.set_defaults(func=run)


def _plant_from_args(args):
    if args.fit:
        from analysis.identification import PlantFit

        fit = PlantFit.load(args.fit)
        lo, hi = args.beta_range or fit.beta_range
        if not hi >= lo:
            raise ValueError(f"--beta-range needs LO ≤ HI, got {lo}, {hi}")
        problems = fit.design_problems(lo, hi)
        if problems:
            if not args.allow_unidentified:
                raise _Refused(args.fit, problems)
            import sys

            print("tune: QUALIFIED (--allow-unidentified): the fit does not identify the plant:", file=sys.stderr)
            for r in problems:
                print(f"  - {r}", file=sys.stderr)
        return fit, fit.a, tuple(fit.gprime_range(lo, hi))
    if args.a is None or args.gprime is None:
        raise ValueError("give --fit fit.json, or --a and --gprime")
    if len(args.gprime) not in (1, 2):
        raise ValueError("--gprime takes one value or two (g′min g′max)")
    g = tuple(args.gprime) if len(args.gprime) == 2 else args.gprime[0]
    return None, args.a, g


class _Refused(Exception):
    def __init__(self, path, problems):
        super().__init__(path)
        self.path, self.problems = path, problems


def run(args) -> int:
    """Execute ``klcontrol tune``."""
    import sys

    from analysis.tuning import tune

    from klcontrol.cli import EXIT_UNIDENTIFIED

    try:
        plant, a, g = _plant_from_args(args)
    except _Refused as r:
        if args.json:
            from klcontrol.cli import print_json

            print_json({"refused": True, "identifiable": False, "qualified": list(r.problems), "fit": str(r.path)})
        print(f"klcontrol tune: refused: {r.path} does not identify the plant, so no gains can be designed on it:",
              file=sys.stderr)
        for p in r.problems:
            print(f"  - {p}", file=sys.stderr)
        print("refit with longer logs or a wider β range, or pass --allow-unidentified", file=sys.stderr)
        return EXIT_UNIDENTIFIED
    if args.schedule_steps is not None:
        return _run_schedule(args, plant, g)
    r = tune(a=a, gprime=g, window=args.window, delay=args.delay, controller=args.controller, settling=args.settling,
             max_overshoot=args.max_overshoot, compare={"paper": tuple(args.compare)})
    if args.plot:
        _plot(r, plant, args.plot)
    return _report(r, args.json)


def _plot(r, plant, path):
    import numpy as np

    from klcontrol.controllers import IncrementalPI
    from klcontrol.plotting import plot_trace
    from klcontrol.setpoints import StepRamp
    from klcontrol.simulate import simulate

    if plant is None:
        raise ValueError("--plot simulates the fitted plant: give --fit fit.json")
    sp = StepRamp.dynamicvae_dsprites()
    ref = r.references.get("paper")
    kp = np.array([r.kp] + ([ref.kp] if ref else []))
    ki = np.array([r.ki] + ([ref.ki] if ref else []))
    ctrl = IncrementalPI(kp, ki, sp, beta0=DYNAMICVAE_BETA0, filter=r.window)
    tr = simulate(ctrl, plant, 60_000, delay=r.delay, noise_rel=0.03, seed=0)
    plot_trace(tr, path, labels=["tuned", "paper"][: len(kp)],
               title=f"tuned (Kp={r.kp:.3g}, Ki={r.ki:.3g}) vs paper ({ref.kp:g}, {ref.ki:g}), 3 % KL noise"
               if ref else f"tuned (Kp={r.kp:.3g}, Ki={r.ki:.3g}), 3 % KL noise")


def _run_schedule(args, plant, g):
    from analysis.schedule_tuning import tune_schedule

    from klcontrol.setpoints import StepRamp

    if plant is None:
        raise ValueError("--schedule-steps simulates the fitted plant: give --fit fit.json")
    if args.schedule_steps < 2:
        raise ValueError(f"--schedule-steps must be ≥ 2, got {args.schedule_steps}")
    sp = StepRamp.dynamicvae_dsprites()
    if not args.no_compress:
        sp = sp.compressed(DYNAMICVAE_DSPRITES_STEPS / args.schedule_steps)
    r = tune_schedule(plant, sp, args.schedule_steps, gprime=g, beta0=args.beta0, window=args.window,
                      delay=args.delay, noise_std=args.noise_std, max_overshoot=args.max_overshoot_nats,
                      max_jitter=args.max_jitter, compare={"paper": tuple(args.compare)})
    if args.plot:
        import numpy as np

        from klcontrol.controllers import IncrementalPI
        from klcontrol.plotting import plot_trace
        from klcontrol.simulate import simulate

        ctrl = IncrementalPI(np.array([r.kp, args.compare[0]]), np.array([r.ki, args.compare[1]]), sp,
                             beta0=args.beta0, filter=args.window)
        tr = simulate(ctrl, plant, args.schedule_steps, delay=args.delay, y0=0.5, noise_std=args.noise_std, seed=0)
        plot_trace(tr, args.plot, labels=["tuned", "paper"],
                   title=f"schedule-tuned (Kp={r.kp:.3g}, Ki={r.ki:.3g}) vs paper, {args.noise_std:g}-nat KL noise")
    return _report(r, args.json)


def _report(r, as_json):
    from klcontrol.cli import print_json

    if as_json:
        print_json(r.to_dict())
    else:
        print(f"objective: {r.objective}")
        print(r.table())
    return 0
