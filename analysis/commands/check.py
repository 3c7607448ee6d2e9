"""``klcontrol check``: robust stability of given PI gains on a fitted plant."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS


def register(sub) -> None:
    """Register the ``check`` command."""
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNIDENTIFIED, EXIT_UNSTABLE, exit_codes_epilog
    from klcontrol.commands.common import FINITE, NONNEG, POSITIVE, add_window_arg

    p = sub.add_parser(
        "check",
        help="robust stability verdict of PI gains on a fitted plant (klcontrol fit --out)",
        description="Check that (Kp, Ki) stabilise the linearised loop. First-order fit: exactly, for every g′ the "
        "fitted g takes over the β range (by default the range seen in the traces, widened to the bootstrap band of "
        "g′) and for a at its estimate and both ends of its confidence interval. Any other fit kind (loaded by "
        "klcontrol.analysis.identification.fits.load_fit, e.g. a Hammerstein fit): on its linearisation at each operating point "
        "(--setpoint, or g(β) over the β range) and at each bootstrap draw it provides (closed-loop eigenvalues). "
        "A fit that klcontrol fit marked not identifiable, or whose g′ band reaches 0 over the β range, is refused "
        "(--allow-unidentified checks it anyway, the verdict marked as qualified).",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNSTABLE, EXIT_UNIDENTIFIED, EXIT_ERROR, 2)
        + "\n\nexample:\n  klcontrol check --fit \"$(klcontrol data path identify/fit.json)\" --kp 0.01 --ki 0.005 "
        "--window 5 --beta-range 2.43 6.59",
    )
    p.add_argument("--fit", required=True, metavar="JSON", help="fit saved by `klcontrol fit --out` (any kind)")
    p.add_argument("--kp", type=FINITE, required=True, help="proportional gain")
    p.add_argument("--ki", type=FINITE, required=True, help="integral gain (positive = negative feedback)")
    add_window_arg(p)
    p.add_argument("--delay", type=int, choices=(0, 1), default=0,
                   help="measurement delay: 0 as trained (default); 1 the paper's Eq. 15")
    p.add_argument("--controller", choices=LINEAR_KINDS, default="incremental", help="controller (default incremental)")
    p.add_argument("--beta-range", type=NONNEG, nargs=2, metavar=("LO", "HI"), default=None,
                   help="β range to cover (default: the range seen by the fit; needed for a plain plant JSON)")
    p.add_argument("--setpoint", type=NONNEG, nargs="+", metavar="C", default=None,
                   help="operating points (KL set points, nats) to check at: a first-order fit over the β range "
                   "g⁻¹ maps them to, any other fit linearised at each (default: g(β) at 9 points of the β range)")
    p.add_argument("--ray", type=NONNEG, nargs="+", metavar="R", default=None,
                   help="also print the critical Ki on each ray Kp = R·Ki (R = 0: integral only) and the period the "
                   "loop oscillates with there, over the plants checked")
    p.add_argument("--point", action="store_true",
                   help="use the point estimates only (no widening to the confidence band of g′ and a; no "
                   "bootstrap draws)")
    p.add_argument("--excitation", nargs="+", metavar="PATH", default=None,
                   help="open-loop excitation runs at the operating point (klcontrol identify's ol_*.csv.gz): with "
                   "--ray, the critical Ki measured from their frequency response, no model, beside the fit's, "
                   "and a flag where they disagree (needs --beta-star)")
    p.add_argument("--beta-star", type=POSITIVE, default=None, help="β of the operating point of --excitation")
    p.add_argument("--relay", nargs="+", metavar="PATH", default=None,
                   help="relay runs of klcontrol identify (relay_*.csv.gz or their run directories): their model-free "
                   "critical gain beside the model set's interval, flagged where they disagree")
    p.add_argument("--relay-conditioned", action="store_true",
                   help="with a Kp = 0 relay run in --relay: the verdict over the model set's plants that the relay "
                   "confirms (their integral-ray critical gain within its ±15 %%; always printed beside the set)")
    p.add_argument("--draws", type=int, default=100, metavar="N",
                   help="parameter draws per member of a Hammerstein fit's model set (0: the members only; "
                   "default 100)")
    p.add_argument("--allow-unidentified", action="store_true",
                   help="check a fit that is not identifiable (or whose g′ band reaches 0) instead of refusing it")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol check``."""
    import sys

    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.verdicts.fits import check_fit_file, design_problems, format_verdict
    from klcontrol.cli import EXIT_OK, EXIT_UNIDENTIFIED, EXIT_UNSTABLE, print_json

    problems = design_problems(load_fit(args.fit), args.beta_range)
    if problems and not args.allow_unidentified:
        if args.json:  # a JSON consumer sees a verdict too: not stable, refused, and why
            print_json({"stable": False, "refused": True, "identifiable": False, "qualified": problems,
                        "fit": str(args.fit)})
        print(f"klcontrol check: refused: {args.fit} does not identify the plant, so no stability verdict can rest "
              "on it:", file=sys.stderr)
        for r in problems:
            print(f"  - {r}", file=sys.stderr)
        print("refit with longer logs or a wider β range, or pass --allow-unidentified to check it anyway",
              file=sys.stderr)
        return EXIT_UNIDENTIFIED
    out = check_fit_file(args.fit, args.kp, args.ki, args.window, args.delay, args.controller,
                         beta_range=args.beta_range, setpoints=args.setpoint, point=args.point)
    out.update(identifiable=not problems, qualified=problems)
    if args.ray:
        from klcontrol.analysis.verdicts.fits import critical_gains

        out["critical_gain"] = critical_gains(args.fit, args.ray, args.window, args.delay, args.controller,
                                              beta_range=args.beta_range, setpoints=args.setpoint, point=args.point)
    if args.excitation:
        from klcontrol.analysis.verdicts.fits import measured_critical_gains

        if not args.ray or args.beta_star is None:
            raise ValueError("--excitation needs --ray (the rays to measure) and --beta-star (their operating point)")
        out["measured_critical_gain"] = measured_critical_gains(args.excitation, args.beta_star, args.ray,
                                                                out.get("critical_gain"), args.window, args.delay,
                                                                args.controller)
    verdict_stable = out["stable"]
    if out.get("fit_kind") == "hammerstein" and not args.point:
        verdict_stable = _model_set(args, out)
    if args.json:
        print_json(out)
    else:
        if problems:
            print("QUALIFIED (--allow-unidentified): the fit does not identify the plant, so this verdict rests on "
                  "numbers the data do not support:")
            print("\n".join(f"  - {r}" for r in problems))
        print(format_verdict(dict(out, worst_plant=_plant_label(out.get("worst_plant")))))
        if args.ray:
            from klcontrol.analysis.verdicts.fits import format_critical

            print(format_critical(out["critical_gain"]))
        if args.excitation:
            from klcontrol.analysis.verdicts.fits import format_measured

            print(format_measured(out["measured_critical_gain"], len(args.excitation)))
        if "model_set" in out:
            from klcontrol.analysis.verdicts.model_set import format_set

            print(format_set(out))
    return EXIT_OK if verdict_stable else EXIT_UNSTABLE


def _model_set(args, out) -> bool:
    """The verdict over the fit's model set (docs/identification.md), added to ``out``; True when stable."""
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.verdicts.model_set import relay_beside, set_critical_gains, set_responses, set_verdict

    if args.draws < 0 or args.draws > 10_000:
        raise ValueError(f"--draws must be in [0, 10000], got {args.draws}")
    fit = load_fit(args.fit)
    cfg = dict(window=args.window, delay=args.delay, controller=args.controller, setpoints=args.setpoint,
               beta_range=args.beta_range, draws=args.draws)
    cache = set_responses(fit, args.setpoint, args.beta_range, args.draws)
    ms = dict(verdict=set_verdict(fit, args.kp, args.ki, **cfg, _responses_cache=cache))
    ratios = list(args.ray or [])
    relays = []
    if args.relay:
        from klcontrol.analysis.identification.relay import relay_from_file

        relays = [relay_from_file(p) for p in args.relay]
        ratios += [r["ratio"] for r in relays if r["ratio"] not in ratios]
    ms["critical_gain"] = set_critical_gains(fit, ratios, **cfg, _responses_cache=cache) if ratios else {}
    ms["relay"] = relay_beside(relays, ms["critical_gain"])
    ms["warning"] = ((getattr(fit, "info", None) or {}).get("selection") or {}).get("warning")
    integral = [r for r in relays if r["ratio"] == 0]
    if args.relay_conditioned and not integral:
        raise ValueError("--relay-conditioned needs a relay run on the integral ray (Kp = 0) in --relay")
    decided_by = ms["verdict"]
    if integral:
        from klcontrol.analysis.verdicts.model_set import condition_on_relay

        kept, info = condition_on_relay(cache, integral[0]["ki"], args.window, args.delay, args.controller)
        rc = dict(info, relay=integral[0]["trace"])
        if info["conditioned"]:
            rc["verdict"] = set_verdict(fit, args.kp, args.ki, **cfg, _responses_cache=kept)
            rc["critical_gain"] = set_critical_gains(fit, ratios, **cfg, _responses_cache=kept) if ratios else {}
            if args.relay_conditioned:
                rc["decides"] = True
                decided_by = rc["verdict"]
        ms["relay_conditioned"] = rc
    out["model_set"] = ms
    return decided_by["verdict"] == "stable"


def _plant_label(label):
    """The linearisation a label of :func:`klcontrol.analysis.stability.lti.plant_set` names, in words
    ("0@12.3749#3" → "at C = 12.37 nats, bootstrap draw 3"); other labels unchanged."""
    import re

    m = re.fullmatch(r"\d+@([^#]+)(?:#(\d+))?", str(label))
    if not m:
        return label
    try:
        c = f"at C = {float(m[1]):.4g} nats"
    except ValueError:
        return label
    return c + (f", bootstrap draw {m[2]}" if m[2] else ", point estimate")
