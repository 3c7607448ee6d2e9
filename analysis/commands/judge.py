"""``klcontrol judge``: was the loop of a closed-loop training log stable? Beside the fits' predictions."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    """Register the ``judge`` command."""
    from klcontrol.analysis.identification.traces import add_reader_arguments
    from klcontrol.cli import EXIT_ERROR, EXIT_OK, EXIT_UNSTABLE, exit_codes_epilog
    from klcontrol.commands.common import FINITE, NONNEG, POSITIVE, OneSetpoint, add_window_arg, fit_spec, integer

    p = sub.add_parser(
        "judge",
        help="judge a closed-loop training log: was the β loop stable? (with the predictions of saved fits)",
        description="Decide from your own closed-loop log (β and KL every update, after a kick away from β*) "
        "whether the loop was stable, by the criterion klcontrol verify-stability uses "
        "(klcontrol.analysis.verdicts.observed: β at its clamp, an oscillation of RMS ≥ β*/2, or one still "
        "growing), and put the verdicts of saved fits at the gains and set point beside it.",
        epilog=exit_codes_epilog(EXIT_OK, EXIT_UNSTABLE, EXIT_ERROR, 2).replace(
            "check, stability: not (robustly) stable", "judge: the logged loop was not stable")
        + "\n\nexample:\n  klcontrol judge \"$(klcontrol data path stability_real/pi_kp0.01_ki0.005_T5_s0.csv.gz)\" "
        "--beta-star 4 --kp 0.01 --ki 0.005 --window 5 --setpoint 14 "
        "--fit identified=\"$(klcontrol data path identify/fit.json)\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log", metavar="PATH", help="the closed-loop log (CSV, JSONL, TensorBoard, a run directory)")
    p.add_argument("--beta-star", type=POSITIVE, required=True,
                   help="β at the operating point (the scale of the criterion)")
    p.add_argument("--beta-min", type=NONNEG, default=0.0, help="the controller's lower β clamp (default 0)")
    p.add_argument("--skip", type=integer(0, 10_000_000), default=100, help="rows of transient ignored (default 100)")
    p.add_argument("--fit", type=fit_spec, nargs="+", default=[], metavar="[NAME=]JSON",
                   help="saved fits whose predictions to show, each optionally named (default name: the file's stem)")
    p.add_argument("--kp", type=FINITE, default=None, help="the logged loop's Kp (with --fit)")
    p.add_argument("--ki", type=FINITE, default=None, help="the logged loop's Ki (with --fit)")
    add_window_arg(p, help="the logged loop's moving-average window (default 5, the papers')")
    p.add_argument("--setpoint", type=NONNEG, default=None, metavar="C", action=OneSetpoint,
                   help="its constant set point in nats (with --fit)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    add_reader_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol judge``."""
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.identification.traces import read_trace, reader_kwargs
    from klcontrol.analysis.stability import spectral_radius
    from klcontrol.analysis.verdicts.observed import observed_stability
    from klcontrol.cli import EXIT_OK, EXIT_UNSTABLE, print_json

    if not args.beta_star > 0:
        raise ValueError(f"--beta-star must be positive, got {args.beta_star}")
    tr = read_trace(args.log, **{k: v for k, v in reader_kwargs(args).items() if k != "run"})
    if len(tr) <= args.skip + 8:
        raise ValueError(f"{args.log}: {len(tr)} rows, too few to judge after --skip {args.skip}")
    obs = observed_stability(tr.beta, args.beta_star, skip=args.skip, beta_min=args.beta_min)
    out = dict(log=str(args.log), observed=obs, observed_stable=bool(obs["stable"]), predicted={})
    if args.fit:
        if args.kp is None or args.ki is None or args.setpoint is None:
            raise ValueError("--fit needs the logged loop's --kp, --ki and --setpoint")
        for name, path in args.fit:
            r = float(spectral_radius(args.kp, args.ki, plant=load_fit(path), setpoint=args.setpoint,
                                      window=args.window))
            out["predicted"][name] = dict(stable=bool(r < 1), spectral_radius=r, agrees=bool((r < 1) == obs["stable"]))
    if args.json:
        print_json(out)
    else:
        verdict = "stable" if obs["stable"] else "UNSTABLE (" + ", ".join(obs["reasons"]) + ")"
        print(f"observed: {verdict}; β RMS over the last quarter {obs['rms_late_rel']:.3g}·β*, at the clamp "
              f"{100 * obs['saturated_frac']:.1f} % of rows")
        for name, pr in out["predicted"].items():
            print(f"{name}: predicts {'stable' if pr['stable'] else 'UNSTABLE'} (spectral radius "
                  f"{pr['spectral_radius']:.4f}): {'agrees' if pr['agrees'] else 'DISAGREES'}")
    return EXIT_OK if obs["stable"] else EXIT_UNSTABLE
