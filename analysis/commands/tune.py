"""``klcontrol tune``: recommend Kp, Ki for a fitted plant and compare with the paper's gains."""
from __future__ import annotations

from klcontrol.papers import DYNAMICVAE_BETA0, DYNAMICVAE_GAINS
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


def run(args) -> int:
    """Execute ``klcontrol tune``."""
    import sys

    from klcontrol.analysis.tuning.recommend import design_gains
    from klcontrol.analysis.verdicts.fits import Unidentified
    from klcontrol.cli import EXIT_UNIDENTIFIED, print_json

    try:
        r, qualified = design_gains(
            fit=args.fit, a=args.a, gprime=args.gprime, beta_range=args.beta_range,
            allow_unidentified=args.allow_unidentified, window=args.window, delay=args.delay,
            controller=args.controller, settling=args.settling, max_overshoot=args.max_overshoot,
            compare=tuple(args.compare), schedule_steps=args.schedule_steps, compress=not args.no_compress,
            beta0=args.beta0, noise_std=args.noise_std, max_jitter=args.max_jitter,
            max_overshoot_nats=args.max_overshoot_nats, plot=args.plot)
    except Unidentified as r:
        if args.json:
            print_json({"refused": True, "identifiable": False, "qualified": r.problems, "fit": r.path})
        print(f"klcontrol tune: refused: {r.path} does not identify the plant, so no gains can be designed on it:",
              file=sys.stderr)
        for p in r.problems:
            print(f"  - {p}", file=sys.stderr)
        print("refit with longer logs or a wider β range, or pass --allow-unidentified", file=sys.stderr)
        return EXIT_UNIDENTIFIED
    if qualified:
        print("tune: QUALIFIED (--allow-unidentified): the fit does not identify the plant:", file=sys.stderr)
        for q in qualified:
            print(f"  - {q}", file=sys.stderr)
    if args.json:
        print_json(r.to_dict())
    else:
        print(f"objective: {r.objective}")
        print(r.table())
    return 0
