"""Command-line interface: ``klcontrol <command> ...`` (also ``python -m klcontrol``).

Each command lives in its own module under :mod:`klcontrol.commands`, which
defines ``register(subparsers)``; heavy imports (torch, sympy, analysis,
vae_plant) happen inside the command functions so ``klcontrol --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

import numpy as np

__all__ = ["main", "COMMANDS", "print_json"]

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "simulate", "stability", "fit", "check", "tune", "train", "evaluate", "compare", "identify", "verify_stability")


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if np.isfinite(f) else None
    return o


def print_json(obj) -> None:
    """Print ``obj`` as JSON (NumPy types converted, non-finite floats as null)."""
    print(json.dumps(_jsonable(obj), indent=2))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="klcontrol",
        description="Control of the KL divergence of β-VAEs: simulate, analyse, fit, tune and train.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"klcontrol.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"klcontrol.commands.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"klcontrol {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(rc or 0)
