"""Lazy package facades: a package names its public surface, and a name's module is imported on first use.

A facade keeps ``import klcontrol`` (and every subpackage) fast and free of import cycles: the package's
``__init__`` imports nothing heavy, yet ``from klcontrol.analysis.stability import is_stable`` works.
"""
from __future__ import annotations

import importlib

__all__ = ["facade"]


def facade(package: str, exports: dict):
    """``(__getattr__, __dir__, __all__)`` for a package whose public names live in its modules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict
        Public name → module (absolute, or relative to ``package`` when it starts with ``.``); a module
        itself is exported by mapping its name to ``None`` (the submodule of that name).

    Returns
    -------
    tuple
        Assign as ``__getattr__, __dir__, __all__ = facade(__name__, {...})``.
    """
    table = dict(exports)

    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        where = table[name]
        if where is None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            mod = importlib.import_module(where if not where.startswith(".") else package + where)
            value = getattr(mod, name)
        import sys

        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__():
        import sys

        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__, sorted(table)
