"""The import graph runs one way (docs/design.md, "Dependency direction"): core ← analysis ← vae_plant.

Every import counts, inside functions too: ``import``/``from`` statements (absolute and relative) and
``importlib.import_module("...")`` with a constant name. Checked on every module of the three folders:
no upward import (only the core's facade ``klcontrol/__init__.py`` may name the upper layers, lazily), no import
cycle among the project's modules, no private name imported from another package.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder → the package name it is installed as (pyproject.toml, [tool.setuptools] package-dir).
FOLDERS = {"klcontrol": "klcontrol", "analysis": "klcontrol.analysis", "vae_plant": "klcontrol.vae_plant"}
FACADE = "klcontrol"


def _modules(root: Path = ROOT) -> dict:
    """Module name → (path, is_package) for every .py file of the three folders."""
    out = {}
    for folder, pkg in FOLDERS.items():
        for p in sorted((root / folder).rglob("*.py")):
            rel = p.relative_to(root / folder).with_suffix("").parts
            is_pkg = rel[-1] == "__init__"
            parts = rel[:-1] if is_pkg else rel
            out[".".join((pkg,) + tuple(parts))] = (p, is_pkg)
    return out


def layer(module: str) -> str:
    """``core``, ``analysis`` or ``vae_plant``."""
    for name in ("analysis", "vae_plant"):
        if module == f"klcontrol.{name}" or module.startswith(f"klcontrol.{name}."):
            return name
    return "core"


RANK = {"core": 0, "analysis": 1, "vae_plant": 2}


def imports(path: Path, module: str, is_pkg: bool):
    """``(line, imported module, imported names, in_function)`` for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def in_function(node):
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return True
        return False

    base = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, (), in_function(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target, tuple(a.name for a in node.names), in_function(node)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value, (), in_function(node)


def graph(root: Path = ROOT):
    """Edges ``(source module, target module, line, names, in_function)`` between the project's modules."""
    mods = _modules(root)
    edges = []
    for mod, (path, is_pkg) in mods.items():
        for line, target, names, in_fn in imports(path, mod, is_pkg):
            if not target or target.split(".")[0] not in ("klcontrol", "analysis", "vae_plant"):
                continue
            # `from pkg import sub` where pkg.sub is a module: the edge goes to the submodule.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            rest = tuple(n for n in names if f"{target}.{n}" not in mods)
            for s in subs:
                edges.append((mod, s, line, (), in_fn))
            if rest or not subs:
                edges.append((mod, target, line, rest, in_fn))
    return mods, edges


def upward(edges):
    """Imports from a lower layer to a higher one (the facade's lazy names excepted)."""
    bad = []
    for src, dst, line, _, in_fn in edges:
        if RANK[layer(dst)] > RANK[layer(src)] and not (src == FACADE and in_fn):
            bad.append(f"{src}:{line} imports {dst}")
        if dst.split(".")[0] in ("analysis", "vae_plant"):
            bad.append(f"{src}:{line} imports the uninstalled name {dst} (use klcontrol.{dst})")
    return bad


def cycles(mods, edges):
    """Strongly connected components with more than one module (Tarjan), the facade's lazy edges excepted."""
    adj = {m: set() for m in mods}
    for src, dst, _, _, in_fn in edges:
        if dst in mods and dst != src and not (src == FACADE and in_fn):
            adj[src].add(dst)
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in adj:
        if m not in index:
            visit(m)
    return out


def _package(module, mods):
    return module if mods.get(module, (None, False))[1] else module.rsplit(".", 1)[0]


def private_imports(mods, edges):
    """Private names (``_x``) or private modules imported from another package."""
    bad = []
    for src, dst, line, names, _ in edges:
        if dst not in mods:
            continue
        same = _package(src, mods) == _package(dst, mods)
        if not same and any(part.startswith("_") and part != "__init__" for part in dst.split(".")):
            bad.append(f"{src}:{line} imports the private module {dst}")
        if not same:
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{src}:{line} imports the private name {dst}.{n}")
    return bad


def test_no_upward_import():
    _, edges = graph()
    bad = upward(edges)
    assert not bad, "imports against the layers (core ← analysis ← vae_plant):\n" + "\n".join(bad)


def test_no_import_cycle():
    mods, edges = graph()
    found = cycles(mods, edges)
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_no_private_name_across_packages():
    mods, edges = graph()
    bad = private_imports(mods, edges)
    assert not bad, "\n".join(bad)


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for folder in FOLDERS:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    return graph(tmp_path)


def test_the_checker_sees_each_kind_of_violation(tmp_path):
    mods, edges = _tree(tmp_path, {
        "klcontrol/a.py": "def f():\n    from klcontrol.analysis.x import y\n",
        "klcontrol/__init__.py": "def __getattr__(n):\n    from klcontrol.vae_plant import z\n",
        "analysis/x.py": "import importlib\ndef g():\n    importlib.import_module('klcontrol.vae_plant.t')\n"
                         "from klcontrol.b import _hidden\n",
        "vae_plant/t.py": "from ..analysis import x\n",
        "klcontrol/b.py": "def h():\n    from . import c\n",
        "klcontrol/c.py": "from klcontrol import b\nfrom klcontrol._p import q\n",
        "klcontrol/_p.py": "q = 1\n",
        "klcontrol/sub/__init__.py": "",
        "klcontrol/sub/m.py": "from klcontrol._p import q\n",
    })
    up = upward(edges)
    assert any("klcontrol.a:2 imports klcontrol.analysis.x" in b for b in up)  # inside a function
    assert any("klcontrol.analysis.x:3 imports klcontrol.vae_plant.t" in b for b in up)  # import_module
    assert not any(b.startswith("klcontrol:") for b in up)  # the facade, lazily
    assert not any(b.startswith("klcontrol.vae_plant.t") for b in up)  # downward, relative
    assert ["klcontrol.b", "klcontrol.c"] in cycles(mods, edges)  # a cycle closed inside a function
    priv = private_imports(mods, edges)
    assert any("private name klcontrol.b._hidden" in b for b in priv)
    assert any("klcontrol.sub.m:1 imports the private module klcontrol._p" in b for b in priv)
    assert not any(b.startswith("klcontrol.c:") for b in priv)  # same package


def test_importing_the_core_stays_light():
    code = ("import sys, klcontrol, klcontrol.registry, klcontrol.loop; "
            "print(sorted(m for m in ('torch', 'sympy', 'klcontrol.analysis', 'klcontrol.vae_plant') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("name", ["is_stable", "spectral_radius", "robust_stability", "conditions", "read_trace",
                                  "fit_plant", "load_fit", "tune", "integrations"])
def test_the_facade_reaches_the_three_jobs(name):
    import klcontrol

    assert name in klcontrol.__all__ and getattr(klcontrol, name) is not None


def test_help_lists_every_command_through_the_entry_points():
    from klcontrol.cli import ORDER, build_parser

    text = build_parser().format_help()
    for name in ORDER:
        assert name in text
