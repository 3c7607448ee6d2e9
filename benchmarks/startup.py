"""Start-up cost of ``import klcontrol`` and of each CLI command's ``--help``, and the heavy modules each loads.

Every figure is a fresh interpreter (``python -c``/``python -m klcontrol.cli``) as a user starts it: wall-clock and
CPU time (user + system of the child), the minimum over ``--repeat`` runs, and which of torch, scipy, sympy, numba,
matplotlib and python-control ended up imported (none should be: they load when a command needs them). The goal is
≤ 0.5 s per start on a quiet machine; under load the wall time grows with the wait for a core, the CPU time much less.

Run:  python benchmarks/startup.py [--repeat 5] [--commands simulate,stability,...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HEAVY = ("torch", "scipy", "sympy", "numba", "matplotlib", "control")

_PROBE = (
    "import sys, json\n"
    "{body}\n"
    "print('\\n' + json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
)


def run(body: str):
    """(wall s, CPU s, heavy modules imported) of one fresh interpreter running ``body``."""
    code = _PROBE.format(body=body, heavy=HEAVY)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(f"probe failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return wall, cpu, json.loads(out.stdout.strip().splitlines()[-1])


def commands():
    """The CLI's command names, as ``klcontrol --help`` lists them."""
    from klcontrol.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh interpreters per figure (minimum kept)")
    ap.add_argument("--commands", default=None, help="comma-separated commands (default: all)")
    args = ap.parse_args(argv)
    probes = [("python", "pass"), ("import klcontrol", "import klcontrol"), ("klcontrol --help", _cli(None))]
    names = args.commands.split(",") if args.commands else commands()
    probes += [(f"klcontrol {c} --help", _cli(c)) for c in names]
    base = None
    print(f"{'what':<36} {'wall s':>7} {'CPU s':>7}  heavy modules imported")
    worst = 0.0
    for label, body in probes:
        runs = [run(body) for _ in range(args.repeat)]
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        heavy = sorted(set().union(*(r[2] for r in runs)))
        if base is None:
            base = (wall, cpu)
        elif label != "python":
            worst = max(worst, wall)
        print(f"{label:<36} {wall:7.3f} {cpu:7.3f}  {', '.join(heavy) or '-'}")
    print(f"(the interpreter alone: {base[0]:.3f} s wall, {base[1]:.3f} s CPU; slowest start {worst:.3f} s wall; "
          f"goal ≤ 0.5 s on a quiet machine)")


def _cli(command):
    argv = ["--help"] if command is None else [command, "--help"]
    return ("from klcontrol.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass")


if __name__ == "__main__":
    main()
