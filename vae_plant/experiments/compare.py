"""Train several controllers over several seeds on dSprites and tabulate what they achieve.

A *method* is a controller preset (:data:`klcontrol.registry.PRESETS`) with optional parameter
overrides, written ``name[:key=value,...]``, e.g. ``dynamicvae:kp=2.77,ki=8.6e-4,label=tuned``.
A *budget* fixes batch size, number of updates, seeds and evaluation sizes:

``paper``
    Batch 128, 800 000 updates (DynamicVAE's dSprites schedule reaches 20 nats at 780 000), five
    seeds, metrics on all 737 280 images, Higgins' β-VAE score at its paper sizes. GPU-hours.
``cpu``
    Batch 16, 5 000 updates, three seeds, metrics on 20 000 images, a reduced β-VAE score. About
    47 minutes on two CPU cores (``jobs=2``) for the seven default methods.
``tiny``
    Seconds; for tests.

Budgets other than ``paper`` *compress* every set-point schedule by ``800 000 / steps``
(:meth:`klcontrol.setpoints.SetPoint.compressed`), so each method runs through its whole annealing
within the budget.  Gains, β(0) and the plant's speed (Adam, lr 1e-4) are not compressed, so a
short budget is a different experiment from the paper's, not a cheaper copy of it: DynamicVAE's
integrator needs about ``β(0) / (Ki·C)`` updates to bring β down from 150.

Each run lives in ``OUT/runs/<label>/seed<k>`` (a normal ``klcontrol train`` directory, so it can
be evaluated, resumed or plotted on its own) with its ``metrics.json``; finished runs are reused,
so an interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from klcontrol.controllers import ScheduledBeta
from klcontrol.fileio import save_figure, write_json, write_text
from klcontrol.filters import moving_mean
from klcontrol.papers import DYNAMICVAE_DSPRITES_STEPS
from klcontrol.registry import PRESETS, make_preset
from klcontrol.vae_plant.experiments.workers import cap_jobs, sigterm_as_interrupt, worker_pool

__all__ = ["Budget", "BUDGETS", "DEFAULT_METHODS", "PAPER_STEPS", "Method", "parse_methods", "tracking",
           "compare", "CompareResult", "aggregate", "run_ray", "ray_resources", "EXECUTORS", "markdown_tables", "paper_table_markdown",
           "PAPER_TABLES"]

#: Length of the paper's dSprites training, the reference for schedule compression.
PAPER_STEPS = DYNAMICVAE_DSPRITES_STEPS

#: The paper's rows (DynamicVAE, ICLR 2021 submission, Tables 1–2; RMIG, 5 seeds):
#: method → (posX, posY, shape, scale, orientation, RMIG mean, RMIG std).
PAPER_TABLES = {
    "DynamicVAE (KL=20)": (0.7166, 0.7179, 0.2004, 0.6530, 0.1024, 0.4781, 0.0172),
    "ControlVAE (KL=20)": (0.6802, 0.6597, 0.0956, 0.6040, 0.1081, 0.4295, 0.0865),
    "FactorVAE (γ=10)": (0.7482, 0.7276, 0.1383, 0.6262, 0.1412, 0.4763, 0.0513),
    "β-VAE_B (γ=100)": (0.5666, 0.5763, 0.4353, 0.3814, 0.0631, 0.4045, 0.0345),
    "β-VAE_H (β=4)": (0.1635, 0.1047, 0.1391, 0.3958, 0.0127, 0.1632, 0.0626),
    "VAE": (0.0359, 0.0243, 0.0116, 0.1507, 0.0039, 0.0452, 0.0326),
    "DynamicVAE-P": (0.7376, 0.7317, 0.0992, 0.6400, 0.1120, 0.4641, 0.0240),
    "DynamicVAE-step": (0.7209, 0.7143, 0.0664, 0.6218, 0.1543, 0.4555, 0.0355),
    "DynamicVAE-t": (0.7152, 0.7110, 0.0997, 0.6267, 0.1322, 0.4570, 0.0182),
}

DEFAULT_METHODS = ("fixed", "capacity", "controlvae", "dynamicvae", "dynamicvae-p", "dynamicvae-step",
                   "dynamicvae-t")

#: Table names of the presets (the paper's, with this toolkit's settings), from :attr:`klcontrol.registry.Preset.display`.
DISPLAY = {name: p.display for name, p in PRESETS.items()}


@dataclass(frozen=True)
class Budget:
    """Training and evaluation sizes of a comparison.

    Attributes
    ----------
    batch_size, steps, seeds : int
        Per run; seeds are ``0 … seeds−1``.
    n_images : int
        Images for MIG, β-TCVAE MIG and RMIG (0 = all).
    beta_vae : dict or None
        Keyword arguments of the β-VAE score (``None``: not computed).
    compress : bool
        Compress set-point schedules to the budget (``PAPER_STEPS / steps``).
    checkpoint_every : int
        Steps between checkpoints of each run (0: only the final one).
    """

    batch_size: int
    steps: int
    seeds: int
    n_images: int
    beta_vae: dict | None = None
    compress: bool = True
    checkpoint_every: int = 0


BUDGETS = {
    "tiny": Budget(batch_size=8, steps=40, seeds=2, n_images=2000,
                   beta_vae=dict(batch_size=4, num_train=200, num_eval=100)),
    "cpu": Budget(batch_size=16, steps=5000, seeds=3, n_images=20000,
                  beta_vae=dict(batch_size=16, num_train=2000, num_eval=1000)),
    "paper": Budget(batch_size=128, steps=PAPER_STEPS, seeds=5, n_images=0, beta_vae={}, compress=False,
                    checkpoint_every=50_000),
}

_NUMBER_KEYS = ("kp", "ki", "beta0", "beta_min", "beta_max", "beta", "gamma")


@dataclass(frozen=True)
class Method:
    """A controller preset with parameter overrides and a label.

    Attributes
    ----------
    preset : str
        Name in :data:`klcontrol.registry.PRESETS`.
    overrides : dict
        Parameter → value passed to :meth:`klcontrol.controllers.Controller.replace`.
    label : str
        Directory and table name (default: the spec).
    """

    preset: str
    overrides: dict = field(default_factory=dict)
    label: str = ""

    @classmethod
    def parse(cls, spec: str) -> "Method":
        """Parse ``name[:key=value,...]`` (keys: controller parameters and ``label``).

        Raises
        ------
        ValueError
            Unknown preset, malformed pair, non-numeric value or a parameter the
            preset's controller does not have.
        """
        name, _, rest = str(spec).partition(":")
        if name not in PRESETS:
            raise ValueError(f"unknown method {name!r} in {spec!r}; choose one of {', '.join(PRESETS)}")
        overrides, label = {}, ""
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"malformed {item!r} in method {spec!r}; write key=value")
            if key == "label":
                label = value
                continue
            try:
                overrides[key] = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in method {spec!r} is not a number") from None
        m = cls(name, overrides, label or spec)
        if any(c in m.label for c in "/\\") or m.label in (".", ".."):
            raise ValueError(f"label {m.label!r} cannot name a directory")
        make_preset(name).replace(**overrides)  # names a parameter the controller lacks
        return m

    @property
    def display(self) -> str:
        """Name for tables and legends."""
        if self.label != self.preset:
            return self.label
        return DISPLAY.get(self.preset, self.preset)

    def controller(self, compress: float = 1.0):
        """A fresh controller: the preset, its overrides, its set point compressed by ``compress``."""
        ctrl = make_preset(self.preset).replace(**self.overrides)
        if compress != 1.0 and ctrl.setpoint is not None:
            ctrl = ctrl.replace(setpoint=ctrl.setpoint.compressed(compress))
        if compress != 1.0 and isinstance(ctrl, ScheduledBeta):  # an open-loop β schedule (cyclical) runs faster too
            ctrl = ScheduledBeta(ctrl.schedule.compressed(compress), ctrl.setpoint, ctrl.filter, ctrl.y0)
        return ctrl


def parse_methods(specs) -> list:
    """Methods from specs; ``ValueError`` for an empty list or two methods with one label."""
    methods = [s if isinstance(s, Method) else Method.parse(s) for s in specs]
    if not methods:
        raise ValueError("no methods to compare")
    labels = [m.label for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"methods share the label(s) {', '.join(dup)}; add label=... to tell them apart")
    return methods


def tracking(trace: dict, smooth: int = 25, measured: str = "kl") -> dict:
    """How a run's measured loss followed its set point and how much β jittered.

    Parameters
    ----------
    trace : dict
        ``step, beta, kl, recon, setpoint`` arrays of a run (``RunResult.trace``).
    smooth : int
        Centred moving-average window applied to the measured loss first, so minibatch noise
        is not counted as overshoot.
    measured : {"kl", "recon"}
        What the controller tracks (:attr:`klcontrol.controllers.Controller.measures`; GECO: the
        reconstruction loss).

    Returns
    -------
    dict
        ``tracking_rmse`` (nats, smoothed measured loss − C over the run), ``overshoot`` (nats:
        largest excess of the smoothed loss over C after it first reaches C),
        ``beta_jitter`` (standard deviation of β(t+1) − β(t)), ``final_beta`` (mean over the
        last 5 % of the run: a relay's effective β); NaN tracking figures for a run without a set point.
    """
    from klcontrol.simulate import Trace, response_metrics

    beta = np.asarray(trace["beta"], dtype=float)
    kl = np.asarray(trace[measured], dtype=float)
    c = np.asarray(trace["setpoint"], dtype=float)
    out = {"beta_jitter": float(np.std(np.diff(beta))) if beta.size > 1 else math.nan,
           "final_beta": float(np.mean(beta[-max(1, beta.size // 20):]))}
    if not np.all(np.isfinite(c)) or kl.size < 2:
        return {"tracking_rmse": math.nan, "overshoot": math.nan, **out}
    # Centred and edge-padded, so the ends are averages of real samples, not of zeros.
    y = moving_mean(kl, max(1, int(smooth)), mode="same")
    m = response_metrics(Trace(step=np.asarray(trace["step"]), beta=beta, kl=kl, setpoint=c, state=y))
    return {"tracking_rmse": m["tracking_rmse"], "overshoot": m["overshoot"], **out}


def _trace_figures(t, measured="kl") -> dict:
    """Reconstruction and KL over the last 5 % of the run, and :func:`tracking` of what the controller measures."""
    tail = max(1, len(t["recon"]) // 20)
    return {"recon": float(np.mean(t["recon"][-tail:])), "kl": float(np.mean(t["kl"][-tail:])),
            **tracking(t, measured=measured)}


def _run_dir(out, label, seed):
    return os.path.join(out, "runs", label, f"seed{seed}")


def _check_reuse(run_dir, ctrl, job):
    """Refuse to reuse a run directory that holds another experiment under the same label."""
    from klcontrol.vae_plant.training.run_lock import check_settings

    check_settings(run_dir, {"controller": repr(ctrl), "batch_size": job["batch_size"], "seed": job["seed"]},
                   hint="give the method another label=… or use another --out")


def _run_job(job: dict) -> dict:
    """Train (or reuse) one run and evaluate it; executed in a worker process."""
    import torch

    from klcontrol.vae_plant.metrics.evaluation import disentanglement
    from klcontrol.vae_plant.training import checkpoint as ckpt
    from klcontrol.vae_plant.training.presets import first_update
    from klcontrol.vae_plant.training.run_lock import read_json
    from klcontrol.vae_plant.training.trace_log import read_trace_csv
    from klcontrol.vae_plant.training.trainer import load_run, train

    if job["device"] == "cpu" and job["threads"]:
        torch.set_num_threads(job["threads"])
    method = Method(**job["method"])
    run_dir = _run_dir(job["out"], method.label, job["seed"])
    ctrl = method.controller(job["compress"])
    _check_reuse(run_dir, ctrl, job)
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics_path):
        row = read_json(metrics_path, "cached metrics file")
        if not isinstance(row, dict):
            raise ValueError(f"{metrics_path}: not the metrics of a run (a JSON object); move it away and run again")
        if row.get("steps") == job["steps"] and row.get("evaluation") == job["evaluation"]:
            # Only the encoder metrics are cached; the trace figures are cheap and always recomputed.
            row.update(_trace_figures(read_trace_csv(os.path.join(run_dir, "trace.csv")), ctrl.measures))
            return row
    t0 = time.perf_counter()
    prime = first_update(method.preset)
    done = os.path.isfile(ckpt.checkpoint_path(run_dir, job["steps"]))
    if done:
        res = load_run(run_dir, device=job["device"])
    else:
        try:
            ckpt.latest(run_dir)
            resume = True
        except ValueError:
            # Interrupted before its first checkpoint: nothing to continue from.
            from klcontrol.vae_plant.training.run_lock import remove_run

            remove_run(run_dir)  # klcontrol's own unfinished run only; a user's folder is refused
            resume = False
        res = train(run_dir, preset=job["budget"], controller=ctrl,
                    steps=job["steps"], seed=job["seed"], batch_size=job["batch_size"], device=job["device"],
                    checkpoint_every=job["checkpoint_every"], resume=resume, progress=False, prime=prime,
                    command=job["command"])
    train_s = time.perf_counter() - t0
    row = {"label": method.label, "display": method.display, "preset": method.preset,
           "overrides": method.overrides, "seed": job["seed"], "steps": job["steps"], "run_dir": run_dir,
           **_trace_figures(res.trace, ctrl.measures)}
    t1 = time.perf_counter()
    row.update(disentanglement(res.model, n_images=job["evaluation"]["n_images"], seed=0,
                               beta_vae=job["evaluation"]["beta_vae"]))
    row.update(evaluation=job["evaluation"], train_seconds=None if done else train_s,
               eval_seconds=time.perf_counter() - t1)
    write_json(metrics_path, row)  # atomic: a full disk or a kill leaves no half file to block the next compare
    return row


#: Columns of the tables: key → (header, digits).
METRIC_COLUMNS = {
    "recon": ("recon", 2), "kl": ("KL", 2), "mig": ("MIG", 3), "mig_tcvae": ("β-TCVAE MIG", 3),
    "rmig": ("RMIG", 3), "beta_vae_score": ("β-VAE score", 3),
}
FACTOR_COLUMNS = ("posX", "posY", "shape", "scale", "orientation")
TRACKING_COLUMNS = {
    "tracking_rmse": ("tracking RMSE (nats)", 3), "overshoot": ("overshoot (nats)", 3),
    "beta_jitter": ("β jitter (std Δβ)", 4), "final_beta": ("final β (last 5 %)", 3),
}


def _values(rows, key):
    out = []
    for r in rows:
        v = r["rmig_per_factor"].get(key) if key in FACTOR_COLUMNS else r.get(key)
        out.append(math.nan if v is None else float(v))
    return np.asarray(out)


def aggregate(rows) -> dict:
    """Mean and standard deviation (ddof 1) over seeds of every column, per method label.

    Returns
    -------
    dict
        label → {"display", "seeds", column → (mean, std)} in first-seen order.
    """
    table = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["label"] == label]
        entry = {"display": rs[0]["display"], "seeds": sorted(r["seed"] for r in rs)}
        for key in (*METRIC_COLUMNS, *FACTOR_COLUMNS, *TRACKING_COLUMNS):
            v = _values(rs, key)
            v = v[np.isfinite(v)]
            entry[key] = ((float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0) if v.size
                          else (math.nan, math.nan))
        table[label] = entry
    return table


def _cell(ms, digits):
    m, s = ms
    if not math.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_tables(table: dict) -> str:
    """The aggregated table as three Markdown tables: metrics, per-factor RMIG, tracking."""
    def render(cols):
        head = "| method | " + " | ".join(h for h, _ in cols.values()) + " |"
        sep = "|---|" + "---|" * len(cols)
        body = ["| " + e["display"] + " | " + " | ".join(_cell(e[k], d) for k, (_, d) in cols.items()) + " |"
                for e in table.values()]
        return "\n".join([head, sep, *body])

    factors = {k: (k, 3) for k in FACTOR_COLUMNS}
    factors["rmig"] = ("RMIG", 3)
    return "\n\n".join([render(METRIC_COLUMNS), render(factors), render(TRACKING_COLUMNS)]) + "\n"


def paper_table_markdown() -> str:
    """DynamicVAE's published Tables 1–2 (RMIG per factor, 5 seeds) in the layout of :func:`markdown_tables`."""
    head = "| method (published) | " + " | ".join(FACTOR_COLUMNS) + " | RMIG |"
    rows = [f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals[:5]) + f" | {vals[5]:.4f} ± {vals[6]:.4f} |"
            for name, vals in PAPER_TABLES.items()]
    return "\n".join([head, "|---|" + "---|" * 6, *rows]) + "\n"


@dataclass
class CompareResult:
    """Outcome of :func:`compare`.

    Attributes
    ----------
    out : str
        Output directory.
    rows : list of dict
        One per run (label, seed, recon, KL, metrics, tracking figures, timings).
    table : dict
        :func:`aggregate` of the rows.
    settings : dict
        Budget, methods, device and command.
    figures : dict
        Name → PNG path.
    """

    out: str
    rows: list
    table: dict
    settings: dict
    figures: dict

    def markdown(self) -> str:
        """The tables in Markdown (as written to ``OUT/table.md``)."""
        return markdown_tables(self.table)


#: Where :func:`compare` runs its training jobs.
EXECUTORS = ("process", "ray")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("executor 'ray' needs Ray, which is not installed; install the extra with "
                          "pip install 'klcontrol[ray]' (or pip install ray)") from None
    return ray


def ray_resources(device: str, gpus_per_run: float | None = None, threads: int = 1) -> dict:
    """What each Ray task of a comparison requests: ``cpus_per_run`` (= torch threads) and ``gpus_per_run``.

    Default: one GPU per run on CUDA, none on CPU.
    """
    gpus = gpus_per_run if gpus_per_run is not None else (1.0 if device == "cuda" else 0.0)
    return {"cpus_per_run": int(threads), "gpus_per_run": float(gpus)}


#: Seconds :func:`run_ray` waits for a Ray address to answer before giving up (Ray itself retries for ever).
RAY_CONNECT_TIMEOUT_S = 10.0


def _probe_ray(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse an address ``host:port`` (or ``ray://host:port``) where nothing accepts a connection in ``timeout``."""
    import socket

    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        return  # "auto", "local": Ray looks the cluster up itself, and fails at once when there is none
    try:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"--address {address!r}: the port must be a number from 1 to 65535") from None
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ValueError(f"--address {address}: no Ray cluster answers there within {timeout:g} s ({why}); start "
                         "it (ray start --head) or check the address, or leave --address out for a local Ray") from None


def _init_local_ray(ray) -> str:
    """Start a local Ray for this process, reachable from this machine only; returns its private folder.

    Every listener of the instance (GCS, raylet and object manager, workers, agents) binds 127.0.0.1; no dashboard
    is started; Ray's session files sit in a folder of this user's alone and the files it writes are private.

    Parameters
    ----------
    ray : module
        The imported ``ray``.

    Returns
    -------
    str
        The folder holding Ray's session files; :func:`_stop_local_ray` removes it after the shutdown.

    Raises
    ------
    ValueError
        This Ray still chose an address other than loopback for its node (it is shut down first).
    """
    import tempfile

    try:
        from ray._private import ray_constants
    except ImportError:  # another layout: the loopback check below still guards
        ray_constants = None
    # Ray swaps a loopback node address for the machine's unless it runs as a single-machine instance (its
    # macOS/Windows mode, ENABLE_RAY_CLUSTER false); every gRPC server listens on the node address, so this one
    # switch, read at ray.init only, keeps them all on 127.0.0.1.
    single = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    try:  # where Ray itself would put its folder (/tmp on macOS too: its socket paths must stay short)
        from ray._common.utils import get_default_system_temp_dir

        base = get_default_system_temp_dir()
    except ImportError:
        base = None
    private = tempfile.mkdtemp(prefix="klc-", dir=base)  # mode 700: Ray makes its own temp folder world-writable
    token = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    old = os.umask(0o077)  # inherited by Ray's processes: the token, session and log files readable by this user
    try:
        if single is not None:
            ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(log_to_driver=False, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=os.path.join(private, "ray"))
    except BaseException:
        _stop_local_ray(ray, private)
        raise
    finally:
        os.umask(old)
        if single is not None:
            ray_constants.ENABLE_RAY_CLUSTER = single
    node = ray.util.get_node_ip_address()
    if not (node.startswith("127.") or node == "::1"):
        _stop_local_ray(ray, private)
        raise ValueError(f"Ray {ray.__version__} put its local node on {node}, not on loopback, so it would listen "
                         "on every interface; klcontrol does not start it so: use --executor process, or --address "
                         "of a Ray you started and secured yourself")
    try:
        mode = os.stat(token).st_mode
    except OSError:
        return private
    if mode & 0o077:
        import warnings

        warnings.warn(f"Ray's token {token} is readable by other users (mode {mode & 0o777:o}): chmod 600 it",
                      RuntimeWarning, stacklevel=3)
    return private


def _stop_local_ray(ray, private) -> None:
    """Shut down the local Ray :func:`_init_local_ray` started and remove its private folder (klcontrol's own)."""
    import shutil

    try:
        ray.shutdown()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def run_ray(jobs_list, *, address=None, gpus_per_run=0.0, cpus_per_run=1, on_done=None) -> list:
    """Run compare jobs as Ray tasks, one task per run, and return their rows in job order.

    Parameters
    ----------
    jobs_list : list of dict
        Jobs as built by :func:`compare`.
    address : str, optional
        Cluster address for ``ray.init`` (default: start a local instance, or use the one this process
        already joined).
    gpus_per_run, cpus_per_run : float
        Resources each task requests, so Ray places at most as many runs on a node as it has GPUs/CPUs.
    on_done : callable, optional
        Called with each row as its task finishes (progress).

    Returns
    -------
    list of dict
        One row per job, in the order of ``jobs_list``.

    Notes
    -----
    A run's directory is its cache (:func:`_run_job` reuses a finished run), so a comparison that
    stopped half way continues on any executor. A local instance started here is shut down on return.
    """
    ray = _import_ray()
    started, private = False, None
    if not ray.is_initialized():
        if address:
            _probe_ray(address)
            ray.init(address=address, log_to_driver=False)
        else:
            private = _init_local_ray(ray)
        started = address is None
    try:
        if started and gpus_per_run > ray.cluster_resources().get("GPU", 0):
            # Ray would queue the tasks for ever, waiting for a GPU that never comes.
            raise ValueError(f"each run asks for {gpus_per_run:g} GPU but the local Ray instance has "
                             f"{ray.cluster_resources().get('GPU', 0):g}; use --device cpu, --gpus-per-run 0 "
                             "or --address of a cluster with GPUs")
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_run_job)
        refs = [task.remote(j) for j in jobs_list]
        index = {r: i for i, r in enumerate(refs)}
        rows = [None] * len(refs)
        pending = list(refs)
        try:
            with sigterm_as_interrupt():  # after ray.init, whose own SIGTERM handler exits with a stack dump
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        rows[index[ref]] = row = ray.get(ref)
                        if on_done is not None:
                            on_done(row)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (turned into this above): stop the runs, as locally
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        except ray.exceptions.RayTaskError as e:
            for ref in pending:
                ray.cancel(ref)
            # The run's own error (a bad run directory, a full disk), not Ray's wrapper with a remote traceback.
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        return rows
    finally:
        if started:
            _stop_local_ray(ray, private)


def _figures(out, methods, rows):
    from klcontrol.plotting import pyplot
    from klcontrol.vae_plant.metrics.diagnostics import plot_runs
    from klcontrol.vae_plant.training.trace_log import read_trace_csv

    runs = {}
    for m in methods:
        traces = [read_trace_csv(os.path.join(r["run_dir"], "trace.csv")) for r in rows if r["label"] == m.label]
        n = min(len(t["step"]) for t in traces)
        runs[m.display] = {"step": traces[0]["step"][:n], "measures": m.controller().measures,
                           **{k: np.stack([t[k][:n] for t in traces], axis=1)
                              for k in ("beta", "kl", "recon", "setpoint")}}
    fig = plot_runs(runs, symlog=True, smooth=50,
                    title="50-step means of β, KL and reconstruction; band: min–max over seeds")
    paths = {"training": os.path.join(out, "training.png"), "tradeoff": os.path.join(out, "tradeoff.png")}
    save_figure(fig, paths["training"])
    plt = pyplot()
    plt.close(fig)
    table = aggregate(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for e in table.values():
        ax.errorbar(e["recon"][0], e["rmig"][0], xerr=e["recon"][1], yerr=e["rmig"][1], fmt="o", capsize=3,
                    label=e["display"])
    ax.set_xlabel("reconstruction loss (nats per image; lower is better)")
    ax.set_ylabel("RMIG (higher is better)")
    ax.set_title("reconstruction–disentanglement trade-off (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, paths["tradeoff"])
    plt.close(fig)
    return paths


def _check_disk(out, n_runs: int, steps: int, checkpoint_every: int) -> None:
    """Refuse a comparison whose runs cannot fit on the disk of ``out`` (a lower bound of what they write)."""
    import shutil

    from klcontrol.vae_plant.training.model import BetaVAE
    from klcontrol.vae_plant.training.trace_log import columns
    from klcontrol.vae_plant.training.trainer import LATENT_DIM

    params = sum(p.numel() for p in BetaVAE(LATENT_DIM).parameters())
    # At least: each checkpoint holds the weights and Adam's two moments (float32); each trace row a digit and a
    # comma per column.
    checkpoints = 1 + (steps // checkpoint_every if checkpoint_every else 0)
    per_run = checkpoints * 3 * 4 * params + steps * 2 * len(columns(LATENT_DIM))
    need = n_runs * per_run
    probe = out
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(f"--seeds × methods = {n_runs:,} runs of {steps:,} updates write at least "
                         f"{need / 2**30:,.1f} GiB, and {probe} has {free / 2**30:,.1f} GiB free; "
                         "lower --seeds or --steps")


def compare(out, methods=None, *, budget: str = "cpu", seeds: int | None = None, steps: int | None = None,
            batch_size: int | None = None, compress: bool | None = None, n_images: int | None = None,
            beta_vae: bool = True, jobs: int = 1, threads: int = 1, device=None, progress: bool = True,
            command: str | None = None, executor: str = "process", address: str | None = None,
            gpus_per_run: float | None = None) -> CompareResult:
    """Train every method over seeds, evaluate each run, and write tables and figures.

    Parameters
    ----------
    out : str or path
        Output directory (runs under ``out/runs``; ``compare.json``, ``table.md``,
        ``training.png``, ``tradeoff.png``). Finished runs found there are reused.
    methods : sequence of str or Method, optional
        Default :data:`DEFAULT_METHODS`.
    budget : {"tiny", "cpu", "paper"}
        Defaults for the arguments below (:data:`BUDGETS`).
    seeds, steps, batch_size, n_images : int, optional
        Override the budget.
    compress : bool, optional
        Compress the set-point schedules by ``PAPER_STEPS / steps`` (budget default).
    beta_vae : bool
        Compute the β-VAE score (with the budget's sizes).
    jobs : int
        Runs trained at once, each in its own process (on a GPU they share the device).
    threads : int
        Torch CPU threads per process.
    device : {"cpu", "cuda"}, optional
        Default: CUDA if available.
    progress : bool
        Progress bar over runs.
    command : str, optional
        Recorded in the runs' provenance.
    executor : {"process", "ray"}
        ``"process"``: ``jobs`` local processes (the default). ``"ray"``: every run is a Ray task
        (:func:`run_ray`); ``jobs`` is then ignored and Ray's resources decide how many run at once.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://host:10001"``, …); default: a local Ray instance. On a
        cluster of several nodes ``out`` must be on a filesystem every node mounts at the same path.
    gpus_per_run : float, optional
        GPUs each Ray task requests (default 1 on CUDA, 0 on CPU; fractions share a GPU).

    Returns
    -------
    CompareResult

    Raises
    ------
    ValueError
        Unknown budget, method or executor, non-positive sizes.
    ImportError
        ``executor="ray"`` without Ray installed (the ``ray`` extra).
    """
    import multiprocessing

    from tqdm.auto import tqdm

    from klcontrol.vae_plant.training.trainer import resolve_device

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    b = BUDGETS[budget]
    methods = parse_methods(DEFAULT_METHODS if methods is None else methods)
    seeds = b.seeds if seeds is None else seeds
    steps = b.steps if steps is None else steps
    batch_size = b.batch_size if batch_size is None else batch_size
    n_images = b.n_images if n_images is None else n_images
    compress = b.compress if compress is None else compress
    for name, v in (("seeds", seeds), ("steps", steps), ("batch_size", batch_size), ("jobs", jobs),
                    ("threads", threads)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if int(n_images) != n_images or n_images < 0:
        raise ValueError(f"n_images must be a non-negative integer, got {n_images!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor != "ray" and (address is not None or gpus_per_run is not None):
        raise ValueError("address and gpus_per_run (--address, --gpus-per-run) need executor='ray' (--executor ray)")
    if gpus_per_run is not None and not (math.isfinite(gpus_per_run) and gpus_per_run >= 0):
        raise ValueError(f"gpus_per_run must be a finite number ≥ 0, got {gpus_per_run!r}")
    if executor == "ray":
        _import_ray()  # fail before any run starts
    device = resolve_device(device)
    factor = PAPER_STEPS / steps if compress else 1.0
    # Absolute, so that workers started elsewhere (Ray) write where the driver reads.
    out = os.path.abspath(os.fspath(out))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a directory")
    if os.path.isfile(os.path.join(out, "config.json")):
        raise ValueError(f"--out {out} is a training run's own directory; give compare a directory of its own")
    n_runs = int(seeds) * len(methods)
    _check_disk(out, n_runs, int(steps), int(b.checkpoint_every) if b.checkpoint_every < steps else 0)
    if executor != "ray":
        jobs = cap_jobs(jobs, n_runs)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    # The estimator is part of the key so cached metrics are recomputed when it changes.
    evaluation = {"n_images": int(n_images), "beta_vae": b.beta_vae if beta_vae else None, "rmig": "quantized"}
    command = command if command is not None else "klcontrol.vae_plant.experiments.compare.compare"
    jobs_list = [dict(method=asdict(m), budget=budget, seed=s, steps=int(steps), batch_size=int(batch_size), compress=factor,
                      device=device, threads=int(threads), out=out, evaluation=evaluation,
                      checkpoint_every=b.checkpoint_every if b.checkpoint_every < steps else 0, command=command)
                 for s in range(int(seeds)) for m in methods]
    rows = []
    bar = tqdm(total=len(jobs_list), unit="run", desc="compare", disable=not progress)
    t0 = time.perf_counter()
    try:
        if executor == "ray":
            rows = run_ray(jobs_list, address=address, **ray_resources(device, gpus_per_run, threads),
                           on_done=lambda _: bar.update(1))
        elif jobs == 1:
            for j in jobs_list:
                rows.append(_run_job(j))
                bar.update(1)
        else:
            with worker_pool(int(jobs), mp_context=multiprocessing.get_context("spawn")) as ex:
                for row in ex.map(_run_job, jobs_list):
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    missing = [r["run_dir"] for r in rows if not os.path.isfile(os.path.join(r["run_dir"], "trace.csv"))]
    if missing:
        raise ValueError(f"{missing[0]} (and {len(missing) - 1} more runs) were written where this machine cannot "
                         "read them; on a Ray cluster, --out must be a directory every node mounts at the same path")
    order = {m.label: i for i, m in enumerate(methods)}
    rows.sort(key=lambda r: (order[r["label"]], r["seed"]))
    table = aggregate(rows)
    settings = dict(budget=budget, seeds=int(seeds), steps=int(steps), batch_size=int(batch_size),
                    compress=factor, evaluation=evaluation, device=device, jobs=int(jobs), threads=int(threads),
                    executor=executor,
                    methods=[asdict(m) for m in methods], command=command,
                    wall_seconds=time.perf_counter() - t0)
    figures = _figures(out, methods, rows)
    result = CompareResult(out, rows, table, settings, figures)
    write_json(os.path.join(out, "compare.json"), {"settings": settings, "table": table, "rows": rows,
                                                   "figures": figures})
    write_text(os.path.join(out, "table.md"),
               f"Budget {budget}: {steps} updates, batch {batch_size}, seeds 0–{seeds - 1}, set points compressed "
               f"×{factor:g}, metrics on {n_images or 'all'} images. Mean ± std over seeds.\n\n"
               + result.markdown()
               + "\nFor reference, DynamicVAE's Tables 1–2 (5 seeds, ~800k updates at batch 128 on the official "
               "dSprites file; comparable only with the paper budget):\n\n" + paper_table_markdown())
    return result
