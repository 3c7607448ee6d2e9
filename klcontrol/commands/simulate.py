"""``klcontrol simulate``: run a controller on the first-order plant model."""
from __future__ import annotations

from .common import (
    NONNEG,
    SEED,
    SIM_STEPS,
    add_controller_args,
    add_deprecated_alias,
    add_plant_args,
    add_progress_arg,
    add_setpoint_args,
    check_output_paths,
    controller_from_args,
    plant_from_args,
    setpoint_from_args,
    show_progress,
)


def register(sub) -> None:
    """Register the ``simulate`` command."""
    p = sub.add_parser(
        "simulate",
        help="simulate a β controller on the first-order KL plant",
        description="Simulate the closed loop on y(t) = y(t-1)/(1+a) + a/(1+a)·g0·exp(-k·β(t)) (default: the "
        "DynamicVAE paper's MNIST plant; the output names the plant it ran); write the trace as CSV, optionally a "
        "PNG, and print figures.",
        epilog="example:\n  klcontrol simulate --setpoint 20 --steps 3000 --a 0.0004 --window 5 --out trace.csv",
    )
    add_controller_args(p)
    add_plant_args(p)
    add_setpoint_args(p)
    p.add_argument("--steps", type=SIM_STEPS, default=20000, help="number of updates (default 20000)")
    p.add_argument("--delay", type=int, choices=(0, 1), default=0,
                   help="measurement delay: 0 as trained (default); 1 the paper's Eq. 15")
    p.add_argument("--y0", type=NONNEG, default=0.0, help="initial KL in nats (default 0)")
    p.add_argument("--noise-std", type=NONNEG, default=0.0, metavar="NATS",
                   help="measurement noise on the KL, standard deviation in nats (default 0)")
    p.add_argument("--noise-rel", type=NONNEG, default=0.0, metavar="FRACTION",
                   help="measurement noise relative to the KL, e.g. 0.05 for 5 %% (default 0)")
    add_deprecated_alias(p, "--noise", "--noise-rel", type=NONNEG, dest="noise_rel")
    p.add_argument("--seed", type=SEED, default=0, help="noise seed (default 0)")
    p.add_argument("--out", default="trace.csv", help="CSV path for the trace (default trace.csv)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a figure of β(t) and KL(t)")
    p.add_argument("--json", action="store_true", help="print final KL, overshoot and settling time as JSON")
    p.add_argument("--engine", choices=("auto", "numpy", "compiled"), default="auto",
                   help="numpy, compiled (numba: pip install 'klcontrol[fast]'), or auto: compiled when it pays "
                        "(default)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def _check_out(path) -> None:
    """Refuse to replace a file simulate did not write (a trainer's trace.csv, a user's file), before any work."""
    import os

    from ..fileio import check_not_run_file

    check_not_run_file(path, "--out")  # a run's trace.csv whose run has not written it yet has no header to check
    if os.path.isdir(path):
        raise ValueError(f"--out {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {path}: the folder {folder} does not exist")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                head = fh.readline().strip()
        except (OSError, UnicodeDecodeError):
            head = None
        if head != "step,beta,kl,setpoint":
            raise ValueError(f"--out {path} exists and is not a trace klcontrol simulate wrote (e.g. a training run's "
                             "trace): klcontrol never overwrites what it did not make; choose another --out")


def run(args) -> int:
    """Execute ``klcontrol simulate``."""
    from ..cli import print_json
    from ..simulate import simulate

    _check_out(args.out)
    check_output_paths(args, ("plot",), inputs=(args.out,))
    sp = setpoint_from_args(args)
    ctrl = controller_from_args(args, sp)
    plant = plant_from_args(args)
    tr = simulate(ctrl, plant, args.steps, delay=args.delay, y0=args.y0, noise_std=args.noise_std,
                  noise_rel=args.noise_rel, seed=args.seed, progress=show_progress(args), engine=args.engine)
    tr.to_csv(args.out)  # checked before the run (_check_out)
    if args.plot:
        from ..plotting import plot_trace

        plot_trace(tr, args.plot, title=f"{args.controller}: Kp={args.kp}, Ki={args.ki}, T={args.window}, d={args.delay}")
    m = tr.metrics()
    m.update(trace=args.out, plot=args.plot, final_beta=float(tr.beta[-1]), engine=tr.meta["engine"],
             plant=_plant_name(args), plant_params=dict(a=args.a, g0=args.g0, k=args.k))
    if args.json:
        print_json(m)
    else:
        settle = m["settling_step"]
        print(f"plant: {m['plant']}")
        print(f"final KL {m['final_kl']:.4f} (set point {m['final_setpoint']:.4f}), final β {m['final_beta']:.4f}")
        print(f"overshoot {m['overshoot']:.4f} nats ({100 * m['overshoot_rel']:.2f} %), "
              f"settled (±2 %) at step {settle if settle is not None else 'never'}")
        print(f"trace written to {args.out}" + (f", figure to {args.plot}" if args.plot else ""))
    return 0


def _plant_name(args) -> str:
    """The plant that ran, in words: the paper's MNIST plant when every number is its default."""
    from ..papers import PAPER_PLANTS

    mnist = PAPER_PLANTS["mnist"]
    numbers = f"first order, a = {args.a:g}, g(β) = {args.g0:g}·exp(−{args.k:g}·β)"
    return numbers + (" (the DynamicVAE paper's MNIST plant, the default)"
                      if (args.a, args.g0, args.k) == (mnist.a, mnist.A, mnist.k) else "")
