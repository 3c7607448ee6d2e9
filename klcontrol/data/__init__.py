"""Reference data shipped inside the package: recorded traces and the fits docs, demo and defaults use.

The files live in this folder of the installed package (read through :mod:`importlib.resources`), so they are
the same from a clone, an editable install and a wheel. Names are paths relative to this folder, with ``/``:

- ``cpu/``: open-loop runs of the dSprites β-VAE at fixed β and one DynamicVAE run, and ``cpu/fit.json``,
  the first-order fit of the initial transients;
- ``identify/``: the operating-point identification experiment at β* = 4 and its Hammerstein fit
  ``identify/fit.json``;
- ``stability_real/``: closed-loop runs of ``klcontrol verify-stability`` on the real VAE.

``README.md`` in this folder gives each file's provenance. From the shell: ``klcontrol data`` lists the names,
``klcontrol data path NAME`` prints a file's path (for a command line: ``klcontrol check --fit "$(klcontrol data
path identify/fit.json)" …``).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["path", "names", "exists"]

_SUFFIXES = (".json", ".csv.gz", ".md")


def _root() -> Path:
    # A wheel or an editable install: both expose this package as a real folder (klcontrol is never zipped).
    return Path(str(resources.files(__name__)))


def _check(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a shipped data name is a non-empty path such as 'identify/fit.json'")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts) or name.startswith("/"):
        raise ValueError(f"shipped data name {name!r}: use a relative path inside klcontrol's data, e.g. "
                         "'identify/fit.json' (see `klcontrol data`)")
    return "/".join(parts)


def exists(name: str) -> bool:
    """Whether ``name`` (a file or folder, e.g. ``"cpu"``) is shipped."""
    return (_root() / _check(name)).exists()


def path(name: str = "") -> Path:
    """The path of a shipped file or folder, e.g. ``path("identify/fit.json")``; ``path()`` is the data folder.

    Raises
    ------
    FileNotFoundError
        When nothing of that name is shipped (the message lists the top-level names).
    """
    if name == "":
        return _root()
    p = _root() / _check(name)
    if not p.exists():
        top = sorted(q.name for q in _root().iterdir() if q.name != "__init__.py" and not q.name.startswith("__"))
        raise FileNotFoundError(f"klcontrol ships no data named {name!r}; top-level names: {', '.join(top)} "
                                "(`klcontrol data` lists every file)")
    return p


def names(prefix: str = "") -> list[str]:
    """Every shipped file's name (``cpu/fit.json``, …), sorted; under ``prefix`` when given."""
    root = _root()
    base = path(prefix) if prefix else root
    out = []
    for p in sorted(base.rglob("*")):
        if p.is_file() and p.name.endswith(_SUFFIXES):
            out.append(p.relative_to(root).as_posix())
    return out
