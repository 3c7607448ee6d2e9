"""Argument groups shared by several commands (controller, plant, set point)."""
from __future__ import annotations

import argparse
import math
import sys

from ..papers import DYNAMICVAE_BETA0, DYNAMICVAE_GAINS, PAPER_PLANTS
from ..plant import ExpGain, FirstOrderPlant
from ..registry import CONTROLLER_KINDS, make_controller
from ..setpoints import Constant, LinearRamp, StepRamp

_MNIST = PAPER_PLANTS["mnist"]


def add_controller_args(p: argparse.ArgumentParser) -> None:
    """Add ``--controller --kp --ki --beta0 --beta-min --beta-max --gamma --beta --window``."""
    g = p.add_argument_group("controller")
    g.add_argument("--controller", choices=tuple(CONTROLLER_KINDS), default="incremental",
                   help="β controller: " + "; ".join(f"{k.name}: {k.help}" for k in CONTROLLER_KINDS.values()))
    g.add_argument("--kp", type=float, default=DYNAMICVAE_GAINS[0], help=f"proportional gain (default {DYNAMICVAE_GAINS[0]})")
    g.add_argument("--ki", type=float, default=DYNAMICVAE_GAINS[1], help=f"integral gain (default {DYNAMICVAE_GAINS[1]})")
    g.add_argument("--beta0", type=float, default=DYNAMICVAE_BETA0,
                   help=f"initial β of the incremental PI (default {DYNAMICVAE_BETA0:g})")
    g.add_argument("--beta-min", type=float, default=None,
                   help="lower clamp (default 0; 0.1 for incremental-official, 1 for positional-official)")
    g.add_argument("--beta-max", type=float, default=math.inf, help="upper clamp (default none)")
    g.add_argument("--gamma", type=float, default=1000.0, help="capacity relay amplitude (default 1000)")
    g.add_argument("--beta", type=float, default=4.0, help="fixed β (default 4)")
    g.add_argument("--window", type=int, default=1, help="moving-average window T of the KL filter (default 1)")


def add_plant_args(p: argparse.ArgumentParser) -> None:
    """Add ``--a --A --k`` for ``FirstOrderPlant(a, A·exp(−kβ))`` (default: paper's MNIST plant)."""
    g = p.add_argument_group("plant  y(t) = y(t-1)/(1+a) + a/(1+a)·A·exp(-k·β(t))")
    g.add_argument("--a", type=float, default=_MNIST.a, help=f"plant rate a (default {_MNIST.a:g}, the paper's MNIST)")
    g.add_argument("--A", type=float, default=_MNIST.A, help=f"g(0), nats (default {_MNIST.A:g})")
    g.add_argument("--k", type=float, default=_MNIST.k, help=f"decay rate of g (default {_MNIST.k:g})")


def add_setpoint_args(p: argparse.ArgumentParser) -> None:
    """Add the set-point schedule options."""
    g = p.add_argument_group("set point (one of)")
    g.add_argument("--setpoint", type=float, default=None, help="constant set point C (nats)")
    g.add_argument("--ramp", type=float, nargs=3, metavar=("START", "STOP", "STEPS"), help="linear ramp")
    g.add_argument(
        "--step-ramp", type=float, nargs=5, metavar=("START", "STOP", "STEP", "PERIOD", "RAMP"),
        help="DynamicVAE hybrid annealing (paper dSprites: 0.5 20 0.15 6000 1000)",
    )


def setpoint_from_args(args, default=20.0):
    """Build the set point chosen on the command line."""
    given = [x is not None for x in (args.setpoint, args.ramp, args.step_ramp)]
    if sum(given) > 1:
        raise ValueError("give only one of --setpoint, --ramp, --step-ramp")
    if args.ramp is not None:
        s, e, n = args.ramp
        return LinearRamp(s, e, int(n))
    if args.step_ramp is not None:
        s, e, st, per, r = args.step_ramp
        return StepRamp(s, e, st, int(per), int(r))
    return Constant(default if args.setpoint is None else args.setpoint)


def plant_from_args(args) -> FirstOrderPlant:
    """Build the first-order plant from ``--a --A --k``."""
    return FirstOrderPlant(args.a, ExpGain(args.A, args.k))


def controller_from_args(args, setpoint, kp=None, ki=None):
    """Build the controller chosen on the command line (gains may be arrays)."""
    return make_controller(args.controller, setpoint, args.kp if kp is None else kp, args.ki if ki is None else ki,
                           window=args.window, beta0=args.beta0, beta_min=args.beta_min, beta_max=args.beta_max,
                           gamma=args.gamma, beta=args.beta)


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--no-progress`` (progress bars go to stderr, and only when it is a terminal)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn on stderr only when it is a terminal, never with --json)")


def show_progress(args) -> bool:
    """Whether to draw a progress bar: not ``--no-progress``, not ``--json``, and stderr is a terminal."""
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False
