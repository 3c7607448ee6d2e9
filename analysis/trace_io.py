"""Read training logs (CSV, JSONL, TensorBoard) into :class:`klcontrol.Trace` objects.

Time convention (docs/design.md): row ``t`` holds ``β(t)``, the weight used in
update ``t``, and ``y(t)``, the KL *after* update ``t``.  A log whose KL comes
from the forward pass of the same step holds ``y(t−1)`` in row ``t``; read it
with ``kl_lag=1`` and the rows are realigned (``kl`` shifted one row up, the
last β dropped).
"""
from __future__ import annotations

import csv
import json
import math
import warnings
import zlib
from pathlib import Path

import numpy as np

from klcontrol import Trace

__all__ = ["read_trace", "align_kl", "TRACE_FILES"]

#: File names looked for, in order, when :func:`read_trace` is given a trainer run directory.
TRACE_FILES = ("trace.csv", "trace.jsonl")

_SHOWN = 8  # rows or steps quoted in an error message before "…"


def read_trace(path, step: str = "step", beta: str = "beta", kl: str = "kl", setpoint: str = "setpoint",
               kl_lag: int = 0, format: str | None = None, drop_nan: bool = False) -> Trace:
    """Read one training log into a :class:`klcontrol.Trace`.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file (header row), a ``.jsonl`` / ``.ndjson`` file (one JSON
        object per line), a TensorBoard event file (``events.out.tfevents.*``)
        or a directory: a trainer run directory (``trace.csv`` or
        ``trace.jsonl`` inside) or a TensorBoard log directory.
    step, beta, kl : str
        Column names (CSV), keys (JSONL) or scalar tags (TensorBoard).
    setpoint : str
        Optional set-point column; NaN where absent.
    kl_lag : {0, 1}
        0: row ``t`` holds the KL after update ``t`` (the klcontrol trainer and
        :func:`klcontrol.simulate`); 1: the KL was logged in the forward pass of
        step ``t``, i.e. it is ``y(t−1)`` (see :func:`align_kl`).
    format : {"csv", "jsonl", "tensorboard"}, optional
        Override detection by file name.
    drop_nan : bool
        Drop rows with a non-finite β or KL instead of raising.

    Returns
    -------
    Trace
        1-D arrays; ``meta`` holds ``source``, ``format`` and ``kl_lag``.

    Raises
    ------
    ValueError
        Missing file, unknown format, empty file, missing columns (naming those
        that exist), rows that do not parse, non-finite values (naming the rows)
        or steps that do not strictly increase (naming where).
    """
    if kl_lag not in (0, 1):
        raise ValueError(f"kl_lag must be 0 or 1, got {kl_lag!r}")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"trace file not found: {p}")
    fmt, p = _detect(p, format)
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "tensorboard": _read_tensorboard}[fmt]
    try:
        cols, labels = reader(p, (step, beta, kl), setpoint)
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
    tr = _build(p, cols, labels, (step, beta, kl, setpoint), drop_nan)
    tr.meta.update(format=fmt)
    return align_kl(tr, kl_lag)


def align_kl(trace: Trace, kl_lag: int) -> Trace:
    """Realign a trace whose KL column lags β by ``kl_lag`` rows.

    With ``kl_lag = 1`` row ``t`` holds ``y(t−1)``: the result pairs ``β(t)``
    with ``kl[t+1] = y(t)`` and has one row fewer.  ``kl_lag = 0`` returns the
    trace unchanged.  Apply it once: each call shifts again.

    Parameters
    ----------
    trace : Trace
        A 1-D trace.
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
    meta = dict(trace.meta, kl_lag=1)
    return Trace(np.asarray(trace.step)[:-1], np.asarray(trace.beta)[:-1], np.asarray(trace.kl)[1:],
                 np.asarray(trace.setpoint)[:-1], None, meta)


# -- format detection -------------------------------------------------------------------------------------


def _detect(p: Path, fmt):
    if fmt is not None:
        if fmt not in ("csv", "jsonl", "tensorboard"):
            raise ValueError(f"format must be 'csv', 'jsonl' or 'tensorboard', got {fmt!r}")
        if p.is_dir() and fmt != "tensorboard":
            raise ValueError(f"{p} is a directory; format={fmt!r} needs a file")
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
                     "pass format='csv', 'jsonl' or 'tensorboard'")


def _open_text(p: Path):
    if p.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(p, "rt", newline="", encoding="utf-8-sig")
    return open(p, newline="", encoding="utf-8-sig")


# -- readers: each returns {column: list of floats} and a label per row for messages -----------------------


def _read_csv(p: Path, required, setpoint):
    with _open_text(p) as fh:
        reader = csv.reader(fh)
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{p}: empty file (no header, no data)")
    header = [h.strip() for h in rows[0][1]]
    _require(p, required, header, "columns")
    want = list(required) + ([setpoint] if setpoint in header else [])
    idx = {c: header.index(c) for c in want}
    if len(rows) == 1:
        raise ValueError(f"{p}: no data rows after the header")
    cols = {c: [] for c in want}
    labels = []
    for line, row in rows[1:]:
        where = f"line {line}"
        if len(row) != len(header):
            raise ValueError(f"{p}: {where} has {len(row)} fields, the header has {len(header)}")
        for c in want:
            cols[c].append(_number(p, where, c, row[idx[c]]))
        labels.append(where)
    return cols, labels


def _read_jsonl(p: Path, required, setpoint):
    cols = {c: [] for c in list(required) + [setpoint]}
    labels = []
    seen_keys: set = set()
    with _open_text(p) as fh:
        for i, line in enumerate(fh, 1):
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
            seen_keys.update(obj)
            missing = [c for c in required if c not in obj]
            if missing:
                raise ValueError(f"{p}: {where} lacks key(s) {missing}; it has {sorted(obj)}")
            for c in required:
                cols[c].append(_number(p, where, c, obj[c]))
            cols[setpoint].append(_number(p, where, setpoint, obj.get(setpoint)))
            labels.append(where)
    if not labels:
        raise ValueError(f"{p}: empty file (no JSON lines)")
    if setpoint not in seen_keys:
        del cols[setpoint]
    return cols, labels


def _read_tensorboard(p: Path, required, setpoint):
    from tbparse import SummaryReader

    with warnings.catch_warnings():  # tbparse's own pandas deprecation warnings are not the user's concern
        warnings.simplefilter("ignore")
        df = SummaryReader(str(p), pivot=False, event_types={"scalars"}).scalars
    if df is None or len(df) == 0:
        raise ValueError(f"{p}: no scalar events in the TensorBoard log")
    tags = sorted(df["tag"].unique())
    step_name, beta_name, kl_name = required
    _require(p, (beta_name, kl_name), tags, "scalar tags")
    series = {}
    for tag in (beta_name, kl_name) + ((setpoint,) if setpoint in tags else ()):
        sub = df[df["tag"] == tag]
        series[tag] = (sub["step"].to_numpy(dtype=np.int64), sub["value"].to_numpy(dtype=float))
    steps = series[beta_name][0]
    for tag in (beta_name, kl_name):
        s = series[tag][0]
        bad = np.flatnonzero(np.diff(s) <= 0)
        if len(bad):
            raise ValueError(f"{p}: steps of tag {tag!r} do not strictly increase at "
                             f"{_quote([f'step {s[i + 1]} after {s[i]}' for i in bad])} "
                             "(a resumed run logged some steps twice? keep one copy)")
    if not np.array_equal(series[kl_name][0], steps):
        only_b = np.setdiff1d(steps, series[kl_name][0])
        only_k = np.setdiff1d(series[kl_name][0], steps)
        raise ValueError(f"{p}: tags {beta_name!r} and {kl_name!r} are logged at different steps "
                         f"({len(only_b)} step(s) only in {beta_name!r}, e.g. {only_b[:3].tolist()}; "
                         f"{len(only_k)} only in {kl_name!r}, e.g. {only_k[:3].tolist()})")
    cols = {step_name: steps.astype(float).tolist(), beta_name: series[beta_name][1].tolist(),
            kl_name: series[kl_name][1].tolist()}
    if setpoint in series:
        sp_steps, sp_vals = series[setpoint]
        lookup = dict(zip(sp_steps.tolist(), sp_vals.tolist()))
        cols[setpoint] = [lookup.get(int(s), math.nan) for s in steps]
    return cols, [f"step {s}" for s in steps]


# -- checks and assembly -------------------------------------------------------------------------------------


def _require(p, required, present, what):
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{p}: missing {what} {missing}; the file has {list(present)} "
                         "(pass step=, beta=, kl= to name them)")


def _number(p, where, col, v):
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        if v == "" or v.lower() in ("nan", "none", "null", "na"):
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


def _build(p, cols, labels, names, drop_nan):
    step_name, beta_name, kl_name, sp_name = names
    step = np.asarray(cols[step_name], dtype=float)
    beta = np.asarray(cols[beta_name], dtype=float)
    kl = np.asarray(cols[kl_name], dtype=float)
    sp = np.asarray(cols[sp_name], dtype=float) if sp_name in cols else np.full(len(step), np.nan)
    labels = np.asarray(labels, dtype=object)
    bad_step = ~np.isfinite(step)
    if bad_step.any():
        raise ValueError(f"{p}: non-finite {step_name!r} at {_quote(labels[bad_step])}")
    bad = ~(np.isfinite(beta) & np.isfinite(kl))
    if bad.any():
        if not drop_nan:
            what = []
            for name, arr in ((beta_name, beta), (kl_name, kl)):
                m = ~np.isfinite(arr)
                if m.any():
                    what.append(f"{name!r} at {_quote(labels[m])}")
            raise ValueError(f"{p}: {int(bad.sum())} row(s) with NaN or infinite values: {'; '.join(what)} "
                             "(fix the log or pass drop_nan=True)")
        step, beta, kl, sp, labels = step[~bad], beta[~bad], kl[~bad], sp[~bad], labels[~bad]
        if len(step) == 0:
            raise ValueError(f"{p}: every row has a NaN or infinite β or KL")
    if np.any(step != np.round(step)):
        raise ValueError(f"{p}: {step_name!r} must hold whole step numbers, got e.g. "
                         f"{step[step != np.round(step)][:3].tolist()}")
    dec = np.flatnonzero(np.diff(step) <= 0)
    if len(dec):
        raise ValueError(f"{p}: steps do not strictly increase at "
                         f"{_quote([f'{labels[i + 1]} (step {int(step[i + 1])} after {int(step[i])})' for i in dec])}")
    return Trace(step.astype(np.int64), beta, kl, sp, None, {"source": str(p)})
