"""Every public module, class, function and method of the three packages has a docstring.

Public: a module whose dotted name has no part starting with ``_``; in it, the
names listed in ``__all__`` when the module has one, else every name without a
leading underscore, restricted to classes and functions *defined* in that
module (re-exports are checked where they are defined); in a public class,
every method, property, classmethod and staticmethod without a leading
underscore.  A method that overrides a documented base-class method inherits
its docstring (as ``inspect.getdoc`` and Sphinx do); a class never does, and a
dataclass's generated ``Name(field, ...)`` signature does not count.
"""
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import types

import pytest

#: The three packages by their installed names: importing ``analysis``/``vae_plant`` by folder name would load a
#: second copy of every module, whose classes would re-register in the core's plant and gain registries.
PACKAGES = ("klcontrol", "klcontrol.analysis", "klcontrol.vae_plant")

#: Modules that need an optional extra; left out only when that extra is not installed.
OPTIONAL = {"klcontrol.integrations.lightning": ("lightning", "pytorch_lightning"), "klcontrol.integrations.pythae": ("pythae",)}

#: Known gaps in files being edited elsewhere, each to be documented and removed from this set (the test fails on
#: entries that are no longer gaps, so the set cannot go stale).
PENDING = frozenset()


def public_modules():
    """Dotted names of the public modules of :data:`PACKAGES`, packages included.

    Returns
    -------
    list of str
    """
    names = []
    for pkg in PACKAGES:
        names.append(pkg)
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return names


def _is_function(obj):
    # functools.lru_cache and other wrappers keep the wrapped function's name, module and docstring
    return inspect.isfunction(obj) or isinstance(obj, functools._lru_cache_wrapper)


def _own_doc(obj):
    doc = (obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature a dataclass writes when the class has no docstring
    return doc.strip()


def missing_docstrings(module):
    """Qualified names of the public objects of ``module`` without a docstring.

    Parameters
    ----------
    module : module

    Returns
    -------
    list of str
    """
    name = module.__name__
    missing = [] if (module.__doc__ or "").strip() else [name]
    exported = getattr(module, "__all__", None)
    if exported is None:
        exported = [n for n in vars(module) if not n.startswith("_")]
    for n in exported:
        try:
            obj = getattr(module, n, None)
        except ImportError as exc:  # a lazy export of an optional extra that is not installed (see OPTIONAL)
            extras = [e for es in OPTIONAL.values() for e in es]
            if not any(e in str(exc) and importlib.util.find_spec(e) is None for e in extras):
                raise
            continue
        if not (inspect.isclass(obj) or _is_function(obj)) or getattr(obj, "__module__", None) != name:
            continue
        if not _own_doc(obj):
            missing.append(f"{name}.{n}")
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if _is_function(fn) and not (inspect.getdoc(getattr(obj, attr)) or "").strip():
                missing.append(f"{name}.{n}.{attr}")
    return missing


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        extras = OPTIONAL.get(name)
        if extras and not any(importlib.util.find_spec(e) for e in extras):
            return None
        raise


def test_every_public_object_has_a_docstring():
    missing = set()
    checked = 0
    for name in public_modules():
        module = _import(name)
        if module is not None:
            checked += 1
            missing.update(missing_docstrings(module))
    assert checked >= 40, f"only {checked} modules found: is the package layout as expected?"
    assert sorted(missing - PENDING) == [], "add a concise numpydoc docstring to each of these"
    assert sorted(PENDING - missing) == [], "documented now: remove these from PENDING"


def test_every_name_in_all_exists():
    # a lazy facade (klcontrol.lazy) answers getattr(..., None) with None for a stale name, which the docstring
    # check above would then skip: each listed name must resolve
    stale = []
    for name in public_modules():
        module = _import(name)
        for n in getattr(module, "__all__", ()) if module is not None else ():
            try:
                getattr(module, n)
            except ImportError as exc:  # an optional extra that is not installed (OPTIONAL)
                extras = [e for es in OPTIONAL.values() for e in es]
                if not any(e in str(exc) and importlib.util.find_spec(e) is None for e in extras):
                    raise
            except AttributeError:
                stale.append(f"{name}.{n}")
    assert stale == [], "listed in __all__ but not defined"


def test_the_private_generated_module_is_not_scanned():
    assert "klcontrol.analysis.stability._generated" not in public_modules()
    assert "klcontrol.integrations.lightning" in public_modules()


def test_the_checker_finds_each_kind_of_gap(monkeypatch):
    mod = types.ModuleType("fake_mod")
    monkeypatch.setitem(sys.modules, "fake_mod", mod)  # where inspect.getdoc looks up an override's base class
    src = '''
import functools
from dataclasses import dataclass

class Base:
    """Documented."""
    def method(self):
        """Documented in the base."""

class Gaps(Base):
    def method(self):  # an override: inherits the base docstring
        pass
    def bare(self):
        pass
    @property
    def prop(self):
        return 1
    @classmethod
    def make(cls):
        pass
    def _private(self):
        pass

@dataclass
class Data:
    x: int = 0

def undocumented():
    pass

@functools.lru_cache
def cached():
    pass

def documented():
    """Yes."""

def _hidden():
    pass

LIMIT = 3
'''
    exec(compile(src, "fake_mod", "exec"), mod.__dict__)
    found = missing_docstrings(mod)
    assert sorted(found) == sorted([
        "fake_mod", "fake_mod.Gaps", "fake_mod.Gaps.bare", "fake_mod.Gaps.prop", "fake_mod.Gaps.make",
        "fake_mod.Data", "fake_mod.undocumented", "fake_mod.cached",
    ])
    # With __all__, only the names listed are public; imported names are checked where they are defined.
    mod.__all__ = ["documented", "Data", "pytest"]
    mod.pytest = pytest
    mod.__doc__ = "A module."
    assert missing_docstrings(mod) == ["fake_mod.Data"]
