"""Argument groups shared by several commands (controller, plant, set point, window, g′ interval), the argparse
types that check every numeric flag while parsing (:func:`number`, :func:`integer` and the bounds of each size), and
the output-path check every command runs before its work (:func:`check_output_paths`)."""
from __future__ import annotations

import argparse
import math
import sys

from ..papers import DYNAMICVAE_BETA0, DYNAMICVAE_GAINS, DYNAMICVAE_WINDOW, PAPER_PLANTS
from ..plant import ExpGain, FirstOrderPlant
from ..registry import CONTROLLER_KINDS, MAX_WINDOW, make_controller
from ..setpoints import Constant, LinearRamp, StepRamp

_MNIST = PAPER_PLANTS["mnist"]


def add_controller_args(p: argparse.ArgumentParser) -> None:
    """Add ``--controller --kp --ki --beta0 --beta-min --beta-max --gamma --beta --window``."""
    g = p.add_argument_group("controller")
    g.add_argument("--controller", choices=tuple(CONTROLLER_KINDS), default="incremental",
                   help="β controller: " + "; ".join(f"{k.name}: {k.help}" for k in CONTROLLER_KINDS.values()))
    g.add_argument("--kp", type=FINITE, default=DYNAMICVAE_GAINS[0],
                   help=f"proportional gain (default {DYNAMICVAE_GAINS[0]}, the paper's)")
    g.add_argument("--ki", type=FINITE, default=DYNAMICVAE_GAINS[1],
                   help=f"integral gain (default {DYNAMICVAE_GAINS[1]}, the paper's)")
    g.add_argument("--beta0", type=NONNEG, default=DYNAMICVAE_BETA0,
                   help=f"initial β of the incremental PI (default {DYNAMICVAE_BETA0:g})")
    g.add_argument("--beta-min", type=NONNEG, default=None,
                   help="lower clamp (default 0; 0.1 for incremental-official, 1 for positional-official)")
    g.add_argument("--beta-max", type=NONNEG, default=math.inf, help="upper clamp (default none)")
    g.add_argument("--gamma", type=NONNEG, default=1000.0, help="capacity relay amplitude (default 1000)")
    g.add_argument("--beta", type=NONNEG, default=4.0, help="fixed β (default 4)")
    add_window_arg(g)


def add_window_arg(p, default: int | None = DYNAMICVAE_WINDOW, help: str = "") -> None:
    """Add ``--window T``, the moving-average window of the KL filter (default the papers' 5; None: required)."""
    p.add_argument("--window", type=WINDOW, default=default, required=default is None, metavar="T",
                   help=help or (f"moving-average window T of the KL filter, 1 = none (default {default}, the "
                                 "papers')" if default is not None else "moving-average window T of the KL filter"))


def add_plant_args(p: argparse.ArgumentParser) -> None:
    """Add ``--a --g0 --k`` for ``FirstOrderPlant(a, g0·exp(−kβ))`` (default: the paper's MNIST plant)."""
    g = p.add_argument_group("plant  y(t) = y(t-1)/(1+a) + a/(1+a)·g0·exp(-k·β(t))  (default: the DynamicVAE "
                             "paper's MNIST plant)")
    g.add_argument("--a", type=RATE, default=_MNIST.a, help=f"plant rate a (default {_MNIST.a:g}, the paper's MNIST)")
    g.add_argument("--g0", type=POSITIVE, default=_MNIST.A, help=f"g(0), the KL at β = 0 in nats (default {_MNIST.A:g})")
    add_deprecated_alias(g, "--A", "--g0", type=POSITIVE, dest="g0")
    g.add_argument("--k", type=POSITIVE, default=_MNIST.k, help=f"decay rate of g per unit β (default {_MNIST.k:g})")


class OneSetpoint(argparse.Action):
    """``--setpoint C`` where one constant set point is meant: it parses ``C [C …]`` like ``check``'s operating
    points, so that a second value is refused with what to do instead of argparse's "unrecognized arguments"."""

    one_value = True  # the help formatter shows ``--setpoint C``

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) != 1:
            raise argparse.ArgumentError(self, f"takes one value here (a constant set point), got {len(values)}: "
                                         "several operating points are for `klcontrol check --setpoint C [C …]`; "
                                         "a changing set point is --ramp or --step-ramp")
        setattr(namespace, self.dest, values[0])


def add_setpoint_args(p: argparse.ArgumentParser) -> None:
    """Add the set-point schedule options."""
    g = p.add_argument_group("set point (one of)")
    g.add_argument("--setpoint", type=NONNEG, default=None, metavar="C", action=OneSetpoint,
                   help="constant set point C in nats (default 20)")
    g.add_argument("--ramp", type=NONNEG, nargs=3, metavar=("START", "STOP", "STEPS"),
                   help="linear ramp from START to STOP nats over STEPS updates")
    g.add_argument(
        "--step-ramp", type=NONNEG, nargs=5, metavar=("START", "STOP", "STEP", "PERIOD", "RAMP"),
        help="DynamicVAE hybrid annealing: nats START to STOP by STEP every PERIOD updates, each step ramped "
        "over RAMP updates (paper dSprites: 0.5 20 0.15 6000 1000)",
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
    """Build the first-order plant from ``--a --g0 --k``."""
    return FirstOrderPlant(args.a, ExpGain(args.g0, args.k))


def controller_from_args(args, setpoint, kp=None, ki=None):
    """Build the controller chosen on the command line (gains may be arrays)."""
    return make_controller(args.controller, setpoint, args.kp if kp is None else kp, args.ki if ki is None else ki,
                           window=args.window, beta0=args.beta0, beta_min=args.beta_min, beta_max=args.beta_max,
                           gamma=args.gamma, beta=args.beta)


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


# --- values checked at parse time -------------------------------------------------------------------------------
# A value that parses but is out of range is bad input (exit 1, the flag named by klcontrol.cli.Parser); one that
# does not parse at all stays argparse's usage error (exit 2).

class BadValue(Exception):
    """A command-line value that parses but is out of range; :class:`klcontrol.cli.Parser` names the flag.

    Not a ``ValueError``, so that argparse does not turn it into its generic "invalid value" usage error.
    """


#: Largest magnitude a generic numeric flag takes: far beyond any gain, β or nats a loop uses, and small enough
#: that products and squares in the analysis stay finite.
MAX_MAGNITUDE = 1e12
#: Plant rates a the analysis keeps finite and meaningful (the papers': 1/2500, 1/5000).
A_RANGE = (1e-12, 1e6)


def number(lo: float = -MAX_MAGNITUDE, hi: float = MAX_MAGNITUDE, *, lo_open: bool = False, hint: str = ""):
    """An argparse ``type`` for a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    Parameters
    ----------
    lo, hi : float
        Bounds (default ±:data:`MAX_MAGNITUDE`).
    lo_open : bool
        Exclude ``lo`` itself (e.g. a positive rate).
    hint : str
        Appended to the message of a value out of range.

    Returns
    -------
    callable
        ``str → float``; raises :class:`BadValue` for nan, ±inf or a value out of range.
    """
    def parse(text):
        v = float(text)  # unparseable: argparse's usage error
        if not math.isfinite(v):
            raise BadValue(f"not a finite number{hint}")
        if v < lo or (lo_open and v == lo):
            raise BadValue(f"must be {'>' if lo_open else '≥'} {lo:g}{hint}")
        if v > hi:
            raise BadValue(f"must be ≤ {hi:g}{hint}")
        return v

    parse.__name__ = "number"  # argparse: "invalid number value: 'x'"
    parse.__doc__ = f"A finite number in [{lo:g}, {hi:g}]" + (f", not {lo:g}" if lo_open else "") + "."
    return parse


def integer(lo: int = 0, hi: int | None = None, *, cost=None):
    """An argparse ``type`` for an integer in ``[lo, hi]``; ``cost(v)`` says what a value above ``hi`` would take.

    Parameters
    ----------
    lo, hi : int
        Bounds (``hi`` None: none).
    cost : callable, optional
        ``cost(v) → str``, the estimate printed when ``v > hi`` (e.g. "~32 GB of trace").

    Returns
    -------
    callable
        ``str → int``; raises :class:`BadValue` out of range.
    """
    def parse(text):
        v = int(text)
        if v < lo:
            raise BadValue(f"must be ≥ {lo}")
        if hi is not None and v > hi:
            raise BadValue(f"at most {hi}" + (f" ({cost(v)})" if cost else ""))
        return v

    parse.__name__ = "integer"
    parse.__doc__ = f"An integer ≥ {lo}" + (f" and ≤ {hi}." if hi is not None else ".")
    return parse


def _gb(nbytes: float) -> str:
    return f"~{nbytes / 1e9:.3g} GB"


#: The common numeric types (each names its flag through klcontrol.cli.Parser).
FINITE = number()
POSITIVE = number(0.0, lo_open=True)
NONNEG = number(0.0)
RATE = number(*A_RANGE, hint=" (a is the plant's rate, the papers' 1/2500 and 1/5000 = 0.0004 and 0.0002; outside "
              f"[{A_RANGE[0]:g}, {A_RANGE[1]:g}] the analysis cannot stay finite)")
#: Seeds: numpy's generators take 0 … 2**32 − 1 for every seeded stream.
SEED = integer(0, 2**32 - 1)
#: A moving-average window: the papers use 5; the stability analysis derives loops up to MAX_WINDOW (cost ~T²).
WINDOW = integer(1, MAX_WINDOW, cost=lambda v: "the loop's state and characteristic polynomial grow with the window, "
                 "the analysis's cost like its square; the papers use 5")
#: Updates of a simulation: four float64 columns of the trace per update.
SIM_STEPS = integer(1, 50_000_000, cost=lambda v: f"{_gb(32 * v)} of trace, 32 bytes per update")
#: Updates of a VAE training run (a run of 10⁸ updates is months on a GPU; the paper's is 8·10⁵).
TRAIN_STEPS = integer(1, 100_000_000, cost=lambda v: f"{v / 8e5:.3g}× the paper's 800 000-update run")
#: Batch size of the VAE: a 64×64 image and its activations are ~1 MB of float32 per sample in training.
BATCH_SIZE = integer(1, 65_536, cost=lambda v: f"{_gb(1e6 * v)} of activations, ~1 MB per image")
#: Bootstrap replicates of a fit: each refits every trace (~0.1–1 s).
N_BOOT = integer(0, 10_000, cost=lambda v: f"each replicate refits every trace, ~0.1–1 s each: {v / 3600:.3g}–"
                 f"{v / 360:.3g} h")
#: Seeds of a comparison: each is a training run per method.
SEEDS = integer(1, 1_000, cost=lambda v: f"{v} training runs per method")
#: torch CPU threads of one process (more than the machine's CPUs only contend; 10⁵ cannot even start).
THREADS = integer(1, 1_024, cost=lambda v: f"{v} threads: torch starts a thread per unit")
#: Training processes at once; the experiments cap it further by the usable CPUs and the runs to do.
JOBS = integer(1, 1_024, cost=lambda v: f"one training process per job, {v} processes")


def gprime_value(text):
    """An argparse ``type`` for g′: finite and negative (the KL falls as β rises), hinting ``−G`` for a positive one.

    Parameters
    ----------
    text : str
        The value typed.

    Returns
    -------
    float
    """
    v = FINITE(text)
    if not v < 0:
        raise BadValue("g′ < 0: pass −G (the KL falls as β rises; the DynamicVAE paper's G is −g′), i.e. "
                       + (f"pass --gprime {-v:g}" if v else "a nonzero slope"))
    return v


gprime_value.__name__ = "number"


def fit_spec(text):
    """An argparse ``type`` for ``[NAME=]JSON``: a saved fit, optionally named (the name defaults to the file's stem).

    Parameters
    ----------
    text : str
        ``NAME=path`` or ``path``.

    Returns
    -------
    (str, str)
        The name and the path.
    """
    import os

    name, sep, path = text.partition("=")
    if not sep or not name or os.path.exists(text):
        path = text
        name = os.path.basename(text).split(".")[0] or text
    if not path:
        raise BadValue("a fit file is needed: [NAME=]JSON")
    return name, path


def check_output_paths(args, flags, inputs=(), folders=(), figures=("plot",)) -> None:
    """Before any work: no output replaces an input, another output or a file of a klcontrol run (its trace,
    config, lock, checkpoints: :func:`klcontrol.fileio.check_not_run_file`), none is a folder, and each output's
    folder exists or is made; no output folder is a run's own.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.
    flags : iterable of str
        The attribute names of the output files (``"out"``, ``"plot"``, …), named ``--flag`` in messages.
    inputs : iterable of str
        The input paths no output may equal.
    folders : iterable of str
        The attribute names of output folders a command writes its own files into (``compare --out``): each must
        not be a file, nor a klcontrol run's directory or one of its folders
        (:func:`klcontrol.fileio.check_not_run_folder`).
    figures : iterable of str
        Those of ``flags`` that are figures: their suffix must name a format Matplotlib writes (none: PNG).

    Raises
    ------
    ValueError
        Naming the flag and the path.
    """
    import os

    from ..fileio import check_not_run_file, check_not_run_folder

    def name(flag):
        return "--" + flag.replace("_", "-")

    for flag in folders:
        path = getattr(args, flag, None)
        if not path:
            continue
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ValueError(f"{name(flag)} {path} exists and is not a directory")
        check_not_run_folder(path, name(flag))
    same = {os.path.realpath(p) for p in inputs if p}
    written = {}
    for flag in flags:
        path = getattr(args, flag, None)
        if not path:
            continue
        real = os.path.realpath(path)
        if real in same:
            raise ValueError(f"{name(flag)} {path} is one of the inputs: klcontrol never overwrites what it reads; "
                             "choose another output path")
        if real in written:  # the second write would silently replace the first
            raise ValueError(f"{name(flag)} {path} is also {written[real][0]}'s file; give each output its own path")
        written[real] = name(flag), path
        check_not_run_file(path, name(flag))
        if os.path.isdir(path):
            raise ValueError(f"{name(flag)} {path} is a folder; give a file name")
        if flag in figures:  # else Matplotlib refuses the suffix only after the work, when saving
            fmt = os.path.splitext(path)[1][1:].lower()
            if fmt:
                from matplotlib.backend_bases import FigureCanvasBase

                known = FigureCanvasBase.get_supported_filetypes()
                if fmt not in known:
                    raise ValueError(f"{name(flag)} {path}: Matplotlib writes no .{fmt} figure; use one of "
                                     f"{', '.join(sorted(known))}")
    for flag, path in written.values():  # only once every output passed: a refused command makes no folder
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{flag} {path}: cannot create its folder {folder} ({exc.strerror or exc}); "
                             "checked before any work") from None


def add_deprecated_alias(p, old: str, new: str, **kwargs) -> None:
    """Add ``old`` as a hidden option that stores into ``new``'s destination and prints a one-line deprecation note.

    Parameters
    ----------
    p : argparse.ArgumentParser or argument group
    old, new : str
        The old spelling (``--gprime-max``) and the flag that replaces it (``--gprime``).
    **kwargs
        ``type``, ``nargs``, ``dest`` … of the old option.
    """
    import argparse

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: note: {old} is deprecated; use {new} (CHANGELOG.md)", file=sys.stderr)
            setattr(namespace, self.dest, values)

    p.add_argument(old, action=Deprecated, help=argparse.SUPPRESS, **kwargs)


def add_gprime_arg(p, required: bool = False) -> None:
    """Add ``--gprime LO [HI]`` (one g′, or the interval every g′ of which the verdict must hold for), with the old
    ``--gprime-max HI`` as a hidden deprecated alias; read both back with :func:`gprime_interval`."""
    p.add_argument("--gprime", type=gprime_value, nargs="+", required=required, metavar=("LO", "HI"),
                   help="plant slope g′(β*) < 0 in nats per unit β, or an interval LO HI of slopes (robust verdict); "
                   "the DynamicVAE paper's G is −g′ (dSprites: --gprime -3.2)")
    add_deprecated_alias(p, "--gprime-max", "--gprime LO HI", type=gprime_value, dest="gprime_max")


def gprime_interval(args):
    """``(g′, None)`` or ``(g′min, g′max)`` from ``--gprime LO [HI]`` (or the deprecated ``--gprime-max``).

    Parameters
    ----------
    args : argparse.Namespace
        With ``gprime`` (a list of 1 or 2 values, or None) and optionally ``gprime_max``.

    Returns
    -------
    (float or None, float or None)

    Raises
    ------
    ValueError
        More than two values, or an interval given twice.
    """
    g = list(args.gprime or [])
    extra = getattr(args, "gprime_max", None)
    if len(g) > 2:
        raise ValueError(f"--gprime takes one value or two (LO HI), got {len(g)}")
    if extra is not None:
        if len(g) != 1:
            raise ValueError("give the g′ interval once: --gprime LO HI (--gprime-max is its deprecated spelling)")
        g.append(extra)
    if not g:
        return None, None
    return (g[0], None) if len(g) == 1 else (min(g), max(g))


def check_device(device) -> None:
    """Refuse ``--device cuda`` up front on a machine where torch sees no CUDA device (naming the flag, not a file).

    Parameters
    ----------
    device : str or None
        The ``--device`` value (None: the command's default, chosen by what is available).

    Raises
    ------
    ValueError
        ``cuda`` asked for and not available.
    """
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device on this machine (torch.cuda.is_available() "
                             "is False); use --device cpu")
