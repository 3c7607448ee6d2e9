"""Does the chosen model depend on which run is held out? Every hold-out choice of an identification, side by side.

For an identification's exported runs (``klcontrol identify --export``), each open-loop run at β* in turn is the
fit run and the others (with the closed-loop run) are held out; :func:`select_model` chooses as ``klcontrol fit``
does. The table shows, per choice, each candidate's loop-band figure, its ring and which one wins: with the
validation for control, a candidate that misses the ring cannot win (docs/identification.md).

Usage::

    python -m klcontrol.vae_plant.experiments.selection "$(klcontrol data path identify)" \\
        docs/results/repeatability/dsprites/s0 --out docs/results/selection.json
"""
from __future__ import annotations

import argparse
import json
import os

__all__ = ["read_identification", "holdout_choices", "main"]


def read_identification(folder):
    """An identification's exported runs: ``(plan, read, g)``, ``read(name)`` giving a run's aligned trace and
    ``g`` the static map of its settle runs (as ``klcontrol fit --static`` builds it)."""
    from klcontrol.analysis.identification.models import static_map_from_traces
    from klcontrol.analysis.identification.traces import aligned, read_trace

    with open(os.path.join(folder, "experiment.json"), encoding="utf-8") as fh:
        plan = json.load(fh)["plan"]
    read = lambda name: aligned(read_trace(os.path.join(folder, name + ".csv.gz")))  # noqa: E731
    return plan, read, static_map_from_traces([read(r["name"]) for r in plan["settles"]])


def holdout_choices(folder, beta_star: float = 4.0, window: int = 5) -> list:
    """One :func:`select_model` per open-loop run at ``beta_star`` as the fit run (the others held out).

    Returns
    -------
    list of dict
        ``fit_run``, ``held_out``, ``chosen``, ``ring_period`` (of the chosen), ``warning``, ``candidates``
        (structure, orders, band_rms, passes_band, control_score, ring_period).
    """
    from klcontrol.analysis.identification.control_validation import select_model

    plan, read, g = read_identification(folder)
    at = [r for r in plan["excites"] if r["beta"] == beta_star and r["kind"] in ("open_loop", "closed_loop")]
    out = []
    for fit_run in [r["name"] for r in at if r["kind"] == "open_loop"]:
        held = [r["name"] for r in at if r["name"] != fit_run]
        best, rep = select_model([read(fit_run)], g, [read(n) for n in held], fit_names=[fit_run],
                                 held_out_names=held, window=window)
        name = lambda r: f"{r['structure']}{'' if r['orders'] is None else tuple(r['orders'])}"  # noqa: E731
        ch = rep["candidates"][rep["chosen"]]
        out.append(dict(fit_run=fit_run, held_out=held, chosen=name(ch), ring_period=ch["ring_period"],
                        warning=rep["warning"], model_set=[name(rep["candidates"][i]) for i in rep["model_set"]],
                        candidates=[dict(model=name(r), band_rms=r["band_rms"], passes_band=r["passes_band"],
                                         control_score=r["control_score"], ring_period=r["ring_period"])
                                    for r in rep["candidates"]]))
    return out


def main(argv=None) -> int:
    """Command line: see the module docstring."""
    from klcontrol.fileio import write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="identifications' exported runs (with experiment.json)")
    p.add_argument("--beta-star", type=float, default=4.0)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--out", default=None, help="write the table as JSON")
    a = p.parse_args(argv)
    doc = {}
    for f in a.folders:
        doc[f] = rows = holdout_choices(f, a.beta_star, a.window)
        for r in rows:
            rejected = [c["model"] for c in r["candidates"] if c["passes_band"] is False]
            ring = "no ring" if r["ring_period"] is None else f"ring period {r['ring_period']:.3g}"
            print(f"{f}: fit on {r['fit_run']}: chosen {r['chosen']} ({ring}); model set {len(r['model_set'])}; "
                  f"rejected in the loop band: {len(rejected)} of {len(r['candidates'])}"
                  + (f"; WARNING {r['warning']}" if r["warning"] else ""))
    if a.out:
        write_json(a.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
