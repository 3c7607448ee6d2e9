"""``klcontrol check``: robust stability of given PI gains on a fitted plant."""
from __future__ import annotations

from klcontrol.registry import LINEAR_KINDS as CONTROLLERS


def register(sub) -> None:
    """Register the ``check`` command."""
    p = sub.add_parser(
        "check",
        help="robust stability verdict of PI gains on a fitted plant (klcontrol fit --out)",
        description="Check that (Kp, Ki) stabilise the linearised loop. First-order fit: exactly, for every g′ the "
        "fitted g takes over the β range (by default the range seen in the traces, widened to the bootstrap band of "
        "g′) and for a at its estimate and both ends of its confidence interval. Any other fit kind (loaded by "
        "analysis.identification.load_fit, e.g. a Hammerstein fit): on its linearisation at each operating point "
        "(--setpoint, or g(β) over the β range) and at each bootstrap draw it provides (closed-loop eigenvalues).",
    )
    p.add_argument("--fit", required=True, metavar="JSON", help="fit saved by `klcontrol fit --out` (any kind)")
    p.add_argument("--kp", type=float, required=True, help="proportional gain")
    p.add_argument("--ki", type=float, required=True, help="integral gain (positive = negative feedback)")
    p.add_argument("--window", type=int, default=1, help="moving-average window T (default 1)")
    p.add_argument("--delay", type=int, choices=(0, 1), default=0, help="0: as trained; 1: paper's Eq. 15")
    p.add_argument("--controller", choices=CONTROLLERS, default="incremental", help="controller (default incremental)")
    p.add_argument("--beta-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="β range to cover (default: the range seen by the fit; needed for a plain plant JSON)")
    p.add_argument("--setpoint", type=float, nargs="+", metavar="C", default=None,
                   help="operating points (KL set points) to linearise a non-first-order fit at (default: g(β) at 9 "
                   "points of the β range)")
    p.add_argument("--point", action="store_true",
                   help="use the point estimates only (no widening to the confidence band of g′ and a; no "
                   "bootstrap draws)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Execute ``klcontrol check``."""
    import json
    import math
    from pathlib import Path

    from analysis.identification import PlantFit
    from analysis.stability import check_gains

    from klcontrol.cli import print_json
    from klcontrol.plant import FirstOrderPlant

    if args.window < 1:
        raise ValueError(f"--window must be ≥ 1, got {args.window}")
    if not (math.isfinite(args.kp) and math.isfinite(args.ki)):
        raise ValueError("--kp and --ki must be finite")
    path = Path(args.fit)
    if not path.is_file():
        raise ValueError(f"fit file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(d, dict) or d.get("kind") != "first_order":
        return _check_lti(args, path, d)
    if args.setpoint is not None:
        raise ValueError("--setpoint applies to non-first-order fits; a first-order fit is checked over --beta-range")
    plant = PlantFit.from_dict(d) if "fit" in d else FirstOrderPlant.from_dict(d)
    if not isinstance(plant, PlantFit) and args.beta_range is None:
        raise ValueError(f"{path} is a plant without a fit: give --beta-range LO HI")
    if args.beta_range is not None and not args.beta_range[1] >= args.beta_range[0]:
        raise ValueError(f"--beta-range needs LO ≤ HI, got {args.beta_range[0]}, {args.beta_range[1]}")
    out = check_gains(args.kp, args.ki, plant, args.beta_range, widen=not args.point, window=args.window,
                      delay=args.delay, controller=args.controller)
    out = {"stable": out.pop("stable"), "fit_kind": "first_order", **out}
    stable, (lo, hi), (g_lo, g_hi) = out["stable"], out["beta_range"], out["gprime_range"]
    if args.json:
        print_json(out)
        return 0
    print(f"{'STABLE' if stable else 'NOT robustly stable'}: {args.controller} PI Kp={args.kp:g}, Ki={args.ki:g}, "
          f"T={args.window}, delay={args.delay}")
    print(f"over β ∈ [{lo:g}, {hi:g}]: g′ ∈ [{g_lo:.4g}, {g_hi:.4g}]"
          + (" (widened to the confidence band)" if out["widened_to_ci"] else ""))
    for r in out["per_a"]:
        verdict = "stable" if r["stable"] else "unstable"
        print(f"  a = {r['a']:.4g}: {verdict}, worst spectral radius {r['worst_spectral_radius']:.9f} at g′ = "
              f"{r['worst_gprime']:.4g}, gain margin {r['gain_margin']:.4g}")
        if r["stable_gprime_range"] is not None:
            print(f"    stable g′ range ({r['stable_gprime_range'][0]:.4g}, {r['stable_gprime_range'][1]:.4g})")
    return 0


def _check_lti(args, path, d) -> int:
    """Any fit kind that gives its linearisations (the protocol of :func:`analysis.stability_lti.check_fit`)."""
    from analysis import identification
    from analysis.stability_lti import check_fit

    from klcontrol.cli import print_json

    load_fit = getattr(identification, "load_fit", None)
    if load_fit is None:
        kind = d.get("kind") if isinstance(d, dict) else None
        raise ValueError(f"{path}: not a first-order plant description or fit (kind {kind!r}), and no loader for "
                         "other fit kinds is installed (analysis.identification.load_fit)")
    fit = load_fit(path)
    kind = getattr(fit, "kind", type(fit).__name__)
    try:
        out = check_fit(fit, args.kp, args.ki, args.window, args.delay, args.controller, setpoints=args.setpoint,
                        beta_range=args.beta_range, draws=not args.point)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    out = {"stable": out.pop("stable"), "fit_kind": kind, **out}
    if args.json:
        print_json(out)
        return 0
    print(f"{'STABLE' if out['stable'] else 'NOT robustly stable'}: {args.controller} PI Kp={args.kp:g}, "
          f"Ki={args.ki:g}, T={args.window}, delay={args.delay} on the {kind} fit")
    print(f"over {len(out['setpoints'])} operating points C ∈ [{min(out['setpoints']):.4g}, "
          f"{max(out['setpoints']):.4g}]" + (" and their bootstrap draws" if out["draws_included"] else "")
          + f": {out['n_stable']} of {out['n_plants']} linearisations stable")
    print(f"  worst spectral radius {out['worst_spectral_radius']:.9f} ({out['worst_plant']}), "
          f"gain margin {out['gain_margin']:.4g}")
    if not out["stable"] and out["gain_range"] is not None:
        lo, hi = out["gain_range"]
        print(f"  stable on every linearisation for gain factors s in ({lo:.4g}, {hi:.4g}): (s·Kp, s·Ki)")
    return 0
