"""``klcontrol check``: robust stability of given PI gains on a fitted plant."""
from __future__ import annotations

CONTROLLERS = ("incremental", "incremental-official", "positional")


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
    from analysis.stability import robust_stability

    from ..cli import print_json
    from ..plant import FirstOrderPlant

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
    if "fit" in d:
        plant = PlantFit.from_dict(d)
        lo, hi = args.beta_range or plant.beta_range
        widen = not args.point
        g_lo, g_hi = plant.gprime_range(lo, hi, ci=widen)
        a_values = [plant.a] + ([v for v in plant.a_ci if math.isfinite(v)] if widen else [])
    else:
        plant = FirstOrderPlant.from_dict(d)
        if args.beta_range is None:
            raise ValueError(f"{path} is a plant without a fit: give --beta-range LO HI")
        lo, hi = args.beta_range
        import numpy as np

        gp = np.asarray(plant.g.derivative(np.linspace(lo, hi, 513)), dtype=float)
        g_lo, g_hi = float(gp.min()), float(gp.max())
        a_values = [float(plant.a)]
    if not hi >= lo:
        raise ValueError(f"--beta-range needs LO ≤ HI, got {lo}, {hi}")
    cfg = dict(window=args.window, delay=args.delay, controller=args.controller)
    results = [(a, robust_stability(args.kp, args.ki, a, g_lo, g_hi, **cfg)) for a in a_values]
    stable = all(r.stable for _, r in results)
    worst_a, worst = max(results, key=lambda ar: ar[1].worst_spectral_radius)
    out = {
        "stable": stable, "fit_kind": "first_order", "kp": args.kp, "ki": args.ki, **cfg,
        "beta_range": [lo, hi], "gprime_range": [g_lo, g_hi], "widened_to_ci": not args.point and "fit" in d,
        "a_checked": [a for a, _ in results],
        "worst_spectral_radius": worst.worst_spectral_radius, "worst_gprime": worst.worst_gprime, "worst_a": worst_a,
        "gain_margin": min(r.gain_margin for _, r in results),
        "per_a": [dict(a=a, **r.to_dict()) for a, r in results],
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{'STABLE' if stable else 'NOT robustly stable'}: {args.controller} PI Kp={args.kp:g}, Ki={args.ki:g}, "
          f"T={args.window}, delay={args.delay}")
    print(f"over β ∈ [{lo:g}, {hi:g}]: g′ ∈ [{g_lo:.4g}, {g_hi:.4g}]"
          + (" (widened to the confidence band)" if out["widened_to_ci"] else ""))
    for a, r in results:
        verdict = "stable" if r.stable else "unstable"
        print(f"  a = {a:.4g}: {verdict}, worst spectral radius {r.worst_spectral_radius:.9f} at g′ = "
              f"{r.worst_gprime:.4g}, gain margin {r.gain_margin:.4g}")
        if r.stable_gprime_range is not None:
            print(f"    stable g′ range ({r.stable_gprime_range[0]:.4g}, {r.stable_gprime_range[1]:.4g})")
    return 0


def _check_lti(args, path, d) -> int:
    """Any fit kind that gives its linearisations (the protocol of :func:`analysis.stability_lti.check_fit`)."""
    from analysis import identification
    from analysis.stability_lti import check_fit

    from ..cli import print_json

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
    return 0
