"""``klcontrol tune``: recommend Kp, Ki for a fitted plant and compare with the paper's gains."""
from __future__ import annotations

from klcontrol.papers import DYNAMICVAE_BETA0, DYNAMICVAE_GAINS
from klcontrol.registry import LINEAR_KINDS


def register(sub) -> None:
    """Register the ``tune`` command."""
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNIDENTIFIED, exit_codes_epilog
    from klcontrol.commands.common import (
        FINITE,
        NONNEG,
        POSITIVE,
        RATE,
        add_gprime_arg,
        add_window_arg,
        integer,
    )

    SCHEDULE_STEPS = integer(2, 10_000_000, cost=lambda v: f"each candidate simulates {v} updates; the paper's "
                             "whole run is 800 000")

    p = sub.add_parser(
        "tune",
        help="recommend robustly stable, fast, quiet Kp/Ki for a fitted plant",
        description="Choose Kp, Ki stable for every g′ of the fitted range, fastest worst-case decay under "
        "overshoot and noise-gain bounds (or least noise under a settling target). A fit that klcontrol fit "
        "marked not identifiable, or whose g′ band reaches 0, is refused (override: --allow-unidentified).",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNIDENTIFIED, EXIT_ERROR, 2)
        + "\n\nexample:\n  klcontrol tune --a 0.0004 --gprime -3.2 -0.5 --window 5 --compare 0.02 0.005",
    )
    src = p.add_argument_group("plant (a fit file, or a and a g′ range)")
    src.add_argument("--fit", default=None, metavar="JSON", help="fit.json written by `klcontrol fit --out`")
    src.add_argument("--a", type=RATE, default=None, help="plant rate a (paper: 0.0004 on dSprites)")
    add_gprime_arg(src)
    src.add_argument("--beta-range", type=NONNEG, nargs=2, default=None, metavar=("LO", "HI"),
                     help="with --fit: β range the schedule visits (default: the β range of the fitted traces)")
    src.add_argument("--allow-unidentified", action="store_true",
                     help="tune for a fit that is not identifiable (or whose g′ band reaches 0) instead of refusing")
    add_window_arg(p)
    p.add_argument("--delay", type=int, choices=(0, 1), default=0,
                   help="measurement delay: 0 as trained (default); 1 the paper's Eq. 15")
    p.add_argument("--controller", choices=LINEAR_KINDS, default="incremental",
                   help="controller whose linearised loop is designed (default incremental)")
    p.add_argument("--settling", type=POSITIVE, default=None, metavar="STEPS",
                   help="target worst-case 2 %% settling time in updates (default: none, fastest decay)")
    p.add_argument("--max-overshoot", type=NONNEG, default=0.05, metavar="FRACTION",
                   help="largest linear step overshoot, a fraction of the step (default 0.05)")
    p.add_argument("--compare", type=FINITE, nargs=2, default=None, metavar=("KP", "KI"),
                   help="your reference gains, shown beside the design as \"yours\" (default: the paper's %g %g, "
                   "shown as \"paper\")" % DYNAMICVAE_GAINS)
    sch = p.add_argument_group("schedule tuning (simulate the fitted plant over a whole run; needs --fit)")
    sch.add_argument("--schedule-steps", type=SCHEDULE_STEPS, default=None, metavar="N",
                     help="choose the gains with the least simulated tracking error over DynamicVAE's step-ramp "
                     "schedule run for N updates (compressed to N like `klcontrol compare`), from β0")
    sch.add_argument("--no-compress", action="store_true", help="run the schedule at the paper's speed")
    sch.add_argument("--beta0", type=NONNEG, default=DYNAMICVAE_BETA0,
                     help="initial β (default %g)" % DYNAMICVAE_BETA0)
    sch.add_argument("--noise-std", type=NONNEG, default=0.5, metavar="NATS",
                     help="KL measurement noise, standard deviation in nats (default 0.5: batch 16 on dSprites)")
    sch.add_argument("--max-jitter", type=NONNEG, default=None, help="largest β jitter, std of Δβ (default none)")
    sch.add_argument("--max-overshoot-nats", type=NONNEG, default=1.0, metavar="NATS",
                     help="largest overshoot in nats (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="figure of both simulated responses")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol tune``."""
    import sys

    from klcontrol.analysis.tuning.recommend import design_gains
    from klcontrol.analysis.verdicts.fits import Unidentified
    from klcontrol.cli import EXIT_UNIDENTIFIED, print_json
    from klcontrol.commands.common import check_output_paths, gprime_interval

    check_output_paths(args, ("plot",), inputs=(args.fit,))
    lo, hi = gprime_interval(args)
    gprime = None if lo is None else (lo if hi is None else (lo, hi))
    compare = DYNAMICVAE_GAINS if args.compare is None else tuple(args.compare)
    try:
        r, qualified = design_gains(
            fit=args.fit, a=args.a, gprime=gprime, beta_range=args.beta_range,
            allow_unidentified=args.allow_unidentified, window=args.window, delay=args.delay,
            controller=args.controller, settling=args.settling, max_overshoot=args.max_overshoot,
            compare=compare, schedule_steps=args.schedule_steps, compress=not args.no_compress,
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
