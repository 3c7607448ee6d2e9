"""Argument groups shared by several commands (controller, plant, set point)."""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from ..controllers import CapacityRamp, FixedBeta, IncrementalPI, PositionalPI
from ..plant import ExpGain, FirstOrderPlant
from ..setpoints import Constant, LinearRamp, StepRamp

CONTROLLERS = ("incremental", "incremental-official", "positional", "capacity", "fixed")


def add_controller_args(p: argparse.ArgumentParser) -> None:
    """Add ``--controller --kp --ki --beta0 --beta-min --beta-max --gamma --beta --window``."""
    g = p.add_argument_group("controller")
    g.add_argument("--controller", choices=CONTROLLERS, default="incremental", help="β controller (default: incremental)")
    g.add_argument("--kp", type=float, default=0.01, help="proportional gain (default 0.01)")
    g.add_argument("--ki", type=float, default=0.005, help="integral gain (default 0.005)")
    g.add_argument("--beta0", type=float, default=150.0, help="initial β of the incremental PI (default 150)")
    g.add_argument("--beta-min", type=float, default=None, help="lower clamp (default 0; 0.1 for incremental-official)")
    g.add_argument("--beta-max", type=float, default=math.inf, help="upper clamp (default none)")
    g.add_argument("--gamma", type=float, default=1000.0, help="capacity relay amplitude (default 1000)")
    g.add_argument("--beta", type=float, default=4.0, help="fixed β (default 4)")
    g.add_argument("--window", type=int, default=1, help="moving-average window T of the KL filter (default 1)")


def add_plant_args(p: argparse.ArgumentParser) -> None:
    """Add ``--a --A --k`` for ``FirstOrderPlant(a, A·exp(−kβ))`` (default: paper's MNIST plant)."""
    g = p.add_argument_group("plant  y(t) = y(t-1)/(1+a) + a/(1+a)·A·exp(-k·β(t))")
    g.add_argument("--a", type=float, default=1 / 5000, help="plant rate a (default 1/5000)")
    g.add_argument("--A", type=float, default=26.38, help="g(0), nats (default 26.38)")
    g.add_argument("--k", type=float, default=0.0476, help="decay rate of g (default 0.0476)")


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
    kp = args.kp if kp is None else kp
    ki = args.ki if ki is None else ki
    name = args.controller
    bmin = args.beta_min
    if name == "fixed":
        return FixedBeta(args.beta, setpoint=setpoint)
    if name == "capacity":
        return CapacityRamp(args.gamma, setpoint, filter=args.window)
    if name == "positional":
        return PositionalPI(kp, ki, setpoint, beta_min=0.0 if bmin is None else bmin, beta_max=args.beta_max,
                            filter=args.window)
    if name == "incremental-official":
        return IncrementalPI(kp, ki, setpoint, beta0=args.beta0, beta_min=0.1 if bmin is None else bmin,
                             beta_max=args.beta_max, anti_windup="official", filter=args.window)
    return IncrementalPI(kp, ki, setpoint, beta0=args.beta0, beta_min=0.0 if bmin is None else bmin,
                         beta_max=args.beta_max, filter=args.window)


def as_array(v):
    """Float array from a float or list."""
    return np.asarray(v, dtype=float)


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
