"""Command-line interface: ``klcontrol <command> ...`` (also ``python -m klcontrol``).

The core registers its own commands (:mod:`klcontrol.commands`) and those of
every package that declares an entry point in the group ``klcontrol.commands``
(``klcontrol.analysis`` and ``klcontrol.vae_plant`` do, in ``pyproject.toml``): the entry point
names a module whose ``COMMANDS`` maps command names to modules that define
``register(subparsers)``.  So the core never imports ``klcontrol.analysis`` or
``klcontrol.vae_plant`` by name, and the dependencies run one way (docs/design.md).
Heavy imports (torch, sympy) happen inside the command functions so
``klcontrol --help`` is fast.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import pickle
import re
import sys
import warnings
import zlib

from .fileio import jsonable

__all__ = ["main", "build_parser", "Parser", "HelpFormatter", "command_modules", "print_json", "ORDER", "ENTRY_POINT_GROUP", "FILE_ERRORS",
           "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNSTABLE", "EXIT_UNIDENTIFIED", "EXIT_CODES",
           "exit_codes_epilog", "BadArgument"]

#: The order ``--help`` lists commands in (others follow, alphabetically).
ORDER = ("demo", "simulate", "stability", "fit", "check", "tune", "identify", "verify-stability", "train", "evaluate",
         "compare", "judge", "data")
#: Entry-point group through which packages add commands.
ENTRY_POINT_GROUP = "klcontrol.commands"


def command_modules() -> dict:
    """Command name → module path: the core's own and every installed plugin's, in help order."""
    from importlib.metadata import entry_points

    from .commands import COMMANDS as own

    found = dict(own)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            mod = importlib.import_module(ep.value)
        except Exception as exc:  # noqa: BLE001 (any failure is reported, the other commands still work)
            _unavailable(ep.value, exc)
            continue
        found.update(getattr(mod, "COMMANDS", {}))
    rank = {n: i for i, n in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))

def _unavailable(module: str, exc: BaseException) -> None:
    """One line on stderr for a command package or command that failed to import: never dropped silently."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    print(f"klcontrol: warning: commands of {module} unavailable: {type(exc).__name__}: {reason}", file=sys.stderr)


#: Exit statuses (documented in ``--help`` and README "Command line").
EXIT_OK = 0  # success; for check/stability: stable
EXIT_ERROR = 1  # bad input or a failed run (the message says which)
EXIT_USAGE = 2  # command-line usage error (argparse)
EXIT_UNSTABLE = 3  # check/stability: not (robustly) stable
EXIT_UNIDENTIFIED = 4  # fit: the data do not identify the plant; check/tune: refused such a fit
EXIT_CODES = {EXIT_OK: "success (check, stability: stable)", EXIT_ERROR: "error (bad input, failed run)",
              EXIT_USAGE: "usage error", EXIT_UNSTABLE: "check, stability: not (robustly) stable",
              EXIT_UNIDENTIFIED: "fit: plant not identifiable from the data; check, tune: refused such a fit"}


def exit_codes_epilog(*codes) -> str:
    """``--help`` epilog listing the exit statuses ``codes`` (all when none given)."""
    codes = codes or tuple(EXIT_CODES)
    return "exit status: " + "; ".join(f"{c} {EXIT_CODES[c]}" for c in codes)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("klcontrol")
    except (ImportError, PackageNotFoundError):  # run from a checkout that is not installed
        from . import __version__

        return __version__




def print_json(obj) -> None:
    """Print ``obj`` as JSON (NumPy types converted, non-finite floats as null)."""
    print(json.dumps(jsonable(obj), indent=2))


class HelpFormatter(argparse.HelpFormatter):
    """One help style for every command: paragraphs wrapped, indented lines (examples) kept, each default shown
    once (never "(default: None)", never after a help text that already states it)."""

    def _format_args(self, action, default_metavar):
        if getattr(action, "one_value", False):  # parsed as C [C …] only to refuse a second value clearly
            return self._metavar_formatter(action, default_metavar)(1)[0]
        return super()._format_args(action, default_metavar)

    def _fill_text(self, text, width, indent):
        import textwrap

        out, para = [], []

        def flush():
            if para:
                out.append(textwrap.fill(" ".join(para), width, initial_indent=indent, subsequent_indent=indent))
                para.clear()

        for line in text.splitlines():
            if line.startswith("  ") or not line.strip():
                flush()
                out.append(indent + line if line.strip() else "")
            else:
                para.append(line.strip())
        flush()
        return "\n".join(out)

    def _get_help_string(self, action):
        h = action.help or ""
        if ("default" in h.lower() or action.required or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS) or isinstance(action.default, list) and not action.default):
            return h
        return f"{h} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with klcontrol's help style, and negative numbers in e-notation read as values (``--gprime -3e-1``)."""

    def __init__(self, *args, formatter_class=None, **kwargs):
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.I)

    def _get_value(self, action, arg_string):
        from .commands.common import BadValue

        try:
            return super()._get_value(action, arg_string)
        except BadValue as exc:  # parsed, but out of range: bad input (exit 1), the flag and the value named
            flag = max(action.option_strings, key=len) if action.option_strings else (action.metavar or action.dest)
            raise BadArgument(self.prog, f"{flag} {arg_string}: {exc}") from None


class BadArgument(ValueError):
    """A command-line value out of range, found while parsing: ``main`` prints it in one line and returns 1."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command registered."""
    parser = Parser(
        prog="klcontrol",
        description="Control of the KL divergence of β-VAEs: simulate, analyse, fit, tune and train.",
        epilog=exit_codes_epilog(),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules().values():
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 (reported; the other commands still work)
            _unavailable(module, exc)
            continue
        mod.register(sub)
    for name, p in sub.choices.items():  # every command's --help states what its exit status means
        if "exit status" not in (p.epilog or ""):
            p.epilog = exit_codes_epilog(EXIT_OK, EXIT_ERROR, EXIT_USAGE) + (f"\n\n{p.epilog}" if p.epilog else "")
    return parser


#: Errors of reading or writing a damaged, foreign or unreachable file: reported in one line, never a traceback.
FILE_ERRORS = (OSError, EOFError, UnicodeError, zlib.error, csv.Error, pickle.UnpicklingError, RecursionError,
               MemoryError)


def _describe(exc) -> str:
    """One line for an error; for OS errors the file (``filename``) and the reason (``strerror``)."""
    if isinstance(exc, OSError) and (exc.strerror or exc.filename):
        reason = " ".join((exc.strerror or str(exc)).split())
        names = [str(f) for f in (exc.filename, exc.filename2) if f is not None and str(f) not in reason]
        return f"{': '.join(names)}: {reason}" if names else reason
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read"
    if isinstance(exc, MemoryError):
        return "out of memory reading the input"
    text = " ".join(str(exc).split()) or type(exc).__name__  # one line, even for multi-line library messages
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


#: ASCII names for the symbols klcontrol prints, for a terminal whose encoding lacks them (e.g. Latin-1).
ASCII_NAMES = {"β": "beta", "′": "'", "·": "*", "≤": "<=", "≥": ">=", "…": "...", "−": "-", "×": "x", "∈": "in",
               "±": "+-", "τ": "tau", "δ": "delta", "σ": "sigma", "→": "->", "←": "<-", "°": " deg", "²": "^2",
               "√": "sqrt", "≈": "~", "ω": "omega", "θ": "theta", "λ": "lambda", "κ": "kappa", "η": "eta", "γ": "gamma",
               "⁻¹": "^-1", "₁": "1", "●": "o", "✕": "x", "—": "--", "–": "-", "’": "'", "“": '"', "”": '"'}


class _AsciiFallback:
    """A text stream that writes klcontrol's symbols by ASCII names where the encoding cannot hold them."""

    def __init__(self, stream):
        self._s = stream
        self._table = str.maketrans({k: v for k, v in ASCII_NAMES.items() if len(k) == 1})

    def write(self, text):
        enc = getattr(self._s, "encoding", None) or "ascii"
        try:
            text.encode(enc)
        except UnicodeEncodeError:
            for k, v in ASCII_NAMES.items():
                if len(k) > 1:
                    text = text.replace(k, v)
            text = text.translate(self._table).encode(enc, "replace").decode(enc)
        return self._s.write(text)

    def __getattr__(self, name):
        return getattr(self._s, name)


def _fallback_streams():
    for name in ("stdout", "stderr"):
        s = getattr(sys, name)
        enc = getattr(s, "encoding", None)
        try:
            "β′·≤".encode(enc or "ascii")
        except (UnicodeEncodeError, LookupError):
            setattr(sys, name, _AsciiFallback(s))


def main(argv=None) -> int:
    """Run the CLI; returns the exit status.

    Errors are one line on stderr, never a traceback: ``ValueError`` (bad
    input, named by the readers), ``ImportError`` (an optional extra missing) and file errors (:data:`FILE_ERRORS`: the
    file is named when the OS gives it) exit 1, Ctrl-C exits 130.  Warnings
    are printed as ``klcontrol CMD: warning: …``.
    """
    _fallback_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BadArgument as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    prefix = f"klcontrol {args.command}"

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            rc = args.func(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, ImportError) + FILE_ERRORS as exc:  # ImportError: an optional extra not installed
        print(f"{prefix}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return int(rc or 0)
