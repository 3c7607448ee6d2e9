"""``klcontrol stability``: stability verdict, spectral radius and margins of the linearised loop."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS


def register(sub) -> None:
    """Register the ``stability`` command."""
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNSTABLE, exit_codes_epilog
    from klcontrol.commands.common import FINITE, RATE, add_gprime_arg, add_window_arg

    p = sub.add_parser(
        "stability",
        help="stability verdict and margins of the linearised loop",
        description="Linearise the loop (controller law + first-order plant y(t) = y(t-1)/(1+a) + a/(1+a)·g(β)) "
        "at its equilibrium and report whether it is stable, its spectral radius, and margins. With "
        "--gprime LO HI the verdict holds for every g′ between LO and HI.",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNSTABLE, EXIT_ERROR, 2)
        + "\n\nexample:\n  klcontrol stability --kp 0.01 --ki 0.005 --a 0.0004 --gprime -3.2 -1 --window 5",
    )
    p.add_argument("--kp", type=FINITE, required=True, help="proportional gain")
    p.add_argument("--ki", type=FINITE, required=True, help="integral gain (positive = negative feedback)")
    p.add_argument("--a", type=RATE, required=True, help="plant rate a > 0 (paper: 1/2500 = 0.0004 on dSprites)")
    add_gprime_arg(p, required=True)
    add_window_arg(p)
    p.add_argument("--delay", type=int, choices=(0, 1), default=0,
                   help="measurement delay: 0 as trained (default); 1 the paper's Eq. 15")
    p.add_argument("--controller", choices=LINEAR_KINDS, default="incremental", help="controller (default incremental)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the stable (Kp, Ki) region as a PNG")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress messages (they go to stderr, only when it is a terminal, never with --json; "
                        "shown while a window outside 1…8 is derived for the first time)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol stability``."""
    from klcontrol.analysis.verdicts.fits import format_stability, stability_verdict
    from klcontrol.cli import EXIT_OK, EXIT_UNSTABLE, print_json
    from klcontrol.commands.common import check_output_paths, gprime_interval

    lo, hi = gprime_interval(args)
    check_output_paths(args, ("plot",))
    out = stability_verdict(args.kp, args.ki, args.a, lo, hi, args.window, args.delay,
                            args.controller, progress=_progress(args))
    out["plot"] = args.plot
    if args.plot:
        from klcontrol.analysis.stability.plots import gains_region_figure

        gains_region_figure(args.kp, args.ki, args.a, lo, args.window, args.delay, args.controller,
                            path=args.plot)
    if args.json:
        print_json(out)
    else:
        print(format_stability(out) + (f"\nregion written to {args.plot}" if args.plot else ""))
    return EXIT_OK if out["stable"] else EXIT_UNSTABLE


def _progress(args):
    """A stderr reporter for the derivation's stages, or None (``--no-progress``, ``--json``, not a terminal)."""
    import sys
    import time

    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        return None
    try:
        if not sys.stderr.isatty():
            return None
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return None
    t0 = time.perf_counter()

    def report(msg):
        print(f"[{time.perf_counter() - t0:5.1f} s] deriving the stability code, {msg}", file=sys.stderr, flush=True)

    return report
