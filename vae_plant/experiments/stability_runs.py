"""Verify predicted loop stability on the real β-VAE.

Each run warm-starts from a settled checkpoint at β* (:mod:`klcontrol.vae_plant.experiments.identify`)
and closes the loop with DynamicVAE's incremental PI at a constant set point
``C`` (the settled KL), its β started at ``kick·β*`` so that the loop has a
transient to damp or amplify.  :func:`klcontrol.analysis.verdicts.observed.observed_stability`
decides from the trace; :func:`summarize` puts the observed verdicts beside
the predictions of any number of plant models (``klcontrol.analysis.stability.spectral_radius``
with ``plant=``, linearised at ``C``).
"""
from __future__ import annotations

import os

from klcontrol.fileio import write_json
from klcontrol.vae_plant.experiments.workers import cap_jobs, worker_pool
from klcontrol.vae_plant.training.run_lock import check_settings, read_json

__all__ = ["gain_run", "run_gains", "summarize", "ray_gains", "observed_brackets", "verify_stability"]


def _name(kp, ki, window, seed):
    return f"pi_kp{kp:g}_ki{ki:g}_T{window}_s{seed}"


def gain_run(out, settled, beta_star, setpoint, kp, ki, window=5, seed=0, steps=600, kick=1.25, batch_size=16,
             device="cpu", command=None, plant=None):
    """One closed-loop run from the settled checkpoint (reuses a finished run in ``out``).

    Returns
    -------
    str
        The run directory (``gain.json`` records the design).
    """
    from klcontrol.controllers import IncrementalPI
    from klcontrol.setpoints import Constant
    from klcontrol.vae_plant.experiments.identify import _reusable, _settings, _start, _train

    ctrl = IncrementalPI(kp, ki, Constant(setpoint), beta0=kick * beta_star, filter=window)
    design = dict(kp=kp, ki=ki, window=window, delay=0, seed=seed, steps=steps, kick=kick, beta_star=beta_star,
                  setpoint=setpoint)
    if _reusable(out, _settings(steps, seed, batch_size, plant, ctrl)):
        check_settings(out, design, "gain.json", None, hint="use another --out to run these gains")
        return os.fspath(out)
    _start(out)  # clears klcontrol's own unfinished run; a folder it did not make, or a live one, is refused
    _train(out, ctrl, steps, seed, batch_size, device, init_from=settled, command=command, plant=plant)
    write_json(os.path.join(out, "gain.json"), design)
    return os.fspath(out)


def _job(args):
    import torch

    torch.set_num_threads(1)
    root, settled, beta_star, setpoint, g, steps, kick, batch_size, device, command, plant = args
    out = os.path.join(root, _name(g["kp"], g["ki"], g["window"], g["seed"]))
    return gain_run(out, settled, beta_star, setpoint, g["kp"], g["ki"], g["window"], g["seed"], steps, kick,
                    batch_size, device, command, plant)


def ray_gains(ratio, ki_values, window=5, seeds=(0,)):
    """Gain sets on the ray ``Kp = ratio·Ki`` (one dict per Ki and seed)."""
    return [dict(kp=float(ratio) * float(k), ki=float(k), window=int(window), seed=int(s))
            for k in ki_values for s in seeds]


def run_gains(root, settled, beta_star, setpoint, gains, steps=600, kick=1.25, jobs=2, batch_size=16, device="cpu",
              command=None, plant=None):
    """Run every gain set (dicts ``kp, ki, window, seed``); returns the run directories."""
    os.makedirs(root, exist_ok=True)
    args = [(root, settled, beta_star, setpoint, g, steps, kick, batch_size, device, command, plant) for g in gains]
    with worker_pool(cap_jobs(jobs, len(args))) as ex:
        return list(ex.map(_job, args))


def summarize(run_dirs, models, names=("identified", "first_order"), export=None, skip=100):
    """Observed and predicted verdicts of each run.

    Parameters
    ----------
    run_dirs : sequence of str
        Runs of :func:`gain_run` (or exported ``.csv.gz`` with a ``.config.json`` beside).
    models : sequence
        Plant objects for ``klcontrol.analysis.stability`` (``plant=``), one per name.
    names : sequence of str
        Keys ``predicted_stable_<name>`` and ``spectral_radius_<name>``.
    export : str, optional
        Copy the traces there and name them in ``trace``.

    Returns
    -------
    list of dict
        ``kp, ki, window, delay, seed, trace, predicted_stable_<name>, spectral_radius_<name>,
        observed_stable, observed`` (the criterion's figures).
    """
    from klcontrol.analysis.identification.traces import read_trace
    from klcontrol.analysis.stability import spectral_radius
    from klcontrol.analysis.verdicts.observed import observed_stability
    from klcontrol.vae_plant.experiments.identify import export_run

    rows = []
    for d in run_dirs:
        g = read_json(os.path.join(d, "gain.json"), "run's gain.json")
        tr = read_trace(os.path.join(d, "trace.csv"))
        obs = observed_stability(tr.beta, g["beta_star"], skip=skip)
        name = os.path.basename(os.path.normpath(d))
        trace = export_run(d, export, name) if export else os.path.join(d, "trace.csv")
        row = dict(kp=g["kp"], ki=g["ki"], window=g["window"], delay=g["delay"], seed=g["seed"], trace=trace,
                   steps=len(tr), setpoint=g["setpoint"], beta_star=g["beta_star"])
        for n, m in zip(names, models):
            r = float(spectral_radius(g["kp"], g["ki"], plant=m, setpoint=g["setpoint"], window=g["window"],
                                      delay=g["delay"]))
            row[f"spectral_radius_{n}"] = r
            row[f"predicted_stable_{n}"] = bool(r < 1)
        row["observed_stable"] = bool(obs["stable"])
        row["observed"] = obs
        rows.append(row)
    return rows


def observed_brackets(rows, tol=1e-9):
    """Per ray ``Kp/Ki``: the observed critical ``Ki`` bracket from the runs on it.

    Returns
    -------
    dict ratio → dict
        ``stable_below`` (largest Ki observed stable below every unstable one),
        ``unstable_from`` (smallest Ki observed unstable), ``monotone`` (no stable
        run above an unstable one), ``n`` runs.
    """
    rays: dict[float, list] = {}
    for r in rows:
        ratio = round(r["kp"] / r["ki"], 9) if r["ki"] else float("inf")
        rays.setdefault(ratio, []).append(r)
    out = {}
    for ratio, rs in sorted(rays.items()):
        uns = [r["ki"] for r in rs if not r["observed_stable"]]
        sta = [r["ki"] for r in rs if r["observed_stable"]]
        first_u = min(uns) if uns else None
        below = [k for k in sta if first_u is None or k < first_u - tol]
        mixed = sorted({k for k in uns if any(abs(k - j) <= tol for j in sta)})
        out[ratio] = dict(stable_below=max(below) if below else None, unstable_from=first_u, mixed=mixed,
                          monotone=not (first_u is not None and any(k > first_u + tol for k in sta)), n=len(rs))
    return out


def verify_stability(out, settled, beta_star, fits, rays=(), gains=(), *, setpoint=None, window=5, seeds=(0,),
                     steps=600, kick=1.25, jobs=2, batch_size=16, device="cpu", export=None, summary=None,
                     plot=None, command=None, plant=None) -> dict:
    """Run gain sets on the real β-VAE and put the observed verdicts beside the fits' predictions.

    What ``klcontrol verify-stability`` does, in one call.

    Parameters
    ----------
    out : str
        Root of the run directories.
    settled : str
        Settled run (``klcontrol identify``) every gain run warm-starts from.
    beta_star : float
        β of the settled run.
    fits : dict
        Name → path of a saved fit (:func:`klcontrol.analysis.identification.fits.load_fit`) whose predictions are compared.
    rays : sequence of sequences
        ``(ratio, ki, ki, …)``: gains on the ray ``Kp = ratio·Ki`` (:func:`ray_gains`).
    gains : sequence of (kp, ki, seed)
        Further single gain sets.
    setpoint : float, optional
        Constant set point (default: the settled run's KL level, rounded to 0.01 nats).
    window, seeds, steps, kick, jobs, batch_size, device, export, command
        As in :func:`run_gains` and :func:`summarize`.
    plant : str, optional
        ``"module:factory"`` of a plant of the protocol (:mod:`klcontrol.realplant`) whose settle run is
        ``settled`` (default: klcontrol's dSprites β-VAE).
    summary, plot : str, optional
        Write the summary (JSON) and the stability-plane figure (PNG).

    Returns
    -------
    dict
        ``setpoint``, ``rows`` (one per run, :func:`summarize`), ``predicted_critical_ki`` and ``predicted_period`` (fit name →
        ratio → Ki) and ``observed_critical_ki`` (:func:`observed_brackets`).

    Raises
    ------
    ValueError
        A ray with no Ki, no gains at all.
    """
    import os

    from klcontrol.analysis.identification.experiment import settled_noise
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.identification.traces import read_trace
    from klcontrol.analysis.stability import critical_gain
    from klcontrol.fileio import write_json

    models = [(n, load_fit(p)) for n, p in fits.items()]
    for r in rays:
        if len(r) < 2:
            raise ValueError(f"--ray takes a ratio and at least one Ki, got {list(r)}")
    if not rays and not gains:
        raise ValueError("give at least one --ray or --gain")
    c = setpoint
    if c is None:
        c = round(settled_noise(read_trace(os.path.join(settled, "trace.csv")).kl)["level"], 2)
    todo = [g for r in rays for g in ray_gains(r[0], r[1:], window, seeds)]
    todo += [dict(kp=kp, ki=ki, window=window, seed=int(sd)) for kp, ki, sd in gains]
    if plant is not None:
        from klcontrol.realplant import load_factory

        load_factory(plant)  # a bad --plant fails here, not in a worker
    dirs = run_gains(out, settled, beta_star, c, todo, steps, kick, jobs, batch_size, device, command=command,
                     plant=plant)
    rows = summarize(dirs, [m for _, m in models], [n for n, _ in models], export)
    ratios = sorted({r[0] for r in rays} | {kp / ki for kp, ki, _ in gains if ki > 0})
    crit, periods = {}, {}
    for n, m in models:
        found = {f"{r:g}": critical_gain(r, plant=m, setpoint=c, window=window, ki_min=1e-3) for r in ratios}
        crit[n] = {k: (v.ki if v is not None else None) for k, v in found.items()}
        periods[n] = {k: (v.period if v is not None and v.period != float("inf") else None) for k, v in found.items()}
    observed = {f"{k:g}": v for k, v in observed_brackets(rows).items()}
    if summary:
        os.makedirs(os.path.dirname(os.path.abspath(summary)), exist_ok=True)
        write_json(summary, dict(setpoint=c, beta_star=beta_star,
                                 fits={n: os.path.relpath(p) for n, p in fits.items()},
                                 criterion="klcontrol.analysis.verdicts.observed.observed_stability (defaults)",
                                 runs=rows, predicted_critical_ki=crit, predicted_period=periods,
                                 observed_critical_ki=observed), indent=1)
    if plot:
        from klcontrol.analysis.identification.validation import plot_stability_plane

        plot_stability_plane(rows, dict(models), c, plot, window)
    return dict(setpoint=c, rows=rows, predicted_critical_ki=crit, predicted_period=periods, observed_critical_ki=observed,
                names=[n for n, _ in models])
