"""``klcontrol stability``: stability verdict, spectral radius and margins of the linearised loop."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS as CONTROLLERS


def register(sub) -> None:
    """Register the ``stability`` command."""
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNSTABLE, exit_codes_epilog

    p = sub.add_parser(
        "stability",
        help="stability verdict and margins of the linearised loop",
        description="Linearise the loop (controller law + first-order plant y(t) = y(t-1)/(1+a) + a/(1+a)·g(β)) "
        "at its equilibrium and report whether it is stable, its spectral radius, and margins. With "
        "--gprime-max the verdict holds for every g′ between --gprime and --gprime-max.",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNSTABLE, EXIT_ERROR, 2),
    )
    p.add_argument("--kp", type=float, required=True, help="proportional gain")
    p.add_argument("--ki", type=float, required=True, help="integral gain (positive = negative feedback)")
    p.add_argument("--a", type=float, required=True, help="plant rate a > 0 (paper: 1/2500 dSprites)")
    p.add_argument("--gprime", type=float, required=True, help="plant slope g′(β*) (paper dSprites: -3.2)")
    p.add_argument("--gprime-max", type=float, default=None, help="other end of a g′ interval (robust verdict)")
    p.add_argument("--window", type=int, default=1, help="moving-average window T (default 1)")
    p.add_argument("--delay", type=int, choices=(0, 1), default=0, help="0: as trained; 1: paper's Eq. 15")
    p.add_argument("--controller", choices=CONTROLLERS, default="incremental", help="controller (default incremental)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the stable (Kp, Ki) region as a PNG")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress messages (they go to stderr, only when it is a terminal, never with --json; "
                        "shown while a window outside 1…8 is derived for the first time)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol stability``."""
    import math

    from analysis.stability import robust_stability, spectral_radius
    from analysis.stability_codegen import coefficient_functions

    from klcontrol.cli import EXIT_OK, EXIT_UNSTABLE, print_json

    if args.window < 1:
        raise ValueError(f"--window must be ≥ 1, got {args.window}")
    for name in ("kp", "ki", "a", "gprime"):
        if not math.isfinite(getattr(args, name)):
            raise ValueError(f"--{name} must be finite")
    if args.a <= 0:
        raise ValueError(f"--a must be > 0, got {args.a}")
    cfg = dict(window=args.window, delay=args.delay, controller=args.controller)
    # Derive (or load) the generated code first, reporting the stages of a long derivation.
    coefficient_functions(args.controller, args.window, args.delay, progress=_progress(args))
    res = robust_stability(args.kp, args.ki, args.a, args.gprime, args.gprime_max, **cfg)
    rho = spectral_radius(args.kp, args.ki, args.a, args.gprime, **cfg)
    out = {
        "stable": res.stable,
        "spectral_radius": rho,
        "worst_spectral_radius": res.worst_spectral_radius,
        "worst_gprime": res.worst_gprime,
        "gain_margin": res.gain_margin,
        "gain_range": res.gain_range,
        "stable_gprime_range": res.stable_gprime_range,
        "crossings": [c.gprime for c in res.crossings],
        "gprime_interval": [res.gprime_min, res.gprime_max],
        "kp": args.kp, "ki": args.ki, "a": args.a, **cfg,
        "plot": args.plot,
    }
    if args.plot:
        _plot(args)
    rc = EXIT_OK if res.stable else EXIT_UNSTABLE
    if args.json:
        print_json(out)
        return rc
    interval = (f"g′ = {args.gprime:g}" if args.gprime_max is None
                else f"every g′ in [{res.gprime_min:g}, {res.gprime_max:g}]")
    print(f"{'STABLE' if res.stable else 'UNSTABLE'} for {interval} "
          f"({args.controller} PI, Kp={args.kp:g}, Ki={args.ki:g}, a={args.a:g}, T={args.window}, delay={args.delay})")
    print(f"spectral radius {rho:.9f} at g′ = {args.gprime:g}; worst {res.worst_spectral_radius:.9f} at g′ = {res.worst_gprime:g}")
    if res.stable:
        print(f"gain margin: (Kp, Ki) may be scaled together by up to {res.gain_margin:.6g}")
    elif res.gain_range is not None:
        print(f"robustly stable for gain factors in ({res.gain_range[0]:.6g}, {res.gain_range[1]:.6g})")
    if res.stable_gprime_range is not None:
        lo, hi = res.stable_gprime_range
        print(f"stable g′ range: ({lo:.6g}, {hi:.6g})")
    else:
        print("no g′ makes these gains stable")
    if args.plot:
        print(f"region written to {args.plot}")
    return rc


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


def _plot(args):
    from analysis.plots import plot_region
    from analysis.stability_paper import default_boxes

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.gprime == 0:
        raise ValueError("--plot needs a nonzero --gprime")
    lo_p, hi_p, lo_i, hi_i = default_boxes(args.a, args.gprime)["near"]
    # Make sure the requested gains are inside the drawn box.
    hi_p, hi_i = max(hi_p, 1.3 * args.kp), max(hi_i, 1.3 * args.ki)
    lo_p, lo_i = min(lo_p, args.kp - 0.3 * abs(args.kp)), min(lo_i, args.ki - 0.3 * abs(args.ki))
    fig, ax = plt.subplots(figsize=(6, 5))
    plot_region(ax, args.a, args.gprime, (lo_p, hi_p, lo_i, hi_i), windows=(args.window,), delay=args.delay,
                controller=args.controller, paper=args.delay == 1 and args.window == 1,
                gains=(args.kp, args.ki))
    ax.set_title(f"stable region at g′={args.gprime:g} (a={args.a:g}, T={args.window}, delay {args.delay})")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)
