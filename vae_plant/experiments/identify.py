"""Operating-point identification of the real β-VAE: settle, then excite around β*.

The stability theorem is about the loop linearised at its equilibrium
``(β*, y* = g(β*))``; the dynamics that matter are those of a *trained*
model around that point, not the initial transient of a fresh network.  The
experiment therefore has two phases per operating point:

1. **settle**: train from scratch at a fixed β* (``FixedBeta``) for
   ``settle_steps`` updates; the final checkpoint is the operating point.
2. **excite** (warm start from that checkpoint, :func:`klcontrol.vae_plant.training.trainer.train`
   with ``init_from``):

   * open loop: a lead-in hold at β*, then a random binary signal between
     ``β*·e^{−δ}`` and ``β*·e^{+δ}`` whose hold times are drawn log-uniformly
     in ``[hold_min, hold_max]`` (a PRBS-like signal whose spectrum covers both
     the fast and the slow time constants); the schedule is a
     :class:`klcontrol.ScheduledBeta`;
   * closed loop: an :class:`klcontrol.IncrementalPI` started at β* with set
     point steps ``y* ± Δ`` (a :class:`klcontrol.Sequence` of constants).

Amplitude rule (:func:`design_amplitude`): ``δ = clip(snr·σ₅₀ / |S|, δ_min,
δ_max)`` with ``σ₅₀`` the standard deviation of the 50-update mean of the
detrended KL over the last ``noise_rows`` rows of the settle run, ``S =
dKL/d ln β`` at β* (from a prior static map, default the shipped CPU fit) and
``snr = 30``.  Why 30: the NRMSE fit % of the 50-update mean cannot exceed
``1 − σ₅₀/σ_y``, and an excitation of log-amplitude δ gives ``σ_y ≈ |S|·δ``;
20 keeps that noise ceiling at 95 %, and the factor 1.5 leaves room for the
slow drift of a still-learning network (≈ 0.3–0.8 nats per 1000 updates at
batch 16 after 4000 updates) and for the level estimated from the lead-in.
``δ_max = 0.5`` (β within ×/÷ 1.65) keeps the excitation local.  Length: the
hold times span ``[5, 500]`` updates, from below the fast time constant seen
in the settled noise's autocorrelation (lag ≈ 5) to above the slow one.

Traces are exported like ``cpu/`` of :mod:`klcontrol.data`: ``NAME.csv.gz`` (the trainer's
``trace.csv``) and ``NAME.config.json`` (settings, provenance, the warm-start
checkpoint and the excitation design).
"""
from __future__ import annotations

import gzip
import math
import os
import shutil

import numpy as np

from klcontrol.analysis.identification.experiment import (
    NOISE_ROWS,
    beta_schedule,
    design_amplitude,
    setpoint_steps,
    settled_noise,
    static_points,
)
from klcontrol.controllers import FixedBeta, IncrementalPI, ScheduledBeta
from klcontrol.fileio import atomic_write, write_json
from klcontrol.vae_plant.experiments.workers import cap_jobs, worker_pool
from klcontrol.vae_plant.training.run_lock import check_settings, read_json, remove_run

__all__ = [
    "settle",
    "excite_open_loop",
    "excite_closed_loop",
    "export_run",
    "plan",
    "run_experiment",
    "settled_origin",
    "check_settled",
]











def _train(out, controller, steps, seed, batch_size, device, init_from=None, command=None, checkpoint_every=0,
           plant=None):
    """One run: klcontrol's dSprites trainer, or with ``plant`` (a ``module:factory`` spec) the protocol runner."""
    if plant is not None:
        from klcontrol.vae_plant.training.plant_runner import run_plant

        return run_plant(out, plant, controller, steps, seed=seed, device=device, batch_size=batch_size,
                         init_from=init_from, checkpoint_every=checkpoint_every, command=command)
    from klcontrol.vae_plant.training.trainer import train

    return train(out, preset="cpu" if device == "cpu" else "paper", controller=controller, steps=steps, seed=seed,
                 batch_size=batch_size, device=device, checkpoint_every=checkpoint_every, progress=False,
                 command=command, init_from=init_from)


def _done(out):
    return os.path.isfile(os.path.join(out, "trace.csv")) and os.path.isdir(os.path.join(out, "checkpoints")) and bool(
        os.listdir(os.path.join(out, "checkpoints")))


_OTHER_SETTINGS = "use another --out (or move that run away) to identify with these settings"


def _reusable(out, ctrl_settings: dict, design=None) -> bool:
    """Whether ``out`` holds a finished run to reuse; one made with other settings (or design) is refused."""
    if not _done(out):
        return False
    if design is not None:
        check_settings(out, design, "excitation.json", None, hint=_OTHER_SETTINGS)
    check_settings(out, ctrl_settings, hint=_OTHER_SETTINGS)
    return True


def _settings(steps, seed, batch_size, plant, controller=None) -> dict:
    """What a reused run's ``config.json`` must hold (the trainer's and the plant runner's common settings)."""
    out = {"steps": int(steps), "seed": int(seed), "plant": plant}
    if plant is None:
        out["batch_size"] = int(batch_size)
    if controller is not None:
        out["controller"] = repr(controller)
    return out


def _start(out, design=None) -> None:
    """Clear klcontrol's own unfinished run in ``out`` (refusing anything else) and record the design first."""
    remove_run(out)  # an unfinished run of klcontrol's; a folder it did not make, or a live one, is refused
    os.makedirs(out, exist_ok=True)
    if design is not None:
        write_json(os.path.join(out, "excitation.json"), design)  # first, so a stopped run keeps its design


def settle(out, beta_star: float, steps: int, seed: int, batch_size: int = 16, device: str = "cpu", command=None,
           plant=None, init_from=None, origin=None):
    """Phase 1: train at the fixed β* (reuses a finished run in ``out``).

    From scratch, or with ``init_from`` (a run directory; ``origin`` its :func:`settled_origin`) from that run's
    last good checkpoint: the user's network, settled at another β.

    Returns
    -------
    str
        The run directory (its final checkpoint is the operating point).
    """
    ctrl = FixedBeta(float(beta_star))
    design = None if origin is None else dict(kind="settle", beta=float(beta_star), settled_from=origin)
    if _reusable(out, _settings(steps, seed, batch_size, plant, ctrl), design):
        return os.fspath(out)
    _start(out, design)
    _train(out, ctrl, steps, seed, batch_size, device, init_from=init_from, command=command, plant=plant)
    return os.fspath(out)


def excite_open_loop(out, settled, beta_star, delta, steps, lead, hold_min, hold_max, seed, batch_size=16,
                     device="cpu", command=None, plant=None, origin=None):
    """Phase 2, open loop: the β schedule of :func:`beta_schedule` from the settled checkpoint.

    Returns
    -------
    str
        The run directory; ``excitation.json`` in it records the design.
    """
    sched, _ = beta_schedule(beta_star, delta, steps - lead, lead, hold_min, hold_max, seed)
    design = dict(kind="open_loop", beta_star=beta_star, delta=delta, lead=lead, hold_min=hold_min,
                  hold_max=hold_max, seed=seed, steps=steps)
    return _excite(out, settled, ScheduledBeta(sched), design, steps, seed, batch_size, device, command, plant, origin)


def excite_closed_loop(out, settled, beta_star, center, step, hold, kp, ki, window, seed, steps=None,
                       levels=(0, 1, -1, 0), batch_size=16, device="cpu", command=None, plant=None, origin=None):
    """Phase 2, closed loop: incremental PI from β* with set-point steps around ``center``.

    Returns
    -------
    str
        The run directory; ``excitation.json`` in it records the design.
    """
    steps = hold * len(levels) if steps is None else steps
    ctrl = IncrementalPI(kp, ki, setpoint_steps(center, step, hold, levels), beta0=beta_star, filter=window)
    design = dict(kind="closed_loop", beta_star=beta_star, center=center, step=step, hold=hold, levels=list(levels),
                  kp=kp, ki=ki, window=window, seed=seed, steps=steps)
    return _excite(out, settled, ctrl, design, steps, seed, batch_size, device, command, plant, origin)


def _excite(out, settled, ctrl, design, steps, seed, batch_size, device, command, plant=None, origin=None):
    if origin is not None:  # started from the user's run: a rerun from another checkpoint must not reuse this one
        design = dict(design, settled_from=origin)
    if _reusable(out, _settings(steps, seed, batch_size, plant), design):
        return os.fspath(out)
    _start(out, design)
    _train(out, ctrl, steps, seed, batch_size, device, init_from=settled, command=command, plant=plant)
    return os.fspath(out)


def export_run(run_dir, dest_dir, name):
    """Copy a run's trace (gzip) and config (with its excitation design) to ``dest_dir/NAME.*``.

    Returns
    -------
    str
        Path of the ``.csv.gz``.
    """
    os.makedirs(dest_dir, exist_ok=True)
    gz = os.path.join(dest_dir, name + ".csv.gz")
    trace = os.path.join(run_dir, "trace.csv")
    with open(trace, "rb") as src, atomic_write(gz, "wb") as raw, gzip.GzipFile(gz, "wb", fileobj=raw,
                                                                                 mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    cfg = read_json(os.path.join(run_dir, "config.json"), "run's config.json")
    with open(trace, "rb") as fh:
        rows = sum(1 for _ in fh) - 1
    cfg["rows_recorded"] = rows
    if rows < cfg.get("settings", {}).get("steps", rows):
        # A run stopped early (time budget): its rows equal those of a run of that many steps (CPU is deterministic).
        cfg["stopped_early"] = dict(rows=rows, note=f"stopped after {rows} of {cfg['settings']['steps']} updates; "
                                    f"a run with steps={rows} and the same seed records the same rows")
    exc = os.path.join(run_dir, "excitation.json")
    if os.path.isfile(exc):
        cfg["excitation"] = read_json(exc, "run's excitation.json")
    ini = cfg.get("settings", {}).get("init_from")
    if ini:
        # Repository-relative, so the provenance does not name this machine's paths.
        ini["checkpoint"] = os.path.join(os.path.basename(os.path.dirname(os.path.dirname(ini["checkpoint"]))),
                                         "checkpoints", os.path.basename(ini["checkpoint"]))
    write_json(os.path.join(dest_dir, name + ".config.json"), cfg, sort_keys=True)
    return gz




# -- the whole experiment ----------------------------------------------------------------------------------


def plan(betas=(2.0, 4.0), main=4.0, settle_steps=4000, fit_steps=2100, val_steps=1200, closed_steps=1200,
         lead=200, hold_min=5, hold_max=500, setpoint_step=2.5, kp=0.01, ki=0.005, window=5, other_betas_excited=False,
         seed=0, relay_steps=600, relay_h=0.04):
    """The runs of :func:`run_experiment`: names, kinds, seeds and lengths (no training).

    Per β in ``betas``: a settle run (seed ``10·β``).  At the ``main`` operating
    point: an open-loop run for fitting (seed 1), two held-out open-loop runs
    (seeds 2 and 4) and a held-out closed-loop run (seed 3; DynamicVAE's PI with
    set point steps of ``setpoint_step`` nats held ``closed_steps/4`` updates).
    With ``other_betas_excited``, a held-out open-loop run at every other β
    (seeds 5, 6, …); otherwise those β give static points only.

    Returns
    -------
    settles : list of dict
    excites : list of dict
    """
    betas = [float(b) for b in betas]
    main = float(main)
    if main not in betas:
        raise ValueError(f"the main operating point {main:g} must be one of the betas {betas}")
    if any(not (math.isfinite(b) and b > 0) for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(f"--betas must be distinct, finite and positive, got {betas}")
    if min(int(fit_steps), int(val_steps)) <= int(lead):
        raise ValueError(f"open-loop runs ({fit_steps}, {val_steps} updates) must be longer than the lead-in ({lead})")
    if int(closed_steps) < 4:
        raise ValueError(f"the closed-loop run needs at least 4 updates (4 set-point levels), got {closed_steps}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    # Seed 0 keeps the seeds of the shipped runs; another seed gives an independent identification (training
    # seeds 10·β + 1000·seed, excitation seeds k + 100·seed).
    s0, e0 = 1000 * int(seed), 100 * int(seed)
    settles = [dict(name=f"settle_b{b:g}", beta=b, seed=int(round(10 * b)) + s0, steps=int(settle_steps)) for b in betas]
    ol = dict(kind="open_loop", lead=int(lead), hold_min=int(hold_min), hold_max=int(hold_max))
    excites = [dict(ol, name=f"ol_b{main:g}_s1", beta=main, seed=1 + e0, steps=int(fit_steps), role="fit"),
               dict(ol, name=f"ol_b{main:g}_s2", beta=main, seed=2 + e0, steps=int(val_steps), role="held_out"),
               dict(kind="closed_loop", name=f"cl_b{main:g}_s3", beta=main, seed=3 + e0, steps=int(closed_steps),
                    step=float(setpoint_step), hold=int(closed_steps) // 4, kp=kp, ki=ki, window=int(window),
                    role="held_out"),
               dict(ol, name=f"ol_b{main:g}_s4", beta=main, seed=4 + e0, steps=int(val_steps), role="held_out")]
    if int(relay_steps):
        if int(relay_steps) < 100 or not 0 < float(relay_h) < 1:
            raise ValueError(f"the relay run needs ≥ 100 updates and 0 < h < 1 (a fraction of β* per update), got "
                             f"{relay_steps}, {relay_h}")
        excites.append(dict(kind="relay", name=f"relay_b{main:g}_s{50 + e0}", beta=main, seed=50 + e0,
                            steps=int(relay_steps), h=float(relay_h) * main, ratio=0.0, window=int(window),
                            role="relay"))
    if other_betas_excited:
        for i, b in enumerate(x for x in betas if x != main):
            excites.append(dict(ol, name=f"ol_b{b:g}_s{5 + i}", beta=b, seed=5 + i + e0, steps=int(val_steps),
                                role="held_out"))
    names = {}
    for j in settles:
        if j["name"] in names:
            raise ValueError(f"--betas {names[j['name']]!r} and {j['beta']!r} share the run directory {j['name']} "
                             "(run names keep 6 significant digits): give betas that differ there")
        names[j["name"]] = j["beta"]
    return settles, excites


def _prior_sensitivity(prior, beta):
    from klcontrol.analysis.identification.fits import load_fit

    g = load_fit(prior).g
    return float(beta * g.derivative(beta))


def _job(args):
    job, root, batch_size, device, sensitivity, command, plant, external = args
    import torch

    torch.set_num_threads(1)
    out = os.path.join(root, job["name"])
    user = external.get("dir") if external else None
    origin = external.get("origin") if external else None
    if job["kind"] == "settle":
        settle(out, job["beta"], job["steps"], job["seed"], batch_size, device, command, plant=plant, init_from=user,
               origin=origin)
        return job["name"], None
    settled = user if user is not None and job["beta"] == external["beta"] else os.path.join(
        root, f"settle_b{job['beta']:g}")
    from klcontrol.analysis.identification.traces import read_trace

    nz = settled_noise(read_trace(os.path.join(settled, "trace.csv")).kl)
    if job["kind"] == "relay":
        from klcontrol.analysis.identification.relay import RelayProbe

        # The trainer runs klcontrol's controllers; the probe runs through the protocol (the dSprites VAE as a
        # TorchPlant started from its trainer's settled checkpoint).
        spec = plant or "klcontrol.vae_plant.training.dsprites_plant:make"
        design = dict(job, setpoint=round(nz["level"], 2), **({"settled_from": origin} if origin else {}))
        if not _reusable(out, _settings(job["steps"], job["seed"], batch_size, spec), design):
            _start(out, design)
            _train(out, RelayProbe(job["ratio"], job["h"], round(nz["level"], 2), job["beta"], job["window"]),
                   job["steps"], job["seed"], batch_size, device, init_from=settled, command=command, plant=spec)
        return job["name"], nz
    if job["kind"] == "open_loop":
        s = sensitivity[job["beta"]]
        delta = DELTA_ONE_LEVEL if s is None else design_amplitude(nz["sigma_mean"], s)
        excite_open_loop(out, settled, job["beta"], delta, job["steps"], job["lead"], job["hold_min"],
                         job["hold_max"], job["seed"], batch_size, device, command, plant=plant, origin=origin)
    else:
        excite_closed_loop(out, settled, job["beta"], round(nz["level"], 2), job["step"], job["hold"], job["kp"],
                           job["ki"], job["window"], job["seed"], job["steps"], batch_size=batch_size, device=device,
                           command=command, plant=plant, origin=origin)
    return job["name"], nz


def _settle_dir(root, job) -> str:
    """The trace of a settle run: the user's run for an external one, else the run in ``root``."""
    return os.path.join(job.get("external") or os.path.join(root, job["name"]), "trace.csv")


def settled_origin(run_dir) -> dict:
    """Where a user's settled run starts the experiment: its path and its last good checkpoint (with its digest).

    Raises
    ------
    ValueError
        When ``run_dir`` has no ``trace.csv`` or no verified checkpoint.
    """
    from klcontrol.vae_plant.training import checkpoint as ckpt

    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise ValueError(f"--settled {run_dir}: not a directory (a finished run: its trace.csv and checkpoints/)")
    if not os.path.isfile(os.path.join(run_dir, "trace.csv")):
        raise ValueError(f"--settled {run_dir}: no trace.csv (the settled level and noise are read from it)")
    path, _ = ckpt.latest_good(run_dir)
    if path is None:
        raise ValueError(f"--settled {run_dir}: no verified checkpoint to start from")
    digest = path + ".sha256"
    sha = open(digest, encoding="utf-8").read().split()[0] if os.path.isfile(digest) else None
    return {"run": run_dir, "checkpoint": os.path.basename(path), "sha256": sha}


def check_settled(run_dir, beta_star: float, rows: int = NOISE_ROWS, min_rows: int = 100) -> dict:
    """The user's settled run's noise, after checking that it ends settled at ``beta_star``.

    Its last ``rows`` updates (all of them when shorter, at least ``min_rows``) must have run at ``beta_star``
    (within 1 %): they give the settled level and noise, as a settle run's do.

    Raises
    ------
    ValueError
        When the trace is shorter than ``min_rows`` or those updates ran at another β.
    """
    from klcontrol.analysis.identification.traces import read_trace

    tr = read_trace(os.path.join(os.fspath(run_dir), "trace.csv"))
    if len(tr) < min_rows:
        raise ValueError(f"--settled {run_dir}: {len(tr)} rows; the settled level and noise need at least its last "
                         f"{min_rows} updates at β* (train it longer at --main)")
    rows = min(int(rows), len(tr))
    b = np.asarray(tr.beta[-rows:], dtype=float)
    if not np.all(np.abs(b / float(beta_star) - 1) <= 0.01):
        raise ValueError(f"--settled {run_dir}: its last {rows} updates ran at β {np.min(b):.4g}–{np.max(b):.4g}, not "
                         f"at --main {beta_star:g}: pass the β it settled at as --main (and among --betas)")
    return settled_noise(tr.kl, rows)


#: The excitation's log-amplitude when a single settled level gives no slope (the amplitude rule's upper bound).
DELTA_ONE_LEVEL = 0.5


def _own_sensitivity(points, betas):
    """``dKL/d ln β`` at each β from the plant's own settled levels (the static map through them)."""
    from klcontrol.analysis.identification.models import fit_static_map

    if len(points) < 2:
        raise ValueError("the amplitude rule needs the slope of the settled KL in β: give at least two settled "
                         "levels (--betas, e.g. --betas 2 4) or a prior fit (--prior FIT.json, a model of another "
                         "VAE, or 'dsprites' for klcontrol's own)")
    g = fit_static_map(points)
    return {b: float(b * g.derivative(b)) for b in betas}


def run_experiment(root, export=None, jobs=2, batch_size=16, device="cpu", prior=None, command=None,
                   progress=print, plant=None, settled=None, **plan_kw):
    """Run the identification experiment of :func:`plan` (finished runs in ``root`` are reused).

    Parameters
    ----------
    root : str
        Directory of the run directories.
    export : str, optional
        Copy every trace there (:func:`export_run`) and write ``experiment.json``
        (the plan, the settled noise and the static points).
    jobs : int
        Runs trained at once (processes, one thread each).
    batch_size, device
        Of every run (batch 16 on a CPU; ``device="cuda"`` for larger batches).
    prior : str, optional
        Fit whose ``g`` gives ``dKL/d ln β`` for the amplitude rule, only when asked for (``"dsprites"``: the
        shipped fit of klcontrol's own VAE, ``cpu/fit.json`` of :mod:`klcontrol.data`). Default: the plant's own
        settle runs (the static map through their settled levels; needs at least two ``betas``); klcontrol's own
        VAE with a single β uses its shipped fit.
    plant : str, optional
        ``"module:factory"`` of a plant of the protocol (:mod:`klcontrol.realplant`); default klcontrol's
        dSprites β-VAE and its trainer.
    settled : str, optional
        The user's finished run, settled at ``main`` (its last 1000 updates at that β): it replaces the settle run
        there, and every other run starts from its last good checkpoint (other ``betas`` settle from it for
        ``settle_steps``). It is only read, never written.
    **plan_kw
        Passed to :func:`plan`.

    Returns
    -------
    dict
        ``plan``, ``noise`` (per settle run), ``static_points``, ``exported`` (paths).
    """
    from klcontrol.analysis.identification.traces import read_trace

    settles, excites = plan(**plan_kw)
    for flag, d in (("--out", root), ("--export", export)):  # checked before hours of training, not after
        if d and os.path.lexists(d) and not os.path.isdir(d):
            raise ValueError(f"{flag} {d} exists and is not a directory")
    external = None
    if settled is not None:
        main = float(plan_kw.get("main", 4.0))
        origin = settled_origin(settled)
        check_settled(settled, main)  # before any training: a wrong run or β costs nothing
        inside = os.path.abspath(root)
        if origin["run"] == inside or origin["run"].startswith(inside + os.sep):
            raise ValueError(f"--settled {settled} is inside --out {root}: give the run from where it is, --out "
                             "elsewhere")
        external = dict(dir=origin["run"], origin=origin, beta=main)
        settles = [j for j in settles if j["beta"] != main]  # the user's run is the settle run at main
    if export and os.path.isfile(os.path.join(export, "config.json")):
        raise ValueError(f"--export {export} is a run's own directory; export to a directory of its own")
    betas = sorted({j["beta"] for j in excites})
    n_levels = len(settles) + (external is not None)
    if prior == "dsprites" or (prior is None and plant is None and n_levels < 2):
        # Asked for, or klcontrol's own VAE with one settled level: its shipped fit is a model of the same VAE.
        from klcontrol import data

        prior = str(data.path("cpu/fit.json"))
    one_level = prior is None and n_levels < 2
    if prior is not None:
        sensitivity = {b: _prior_sensitivity(prior, b) for b in betas}  # read before any training: a typo costs nothing
    elif one_level:
        # One settled level gives no slope and no other model was asked for: the rule's upper bound, said aloud.
        level = " ".join(f"{b:g}" for b in sorted([s["beta"] for s in settles] + ([external["beta"]] if external else [])))
        progress(f"one settled level (--betas {level}) gives no slope for the "
                 f"amplitude rule: δ = {DELTA_ONE_LEVEL} (its upper bound); give two --betas, or --prior FIT")
        sensitivity = {b: None for b in betas}
    if plant is not None:
        from klcontrol.realplant import load_factory

        load_factory(plant)  # a bad --plant fails here, not in a worker
    os.makedirs(root, exist_ok=True)
    command = command if command is not None else "klcontrol identify"
    noise = {}
    with worker_pool(cap_jobs(jobs, len(settles) + len(excites))) as ex:
        phase = [dict(s, kind="settle") for s in settles]
        for name, _ in ex.map(_job, [(j, root, batch_size, device, None, command, plant, external) for j in phase]):
            progress(f"finished {name}")
        if external is not None:  # the user's run stands for the settle run at main (read, never written)
            settles = sorted(settles + [dict(name=f"settle_b{external['beta']:g}", beta=external["beta"],
                                             external=external["dir"])], key=lambda j: j["beta"])
        if prior is None and not one_level:
            sensitivity = _own_sensitivity(static_points(
                [(tr.beta, tr.kl) for tr in (read_trace(_settle_dir(root, s)) for s in settles)]), betas)
        for name, _ in ex.map(_job, [(j, root, batch_size, device, sensitivity, command, plant, external)
                                     for j in excites]):
            progress(f"finished {name}")
    settled_traces = [read_trace(_settle_dir(root, s)) for s in settles]
    for s, tr in zip(settles, settled_traces):
        noise[s["name"]] = dict(beta=s["beta"], **settled_noise(tr.kl))
    points = static_points([(tr.beta, tr.kl) for tr in settled_traces])
    relays = []
    for j in (j for j in excites if j["kind"] == "relay"):
        from klcontrol.analysis.identification.relay import relay_critical_gain

        c = read_json(os.path.join(root, j["name"], "excitation.json"), "run's excitation.json")["setpoint"]
        tr = read_trace(os.path.join(root, j["name"], "trace.csv"))
        try:
            r = relay_critical_gain(tr.beta, tr.kl, j["ratio"], j["h"], c, j["window"])
        except ValueError as exc:
            r = dict(error=str(exc))
        relays.append(dict(name=j["name"], seed=j["seed"], ratio=j["ratio"], h=j["h"], setpoint=c, **r))
    result = dict(plan=dict(settles=settles, excites=excites, batch_size=batch_size, device=device, plant=plant,
                            amplitude_rule=dict(source=prior or ("one settled level: δ = "
                                                                 f"{DELTA_ONE_LEVEL}" if one_level else "own settle runs"),
                                                sensitivity={f"{b:g}": v for b, v in sensitivity.items()})),
                  noise=noise, static_points=points, relay=relays, exported=[])
    if external is not None:
        result["plan"]["settled_from"] = external["origin"]
    if export:
        for j in settles + excites:
            result["exported"].append(export_run(j.get("external") or os.path.join(root, j["name"]), export, j["name"]))
        os.makedirs(export, exist_ok=True)
        write_json(os.path.join(export, "experiment.json"), {k: v for k, v in result.items() if k != "exported"})
    return result
