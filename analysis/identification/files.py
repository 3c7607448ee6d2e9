"""Plant identification from log files, in one call each: what ``klcontrol fit`` does, without the printing.

:func:`fit_first_order_files` fits the paper's first-order model (:func:`klcontrol.analysis.identification.first_order.fit_plant`);
:func:`fit_hammerstein_files` identifies the operating-point models of :mod:`klcontrol.analysis.identification.models` and
validates them on held-out traces. Both read every log with :func:`klcontrol.analysis.identification.traces.read_traces` and the same
reader options, and write the files they are asked for.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["fit_first_order_files", "fit_hammerstein_files", "fit_plan_files"]


def _read_each(paths, reader):
    """Read each log and realign it to the canonical convention (``--kl-lag``, ``--beta-logged`` honoured)."""
    from klcontrol.analysis.identification.traces import aligned, read_trace

    return [aligned(read_trace(p, **reader), where=str(p)) for p in paths]


def _rel(name):
    """A trace's name as shown: relative when it is a path (a phase of a plan log is ``LOG[phase]``)."""
    return os.path.relpath(name) if os.path.exists(name) else str(name)


def _write_json(path, obj):
    from klcontrol.fileio import write_json

    write_json(path, obj, indent=1)


def fit_first_order_files(paths, *, reader=None, g="exp", n_boot=100, seed=0, level=0.95, out=None, plot=None,
                          validate=None, report=None, progress=False):
    """Fit ``y(t) = y(t−1)/(1+a) + a/(1+a)·g(β(t))`` to log files.

    Parameters
    ----------
    paths : sequence of str
        Logs or run directories (a TensorBoard directory gives one trace per run).
    reader : dict, optional
        Options of :func:`klcontrol.analysis.identification.traces.read_traces` (``reader_kwargs(args)`` on the CLI).
    g, n_boot, seed, level, progress
        As in :func:`klcontrol.analysis.identification.first_order.fit_plant`.
    out, plot : str, optional
        Save the fit (JSON) and its figure (PNG).
    validate : sequence of str, optional
        Held-out logs (:func:`klcontrol.analysis.identification.models.validate`).
    report : str, optional
        Write the validation report (JSON).

    Returns
    -------
    (PlantFit, dict)
        The fit and its summary (:meth:`PlantFit.summary`, with ``out``, ``plot`` and ``validation``).
    """
    from klcontrol.analysis.identification.first_order import fit_plant
    from klcontrol.analysis.identification.traces import read_traces

    reader = reader or {}
    traces = []
    for path in paths:
        traces += read_traces(path, **reader)
    for t in traces:  # name each trace by its file and, for TensorBoard, its run
        if t.meta.get("run") not in (None, "."):
            t.meta["source"] = f"{t.meta['source']} (run {t.meta['run']})"
    fit = fit_plant(traces, g=g, n_boot=n_boot, seed=seed, level=level, progress=progress)
    if out:
        fit.save(out)
    if plot:
        from klcontrol.analysis.identification.plots import plot_fit

        plot_fit(fit, plot)
    s = fit.summary()
    s.update(out=out, plot=plot)
    if validate:
        from klcontrol.analysis.identification.models import validate as validate_fit

        s["validation"] = validate_fit(fit, _read_each(validate, reader), validate)
        if report:
            _write_json(report, s["validation"])
    return fit, s


def fit_hammerstein_files(paths, *, static, reader=None, validate=None, out=None, compare=None, report=None,
                          summary=None, plot=None):
    """Identify the operating-point models of :mod:`klcontrol.analysis.identification.models` from log files and pick one.

    Parameters
    ----------
    paths : sequence of str
        Excitation logs the dynamics are fitted to.
    static : sequence of str
        Constant-β settled logs giving the static map g(β).
    reader : dict, optional
        Options of :func:`klcontrol.analysis.identification.traces.read_trace`.
    validate : sequence of str, optional
        Held-out logs; the candidate that predicts them best is chosen.
    out : str, optional
        Save the chosen model (JSON, :func:`klcontrol.analysis.identification.fits.load_fit` reads it).
    compare : str, optional
        Another saved fit validated on the same held-out logs (e.g. the first-order one).
    report : str, optional
        Write the report of every candidate (JSON).
    summary : str, optional
        Write ``{model, selection, held_out: [{trace, fit, closed_loop, fit_percent, first_order_fit_percent,
        …}]}`` (needs ``out``, ``validate`` and ``compare``).
    plot : str, optional
        Validation figure (PNG) of the held-out logs.

    Returns
    -------
    (model, dict)
        The chosen model and the report (``candidates``, ``chosen``, ``rule``, and ``compare`` when given).

    Raises
    ------
    ValueError
        Missing ``static``, or ``summary`` without ``out``, ``validate`` and ``compare``.
    """
    reader = reader or {}
    if not static:
        raise ValueError("--model hammerstein needs --static: constant-β settled traces for g(β)")
    if summary and not (out and validate and compare):
        raise ValueError("--summary needs --out, --validate and --compare")
    validate = list(validate or [])
    return _hammerstein(_read_each(paths, reader), list(paths), _read_each(static, reader), _read_each(validate, reader),
                        validate, out=out, compare=compare, report=report, summary=summary, plot=plot)


def fit_plan_files(plan, log, *, reader=None, out=None, compare=None, report=None, summary=None, plot=None):
    """Fit the log of an in-loop experiment (:class:`~klcontrol.analysis.identification.inloop.InLoopExperiment`).

    The log is read (``reader`` options, ``kl_lag`` and ``beta_lead`` honoured), cut into the plan's phases and
    fitted as ``klcontrol identify``'s traces are: g(β) from the settle phases, the dynamics on the first
    open-loop phase, the candidate chosen on the held-out phases. Returns what :func:`fit_hammerstein_files` does.
    """
    from klcontrol.analysis.identification.inloop import read_plan, split_log

    p = read_plan(plan)
    (trace,) = _read_each([log], reader or {})
    parts = split_log(p, trace)
    seg = {s["name"]: s for s in p["segments"]}
    names = lambda role: [n for n in parts if seg[n]["role"] == role]  # noqa: E731
    if summary and not (out and compare):
        raise ValueError("--summary needs --out and --compare")
    return _hammerstein([parts[n] for n in names("fit")], [f"{log}[{n}]" for n in names("fit")],
                        [parts[n] for n in names("static")], [parts[n] for n in names("held_out")],
                        [f"{log}[{n}]" for n in names("held_out")], out=out, compare=compare, report=report,
                        summary=summary, plot=plot)


def _hammerstein(fit_traces, fit_names, static_traces, held, validate, *, out, compare, report, summary, plot):
    from klcontrol.analysis.identification import models as pm
    from klcontrol.analysis.identification.control_validation import select_model

    g = pm.static_map_from_traces(static_traces)
    best, rep = select_model(fit_traces, g, held, fit_names=fit_names, held_out_names=validate)
    if out:
        best.save(out)
    if compare:
        from klcontrol.analysis.identification.fits import load_fit

        rep["compare"] = dict(fit=compare, held_out=pm.validate(load_fit(compare), held, validate))
    if report:
        _write_json(report, rep)
    if summary:
        mine = rep["candidates"][rep["chosen"]]["held_out"]
        first = {r["structure"]: r for r in rep["candidates"]}["first_order"]["held_out"]
        rows = []
        for tr, path, v, c, f1 in zip(held, validate, mine, rep["compare"]["held_out"], first):
            rows.append(dict(trace=_rel(path), fit=os.path.relpath(out),
                             closed_loop=bool(np.any(np.isfinite(np.asarray(tr.setpoint, dtype=float)))),
                             fit_percent=v["fit_percent"], first_order_fit_percent=c["fit_percent"],
                             first_order_fit=os.path.relpath(compare), fit_percent_raw=v["fit_percent_raw"],
                             first_order_fit_percent_raw=c["fit_percent_raw"],
                             first_order_at_operating_point_fit_percent=f1["fit_percent"],
                             ljung_box_p=v["ljung_box_p"], xcorr_max=v["xcorr_max"], xcorr_bound=v["bound"]))
        os.makedirs(os.path.dirname(os.path.abspath(summary)), exist_ok=True)
        _write_json(summary, dict(model=repr(best), selection=rep["rule"], held_out=rows))
    if plot and held:
        from klcontrol.analysis.identification.fits import load_fit
        from klcontrol.analysis.identification.validation import plot_validation

        label = f"{getattr(load_fit(compare), 'kind', 'fit')} ({os.path.basename(str(compare))})" if compare else None
        plot_validation(best, held, validate, plot, compare=load_fit(compare) if compare else None,
                        compare_label=label or "comparison fit")
    return best, rep
