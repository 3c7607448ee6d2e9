"""Read training logs (CSV, JSONL, TensorBoard) into :class:`klcontrol.Trace` objects.

Log conventions (one place: :data:`CONVENTIONS`, the CLI flags of
:func:`add_reader_arguments`).  Row ``s`` of a log is read as:

- **β, held**: the β logged at step ``s`` is the weight of update
  ``s + beta_lead`` and of every later update until the next logged row
  (zero-order hold, ``beta_hold="next"``, default).  ``beta_hold="previous"``
  (``--beta-hold previous``): the logged β had been in use since the update
  after the previous row (a value logged at the end of the interval it held).
  ``beta_lead = 0`` (``--beta-logged before``, default): β was logged before
  or during update ``s`` (a scheduler's value, the klcontrol trainer,
  :class:`~klcontrol.integrations.lightning.KLControlCallback`);
  ``beta_lead = 1`` (``--beta-logged after``): β was logged after update ``s``
  by a controller that has already stepped (the weight of the *next* update).
- **KL**: the KL of row ``s`` is ``y(s − kl_lag)``.  ``kl_lag = 0``
  (default): measured after update ``s`` (the klcontrol trainer,
  :func:`klcontrol.simulate`); ``kl_lag = 1`` (``--kl-lag 1``): the KL of the
  forward pass of step ``s``, i.e. before update ``s`` (``self.log("kl", kl)``
  in a Lightning ``training_step``).

Rows are kept as logged; the conventions are stored in ``trace.meta``
(``kl_lag``, ``beta_lead``, ``beta_hold``) and applied by the fit, which simulates every
update between logged rows (sparse logs: Lightning's ``log_every_n_steps``).
Rows of one step written by separate log calls (W&B-style history, Lightning's
CSVLogger) are merged; a KL row without a β value holds the last β.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import zlib
from array import array
from pathlib import Path

import numpy as np

from klcontrol import Trace

__all__ = ["read_trace", "read_traces", "align_kl", "aligned", "log_convention", "add_reader_arguments", "reader_kwargs",
           "TRACE_FILES", "CONVENTIONS", "MAX_ROWS", "row_cap"]

#: File names looked for, in order, when :func:`read_trace` is given a trainer run directory.
TRACE_FILES = ("trace.csv", "trace.jsonl")

#: The log conventions :func:`read_trace` understands: name → (allowed values, meaning).
CONVENTIONS = {
    "beta_hold": (("next", "previous"), "next: a logged β is the weight of every update until the next logged row "
                  "(zero-order hold); previous: it was the weight of every update since the previous row"),
    "kl_lag": ((0, 1), "0: row s holds the KL after update s; 1: the KL of the forward pass of step s (before update s)"),
    "beta_lead": ((0, 1), "0: row s holds the β used in update s; 1: the β set after update s (used from s+1 on)"),
}

_SHOWN = 8  # rows or steps quoted in an error message before "…"
#: Rows (lines of a CSV/JSONL file, scalar events of a TensorBoard run) read at most, unless ``max_rows=`` or the
#: environment variable ``KLCONTROL_MAX_ROWS`` says otherwise: a log is read as it streams and refused at this
#: count, so a gzip bomb, ``/dev/zero`` or a runaway log costs seconds, not the machine's memory.
MAX_ROWS = 2_000_000
_LINE_CHARS = 65_536  # a longer line is not a log row (no newline in a binary file, /dev/zero)
_CHARS_PER_ROW = 512  # the text read at most is max_rows·this (1 GiB by default)
_TB_BYTES_PER_ROW = 256  # event-file bytes allowed per row before TensorBoard's reader loads them
_AFTER_FIRST_DISORDER = 1000  # rows read past the first out-of-order step, to name a few more, before refusing
_FLAG = {"step": "--step-col", "beta": "--beta-col", "kl": "--kl-col"}  # CLI flag naming each column


def log_convention(trace: Trace) -> dict:
    """``{"kl_lag": 0|1, "beta_lead": 0|1, "beta_hold": "next"|"previous"}`` of a trace (``meta``; defaults 0, 0, "next").

    Parameters
    ----------
    trace : Trace
        A trace from :func:`read_trace` or :func:`klcontrol.simulate`.

    Returns
    -------
    dict
    """
    out = {}
    for key in ("kl_lag", "beta_lead", "beta_hold"):
        v = trace.meta.get(key, "next" if key == "beta_hold" else 0)
        if v not in CONVENTIONS[key][0]:
            raise ValueError(f"trace meta {key}={v!r}: must be one of {CONVENTIONS[key][0]}")
        out[key] = v if key == "beta_hold" else int(v)
    return out


def add_reader_arguments(p) -> None:
    """Add the log-reading flags (columns, conventions, format, NaN rows, run) to an argparse parser."""
    g = p.add_argument_group(
        "reading the logs",
        "A β logged at step s is held for every update until the next logged row (zero-order hold), so logs "
        "written every N updates are fitted update by update. Lightning: self.log('kl', kl) in training_step "
        "gives the KL before the update: pass --kl-lag 1.")
    g.add_argument("--step-col", default="step", help="step column / key (default step; CSV and JSONL only: "
                   "TensorBoard scalars carry their own step)")
    g.add_argument("--beta-col", default="beta", help="β column / key / scalar tag (default beta)")
    g.add_argument("--kl-col", default="kl", help="KL column / key / scalar tag (default kl)")
    g.add_argument("--kl-lag", type=int, choices=(0, 1), default=0,
                   help="0 (default): row s holds the KL after update s; 1: the KL of the forward pass of step s")
    g.add_argument("--beta-logged", choices=("before", "after"), default="before",
                   help="before (default): row s holds the β used in update s; after: the β a controller set "
                   "after update s (used from update s+1 on)")
    g.add_argument("--beta-hold", choices=("next", "previous"), default="next",
                   help="next (default): a logged β holds until the next logged row (zero-order hold); previous: "
                   "it had held since the previous row (logged at the end of the interval it was used in)")
    g.add_argument("--format", choices=("csv", "jsonl", "tensorboard"), default=None,
                   help="file format (default: from the file name)")
    g.add_argument("--drop-nan", action="store_true", help="drop rows whose β or KL is NaN or infinite")
    g.add_argument("--run", default=None, metavar="NAME",
                   help="TensorBoard: fit only this run (a sub-directory of PATH; default: every run, each its "
                   "own trace)")


def reader_kwargs(args) -> dict:
    """Keyword arguments of :func:`read_traces` from the flags of :func:`add_reader_arguments`."""
    return dict(step=args.step_col, beta=args.beta_col, kl=args.kl_col, kl_lag=args.kl_lag,
                beta_lead=1 if args.beta_logged == "after" else 0, format=args.format, drop_nan=args.drop_nan,
                run=args.run, beta_hold=args.beta_hold)


def row_cap(value=None) -> int:
    """The row cap of the readers: ``value``, else ``$KLCONTROL_MAX_ROWS``, else :data:`MAX_ROWS`.

    Raises
    ------
    ValueError
        If the value is not a positive whole number (naming ``KLCONTROL_MAX_ROWS`` when it came from there).
    """
    where = "max_rows="
    if value is None:
        env = os.environ.get("KLCONTROL_MAX_ROWS", "").strip()
        if not env:
            return MAX_ROWS
        where, value = "KLCONTROL_MAX_ROWS", env
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a positive whole number of rows, got {value!r}") from None
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise ValueError(f"{where} must be a positive whole number of rows, got {value!r}")
    return n


def _too_many(p, n):
    return ValueError(f"{p}: more than {n:,} rows; klcontrol reads at most {n:,} (a log that large is not a training "
                      "trace, or thin it first; to read it anyway set KLCONTROL_MAX_ROWS, max_rows= in Python)")


def read_trace(path, step: str = "step", beta: str = "beta", kl: str = "kl", setpoint: str = "setpoint",
               kl_lag: int = 0, format: str | None = None, drop_nan: bool = False, beta_lead: int = 0,
               run: str | None = None, beta_hold: str = "next", max_rows: int | None = None) -> Trace:
    """Read one training log into a :class:`klcontrol.Trace`.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file (header row; a UTF-8 BOM is fine), a ``.jsonl`` /
        ``.ndjson`` file (one JSON object per line), a TensorBoard event file
        (``events.out.tfevents.*``) or a directory: a trainer run directory
        (``trace.csv`` or ``trace.jsonl`` inside) or a TensorBoard log directory.
    step, beta, kl : str
        Column names (CSV), keys (JSONL) or scalar tags (TensorBoard; a child
        run of ``add_scalars("main", {"beta": …})`` is the tag ``main/beta``).
        ``step`` must be ``"step"`` for TensorBoard.
    setpoint : str
        Optional set-point column; NaN where absent.
    kl_lag : {0, 1}
        See :data:`CONVENTIONS` (stored in ``meta``; rows are not shifted).
    format : {"csv", "jsonl", "tensorboard"}, optional
        Override detection by file name.
    drop_nan : bool
        Drop rows with a NaN or infinite β or KL instead of raising.
    beta_lead : {0, 1}
        See :data:`CONVENTIONS`.
    run : str, optional
        TensorBoard directory with several runs: the run to read.
    beta_hold : {"next", "previous"}
        See :data:`CONVENTIONS`.
    max_rows : int, optional
        Refuse a log of more rows (default :func:`row_cap`: ``$KLCONTROL_MAX_ROWS`` or :data:`MAX_ROWS`). The log
        is read as it streams and refused as soon as it shows a problem (a line that is not text, a step out of
        order, the row cap), never loaded whole first.

    Returns
    -------
    Trace
        1-D arrays; ``meta`` holds ``source``, ``format``, ``kl_lag``,
        ``beta_lead``, ``run`` (TensorBoard) and counts of rows merged or dropped.

    Raises
    ------
    ValueError
        Missing file, unknown format, empty file, missing columns (naming those
        that exist and the flag to pass), the same column for β and KL,
        epoch-level columns, rows that do not parse, non-finite values (naming
        the rows), steps that do not increase (naming where), a log beyond the
        row cap, or a TensorBoard directory with several runs and no ``run``.
    """
    traces = read_traces(path, step, beta, kl, setpoint, kl_lag, format, drop_nan, beta_lead, run, beta_hold,
                         max_rows)
    if len(traces) > 1:
        names = [t.meta["run"] for t in traces]
        raise ValueError(f"{path}: {len(traces)} TensorBoard runs log {beta!r} and {kl!r}: {_quote(names)}; "
                         "name one with --run NAME (run= in Python), or use read_traces to get each")
    return traces[0]


def read_traces(path, step: str = "step", beta: str = "beta", kl: str = "kl", setpoint: str = "setpoint",
                kl_lag: int = 0, format: str | None = None, drop_nan: bool = False, beta_lead: int = 0,
                run: str | None = None, beta_hold: str = "next", max_rows: int | None = None) -> list:
    """Read a log into one :class:`klcontrol.Trace` per run (never concatenating runs).

    A CSV/JSONL file or trainer run directory is one run; a TensorBoard log
    directory holds one run per directory of event files (TensorBoard's
    convention; ``add_scalars`` children belong to their parent run).  Runs
    whose tags lack β and KL are skipped.  Parameters as :func:`read_trace`.

    Returns
    -------
    list of Trace
        In the order of the runs' paths.
    """
    for key, v in (("kl_lag", kl_lag), ("beta_lead", beta_lead), ("beta_hold", beta_hold)):
        if v not in CONVENTIONS[key][0]:
            raise ValueError(f"{key} must be {' or '.join(map(repr, CONVENTIONS[key][0]))}, got {v!r}")
    cap = row_cap(max_rows)
    names = {"step": step, "beta": beta, "kl": kl}
    for key, v in names.items():
        if not isinstance(v, str) or not v:
            raise ValueError(f"{_FLAG[key]} ({key}=) must be a non-empty name, got {v!r}")
    if beta == kl:
        raise ValueError(f"--beta-col and --kl-col (beta=, kl=) both name {beta!r}: β and the KL must be "
                         "different columns")
    for key in ("beta", "kl"):
        _reject_epoch_level(path, key, names[key])
    p = Path(path)
    if not p.exists():
        raise ValueError(f"trace file not found: {p}")
    fmt, p = _detect(p, format)
    if fmt == "tensorboard" and step != "step":
        raise ValueError(f"{p}: TensorBoard scalars carry their own step; --step-col (step=) applies to CSV and "
                         f"JSONL only (got {step!r})")
    if fmt != "tensorboard" and run is not None:
        raise ValueError(f"{p}: --run (run=) selects a TensorBoard run; a {fmt} file is one run")
    try:
        if fmt == "tensorboard":
            runs = [(name, _build(p, records, (step, beta, kl), drop_nan, cap))
                    for name, records in _read_tensorboard(p, beta, kl, setpoint, run, cap)]
        else:
            reader = _read_csv if fmt == "csv" else _read_jsonl
            runs = [(None, _build(p, reader(p, step, beta, kl, setpoint, cap), (step, beta, kl), drop_nan, cap))]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text {fmt.upper()} file (byte {exc.start}: {exc.reason}; binary or not "
                         "UTF-8)") from None
    except (OSError, EOFError, zlib.error) as exc:
        # gzip: truncated (EOFError), CRC or magic errors (BadGzipFile is an OSError), damaged stream (zlib.error)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ValueError(f"{p}: cannot read it as {fmt.upper()}{' (gzip)' if p.name.lower().endswith('.gz') else ''}: "
                         f"{why}") from None
    except csv.Error as exc:
        raise ValueError(f"{p}: not a CSV file ({exc})") from None
    out = []
    for run_name, tr in runs:
        tr.meta.update(format=fmt, kl_lag=int(kl_lag), beta_lead=int(beta_lead), beta_hold=beta_hold)
        if run_name is not None:
            tr.meta["run"] = run_name
        out.append(tr)
    return out


def align_kl(trace: Trace, kl_lag: int) -> Trace:
    """Shift the KL of a dense (one row per update) trace so that row ``t`` pairs ``β(t)`` with ``y(t)``.

    With ``kl_lag = 1`` row ``t`` holds ``y(t−1)``: the result pairs ``β(t)``
    with ``kl[t+1] = y(t)``, has one row fewer and ``meta["kl_lag"] = 0``.
    ``kl_lag = 0`` returns the trace unchanged.  :func:`read_trace` does not
    shift (the fit applies ``meta["kl_lag"]`` update by update, which also
    holds for sparse logs); use this for code that wants aligned rows.

    Parameters
    ----------
    trace : Trace
        A 1-D trace, one row per update.
    kl_lag : {0, 1}

    Returns
    -------
    Trace
    """
    if kl_lag not in (0, 1):
        raise ValueError(f"kl_lag must be 0 or 1, got {kl_lag!r}")
    if kl_lag == 0:
        trace.meta.setdefault("kl_lag", 0)
        return trace
    if len(trace) < 3:
        raise ValueError(f"kl_lag=1 needs at least 3 rows, the trace has {len(trace)}")
    step = np.asarray(trace.step)
    if np.any(np.diff(step) != 1):
        raise ValueError("align_kl shifts rows, which is right only for one row per update; this trace skips "
                         "steps: keep it as is and set trace.meta['kl_lag'] = 1 (the fit applies it per update)")
    meta = dict(trace.meta, kl_lag=0, realigned_from_kl_lag=1)
    return Trace(step[:-1], np.asarray(trace.beta)[:-1], np.asarray(trace.kl)[1:],
                 np.asarray(trace.setpoint)[:-1], None, meta)


def aligned(trace: Trace, where: str | None = None) -> Trace:
    """The trace in the canonical convention: row ``t`` holds β(t), the weight of update t, and y(t), the KL after it.

    A trace read with ``kl_lag=1`` (the KL of step t's forward pass) or ``beta_lead=1`` (the β a controller set after
    update t) is realigned by shifting rows (one row fewer per shift); a canonical trace is returned as it is.
    Models that take every update as it comes (Hammerstein, validation) call this, so those flags are honoured
    everywhere, not only by the first-order fit (which applies them update by update, sparse logs included).

    Raises
    ------
    ValueError
        For a sparse log (steps skipped) that is not canonical: rows cannot be shifted there.
    """
    conv = log_convention(trace)
    if conv["kl_lag"] == 0 and conv["beta_lead"] == 0:
        return trace
    name = where or trace.meta.get("source", "trace")
    if np.any(np.diff(np.asarray(trace.step)) != 1):
        raise ValueError(f"{name}: --kl-lag 1 / --beta-logged after realign rows, which needs every update logged; "
                         "this log skips steps (the first-order fit handles it; log every step for this model)")
    out = align_kl(trace, conv["kl_lag"]) if conv["kl_lag"] else trace
    if conv["beta_lead"]:
        if len(out) < 3:
            raise ValueError(f"{name}: --beta-logged after needs at least 3 rows")
        meta = dict(out.meta, beta_lead=0, realigned_from_beta_lead=1)
        sp = np.asarray(out.setpoint)
        out = Trace(np.asarray(out.step)[1:], np.asarray(out.beta)[:-1], np.asarray(out.kl)[1:], sp[1:], None, meta)
    return out


# -- format detection -------------------------------------------------------------------------------------


def _detect(p: Path, fmt):
    if fmt is not None:
        if fmt not in ("csv", "jsonl", "tensorboard"):
            raise ValueError(f"--format (format=) must be csv, jsonl or tensorboard, got {fmt!r}")
        if p.is_dir() and fmt != "tensorboard":
            raise ValueError(f"{p} is a directory; --format {fmt} needs a file")
        return fmt, p
    if p.is_dir():
        for name in TRACE_FILES:
            if (p / name).is_file():
                return _detect(p / name, None)
        if any(p.rglob("events.out.tfevents*")):
            return "tensorboard", p
        raise ValueError(f"{p} is a directory with no {' or '.join(TRACE_FILES)} and no TensorBoard event files")
    name = p.name.lower()
    if name.endswith(".gz"):  # gzip-compressed CSV/JSONL logs read transparently
        name = name[:-3]
    if "tfevents" in name:
        return "tensorboard", p
    if name.endswith(".csv"):
        return "csv", p
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl", p
    raise ValueError(f"cannot tell the format of {p} from its name (.csv, .jsonl, events.out.tfevents.*); "
                     "pass --format csv, jsonl or tensorboard (format= in Python)")


def _open_text(p: Path):
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would otherwise join the first column name
    if p.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(p, "rt", newline="", encoding="utf-8-sig")
    return open(p, newline="", encoding="utf-8-sig")


# -- readers: each yields records (label, step, {"beta"|"kl"|"setpoint": value}) in file order, as it reads ----
# A key absent from a record was not logged in that row; a present NaN was logged as NaN.


def _lines(p: Path, fh, cap):
    """``(number, line)`` of a text file, refused at a line too long for a log row or past the row and text caps."""
    chars, limit = 0, cap * _CHARS_PER_ROW
    n = 0
    while True:
        line = fh.readline(_LINE_CHARS + 1)
        if not line:
            return
        n += 1
        if len(line) > _LINE_CHARS:
            raise ValueError(f"{p}: line {n} is longer than {_LINE_CHARS:,} characters: not a log of rows (a binary "
                             "file, or one without line breaks?)")
        chars += len(line)
        if n > cap + 1 or chars > limit:  # + 1: the CSV header
            raise _too_many(p, cap) if n > cap + 1 else ValueError(
                f"{p}: more than {limit:,} characters of text; klcontrol reads at most {_CHARS_PER_ROW} per row of "
                f"the row cap ({cap:,} rows; set KLCONTROL_MAX_ROWS, max_rows= in Python, to read more)")
        yield n, line


def _read_csv(p: Path, step, beta, kl, setpoint, cap):
    try:
        with _open_text(p) as fh:
            reader = csv.reader(line for _, line in _lines(p, fh, cap))
            header = None
            for r in reader:
                if not any(c.strip() for c in r):
                    continue
                if header is None:
                    header = [h.strip() for h in r]
                    _require(p, {"step": step, "beta": beta, "kl": kl}, header, "columns")
                    idx = {"step": header.index(step), "beta": header.index(beta), "kl": header.index(kl)}
                    if setpoint in header:
                        idx["setpoint"] = header.index(setpoint)
                    names = {"step": step, "beta": beta, "kl": kl, "setpoint": setpoint}
                    rows = 0
                    continue
                rows += 1
                where = f"line {reader.line_num}"
                if len(r) != len(header):
                    raise ValueError(f"{p}: {where} has {len(r)} fields, the header has {len(header)}")
                vals = {}
                for key, i in idx.items():
                    v = _number(p, where, names[key], r[i])
                    if v is not None:
                        vals[key] = v
                if "step" not in vals:
                    raise ValueError(f"{p}: {where} has no {step!r} value")
                yield where, vals.pop("step"), vals
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a CSV file?") from None
    if header is None:
        raise ValueError(f"{p}: empty file (no header, no data)")
    if not rows:
        raise ValueError(f"{p}: no data rows after the header")


def _read_jsonl(p: Path, step, beta, kl, setpoint, cap):
    seen: set = set()
    names = {"beta": beta, "kl": kl, "setpoint": setpoint}
    n = 0
    try:
        with _open_text(p) as fh:
            for i, line in _lines(p, fh, cap):
                if not line.strip():
                    continue
                where = f"line {i}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{p}: {where} is not valid JSON ({exc.msg})") from None
                except RecursionError:
                    raise ValueError(f"{p}: {where} is JSON nested too deeply") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{p}: {where} is not a JSON object")
                if len(seen) < 10_000:  # the key names quoted when β or the KL is missing
                    seen.update(obj)
                if step not in obj:
                    _require(p, {"step": step}, sorted(obj), f"key(s) in {where}")
                s = _number(p, where, step, obj[step])
                if s is None:
                    raise ValueError(f"{p}: {where} has no {step!r} value")
                vals = {}
                for key, name in names.items():
                    if name in obj:
                        v = _number(p, where, name, obj[name])
                        if v is not None:
                            vals[key] = v
                n += 1
                yield where, s, vals
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a JSONL file?") from None
    if not n:
        raise ValueError(f"{p}: empty file (no JSON lines)")
    _require(p, {"beta": beta, "kl": kl}, sorted(seen), "keys")


def _event_dirs(p: Path):
    if p.is_file():
        return [p]
    return sorted({f.parent for f in p.rglob("events.out.tfevents*") if f.is_file()})


def _load_run(path: Path):
    """Scalars of one run directory (or event file), with TensorBoard's own purge of restarted steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_log = logging.getLogger("tensorboard")
    level = tb_log.level
    purged = []

    class _Count(logging.Handler):  # TensorBoard reports purges as warnings: count them instead of printing
        def emit(self, record):
            purged.append(record.getMessage())

    handler = _Count()
    tb_log.addHandler(handler)
    tb_log.setLevel(logging.WARNING)
    prop = tb_log.propagate
    tb_log.propagate = False
    try:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every event, no reservoir sampling
        acc.Reload()
    except Exception as exc:  # a truncated or foreign file: the reader's own error types vary
        raise ValueError(f"{path}: cannot read the TensorBoard events ({type(exc).__name__}: {exc})") from None
    finally:
        tb_log.removeHandler(handler)
        tb_log.setLevel(level)
        tb_log.propagate = prop
    series = {}
    for tag in acc.Tags().get("scalars", []):
        ev = acc.Scalars(tag)
        series[tag] = (np.array([e.step for e in ev], dtype=np.int64), np.array([e.value for e in ev], dtype=float))
    return series, len([m for m in purged if "Purging" in m or "purg" in m.lower()])


def _read_tensorboard(p: Path, beta, kl, setpoint, run, cap):
    dirs = _event_dirs(p)
    files = [p] if p.is_file() else [f for d in dirs for f in d.glob("events.out.tfevents*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    if size > cap * _TB_BYTES_PER_ROW:  # TensorBoard's reader keeps every event in memory: refuse before it starts
        raise ValueError(f"{p}: {size / 2**20:,.0f} MiB of TensorBoard events, more than a log of {cap:,} rows "
                         f"({_TB_BYTES_PER_ROW} bytes per row); set KLCONTROL_MAX_ROWS (max_rows= in Python) to read "
                         "it anyway")
    loaded = {d: _load_run(d) for d in dirs}
    # add_scalars("main", {"key": v}) writes tag "main" into a child run "<parent>/main_key": fold it into the parent
    children = {}
    for d, (series, _) in loaded.items():
        if d.parent in loaded and len(series) == 1:
            (tag,) = series
            if d.name.startswith(tag + "_") and len(d.name) > len(tag) + 1:
                children[d] = (d.parent, f"{tag}/{d.name[len(tag) + 1:]}", series[tag])
    runs = {}
    for d, (series, purged) in loaded.items():
        if d in children:
            continue
        runs[d] = (dict(series), purged)
    for d, (parent, alias, data) in children.items():
        runs[parent][0].setdefault(alias, data)
    base = p if p.is_dir() else p.parent

    def name_of(d):
        return "." if d == base or p.is_file() else d.relative_to(base).as_posix()

    if run is not None:
        chosen = {d: v for d, v in runs.items() if name_of(d) == run.strip("/")}
        if not chosen:
            raise ValueError(f"{p}: no TensorBoard run named {run!r}; runs: {_quote([name_of(d) for d in runs])}")
        runs = chosen
    usable = {d: v for d, v in runs.items() if beta in v[0] and kl in v[0]}
    if not usable:
        tags = sorted({t for v in runs.values() for t in v[0]})
        if not tags:
            raise ValueError(f"{p}: no scalar events in the TensorBoard log")
        if len(runs) == 1:
            _require(p, {"beta": beta, "kl": kl}, tags, "scalar tags")
        per_run = "; ".join(f"{name_of(d)}: {sorted(v[0])}" for d, v in runs.items())
        raise ValueError(f"{p}: no run logs both {beta!r} and {kl!r} (runs and their tags: {per_run}); pass "
                         "--beta-col and --kl-col (beta=, kl=)")
    out = []
    for d, (series, purged) in sorted(usable.items(), key=lambda kv: name_of(kv[0])):
        stream = []
        for key, tag in (("beta", beta), ("kl", kl), ("setpoint", setpoint)):
            if tag in series:
                s, v = series[tag]
                stream += [(int(si), key, float(vi)) for si, vi in zip(s, v)]
        where = f"run {name_of(d)!r}"
        for tag in (beta, kl):
            s = series[tag][0]
            bad = np.flatnonzero(np.diff(s) <= 0)
            if len(bad):
                raise ValueError(f"{p}: {where}: steps of tag {tag!r} do not strictly increase at "
                                 f"{_quote([f'step {s[i + 1]} after {s[i]}' for i in bad])} (events written "
                                 "twice without SummaryWriter(purge_step=…)? keep one copy)")
        stream.sort(key=lambda r: r[0])  # by step; Python's sort is stable, so tags keep their order in a step
        records = []
        for s, key, v in stream:
            if records and records[-1][1] == s:
                records[-1][2][key] = v
            else:
                records.append((f"step {s}", s, {key: v}))
        out.append((name_of(d), records))
    return out


# -- checks and assembly -------------------------------------------------------------------------------------


def _reject_epoch_level(path, key, name):
    low = name.lower()
    if low == "epoch" or low.endswith(("_epoch", "/epoch")):
        stem = name[:-len("_epoch")] if low.endswith("_epoch") else "kl"
        raise ValueError(f"{path}: {_FLAG[key]} {name!r} names an epoch-level value (one row per epoch, as "
                         "Lightning's self.log(..., on_epoch=True) writes): the plant moves every update, so fit "
                         f"step-level values: log with on_step=True and pass {_FLAG[key]} {stem}_step (or {stem} "
                         "when logged with on_step only)")


def _suggest(name, present):
    low = name.lower()
    cands = [c for c in present if c.lower() in (low, f"{low}_step", f"_{low}", f"train/{low}", f"train_{low}")
             or c.lower().endswith(f"/{low}")]
    return cands


def _require(p, names: dict, present, what):
    missing = {k: v for k, v in names.items() if v not in present}
    if not missing:
        return
    present = list(present)
    hints = []
    for k, v in missing.items():
        c = _suggest(v, present)
        hints.append(f"{_FLAG[k]} {c[0]}" if c else f"{_FLAG[k]} NAME")
    shown = present if len(present) <= 40 else present[:40] + [f"… ({len(present)} in all)"]
    raise ValueError(f"{p}: missing {what} {list(missing.values())}; the file has {shown} "
                     f"(pass {', '.join(hints)} on the command line; step=, beta=, kl= in Python)")


def _number(p, where, col, v):
    """Float of a cell; ``None`` for an empty cell (not logged in this row), NaN for a logged NaN."""
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v == "":
            return None
        if v.lower() in ("nan", "none", "null", "na"):
            return math.nan
    if isinstance(v, bool):
        raise ValueError(f"{p}: {where}, column {col!r}: {v!r} is not a number")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{p}: {where}, column {col!r}: {str(v)[:40]!r} is not a number") from None
    except OverflowError:
        raise ValueError(f"{p}: {where}, column {col!r}: {str(v)[:20]}… is too large for a float") from None


def _quote(items):
    items = list(items)
    more = f" … ({len(items)} in all)" if len(items) > _SHOWN else ""
    return ", ".join(str(i) for i in items[:_SHOWN]) + more


def _build(p, records, names, drop_nan, cap):
    """Merge records by step, hold β onto KL-only rows, check values; one Trace.

    ``records`` is consumed as it streams: the columns are kept as packed arrays, a row only until the next step
    arrives, and the log is refused soon after the first step out of order (with up to :data:`_SHOWN` of them).
    """
    step_name, beta_name, kl_name = names
    cols = {k: array("d") for k in ("step", "beta", "kl", "setpoint")}
    n_records = n_rows = 0
    problems, stop = [], None
    held = before_first = beta_only = n_other = 0
    last = None
    bad = {beta_name: [], kl_name: []}  # first labels of rows with a non-finite β or KL, for the message
    n_bad = n_bad_beta = n_bad_kl = 0

    def finish(row):
        nonlocal last, held, before_first, beta_only, n_other, n_bad, n_bad_beta, n_bad_kl
        lab, s, v = row
        if "beta" not in v and "kl" not in v:
            n_other += 1  # a row of other metrics only (validation, learning rate, …)
            return
        if "beta" in v:
            last = v["beta"]
        if "kl" not in v:
            beta_only += 1
            return
        if "beta" not in v:
            if last is None:
                before_first += 1  # rows before the first β cannot be used
                return
            v["beta"] = last  # zero-order hold: a KL row without a β uses the last logged β
            held += 1
        fb, fk = math.isfinite(v["beta"]), math.isfinite(v["kl"])
        if not (fb and fk):
            n_bad += 1
            n_bad_beta += not fb
            n_bad_kl += not fk
            for ok, name in ((fb, beta_name), (fk, kl_name)):
                if not ok and len(bad[name]) <= _SHOWN:
                    bad[name].append(lab)
            return  # out of the columns: dropped with drop_nan, else the log is refused below
        for k in ("step", "beta", "kl"):
            cols[k].append(s if k == "step" else v[k])
        cols["setpoint"].append(v.get("setpoint", math.nan))

    pending = None
    for label, s, vals in records:
        n_records += 1
        if n_records > cap:
            raise _too_many(p, cap)
        if not math.isfinite(s):
            raise ValueError(f"{p}: {label}: non-finite {step_name!r} ({s})")
        if s != round(s):
            raise ValueError(f"{p}: {label}: {step_name!r} must hold whole step numbers, got {s!r}")
        if pending is not None and s < pending[1]:
            problems.append(f"{label} (step {int(s)} after {int(pending[1])})")
        elif pending is not None and s == pending[1]:
            prev = pending[2]
            if any(k in prev and k != "setpoint" for k in vals):
                problems.append(f"{label} (step {int(s)} after {int(s)})")
            else:
                prev.update(vals)  # separate log calls of one step (W&B-style history, Lightning's CSVLogger)
        else:
            if pending is not None:
                finish(pending)
            pending = (label, s, dict(vals))
            n_rows += 1
        if problems:
            stop = n_records + _AFTER_FIRST_DISORDER if stop is None else stop
            if len(problems) > _SHOWN or n_records >= stop:
                break
    if problems:
        shown = ", ".join(problems[:_SHOWN]) + (" …" if len(problems) > _SHOWN else "")
        raise ValueError(f"{p}: steps do not strictly increase at {shown}: a resumed run that logged some steps "
                         "twice? keep one copy")
    if pending is not None:
        finish(pending)
    n_merged = n_records - n_rows
    if n_other == n_rows:
        raise ValueError(f"{p}: no row holds {beta_name!r} or {kl_name!r}")
    if not len(cols["step"]) and not n_bad:
        raise ValueError(f"{p}: no row holds both {beta_name!r} and a later {kl_name!r}")
    if n_bad and not drop_nan:
        what = [f"{name!r} at {_quote_n(bad[name], n)}" for name, n in ((beta_name, n_bad_beta), (kl_name, n_bad_kl))
                if n]
        raise ValueError(f"{p}: {n_bad} row(s) with NaN or infinite values: {'; '.join(what)} "
                         "(fix the log or pass --drop-nan; drop_nan=True in Python)")
    if not len(cols["step"]):
        raise ValueError(f"{p}: every row has a NaN or infinite β or KL")
    meta = {"source": str(p), "rows_merged": n_merged, "rows_other_metrics": n_other, "beta_held_rows": held,
            "kl_rows_before_first_beta": before_first, "beta_rows_without_kl": beta_only,
            "rows_dropped_nan": n_bad}
    step, beta, kl, sp = (np.frombuffer(cols[k], dtype=float) if len(cols[k]) else np.zeros(0)
                          for k in ("step", "beta", "kl", "setpoint"))
    return Trace(step.astype(np.int64), beta.copy(), kl.copy(), sp.copy(), None, meta)


def _quote_n(items, n):
    """:func:`_quote` of the first items of ``n`` in all."""
    more = f" … ({n} in all)" if n > _SHOWN else ""
    return ", ".join(str(i) for i in items[:_SHOWN]) + more
