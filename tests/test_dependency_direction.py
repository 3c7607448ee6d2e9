"""The import graph runs one way: the core klcontrol never imports analysis or vae_plant (docs/design.md)."""
import ast
import subprocess
import sys
from pathlib import Path

import klcontrol

CORE = Path(klcontrol.__file__).parent
UPPER = {"analysis", "vae_plant"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value


def test_core_never_imports_analysis_or_vae_plant():
    bad = [f"{p.relative_to(CORE.parent)}:{line}: {mod}" for p in sorted(CORE.rglob("*.py"))
           for line, mod in _imports(p) if mod.split(".")[0] in UPPER]
    assert not bad, "the core imports packages above it:\n" + "\n".join(bad)


def test_the_checker_sees_a_back_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom klcontrol.analysis.stability import is_stable\nimportlib.import_module('klcontrol.vae_plant.training.trainer')\n")
    assert [m for _, m in _imports(f) if m.split(".")[0] in UPPER] == ["klcontrol.analysis.stability", "klcontrol.vae_plant.training.trainer"]


def test_importing_the_core_stays_light():
    code = ("import sys, klcontrol, klcontrol.registry, klcontrol.loop; "
            "print(sorted(m for m in ('torch', 'sympy', 'analysis', 'vae_plant') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_every_command_through_the_entry_points():
    from klcontrol.cli import ORDER, build_parser

    text = build_parser().format_help()
    for name in ("demo", "simulate", "stability", "fit", "check", "tune", "train", "evaluate", "compare"):
        assert name in text and name in ORDER
