"""Start-up stays light (benchmarks/startup.py measures it): heavy libraries load only when a command needs them."""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "sympy", "numba", "matplotlib", "control")


def _imported(body):
    code = f"import sys, json\n{body}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_klcontrol_loads_no_heavy_library():
    assert _imported("import klcontrol") == []


@pytest.mark.parametrize("command", [None, "simulate", "stability", "check", "tune", "fit", "train"])
def test_cli_help_loads_no_heavy_library(command):
    argv = ["--help"] if command is None else [command, "--help"]
    body = f"from klcontrol.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _imported(body) == []
