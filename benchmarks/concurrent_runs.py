"""Aggregate training throughput of N independent β-VAE runs sharing one device, measured side by side.

Modes (each trains ``--runs`` independent runs for ``--steps`` timed updates per run):

* ``sequential``: the runs one after another in this process;
* ``processes``: one spawned worker process per run, all released together by
  a barrier after their warm-up; wall time from that common start to the last
  worker's finish (measured by this process);
* ``vmap``: one process trains the N models at once with ``torch.func``
  (``stack_module_state`` + ``functional_call`` + ``vmap`` over the model
  dimension); the summed loss is differentiated by autograd, which gives each
  model its own gradient because the models share nothing, and one Adam
  updates the stacked parameters (Adam is elementwise, so this is N Adams).

Each update is the trainer's (``klcontrol.vae_plant.training.trainer.Trainer._update``): draw a
batch on the device, ``recon, kl = vae_losses(...)``, β from the controller
stepped on the device KL (no host sync; the first update synchronises once to
prime the controller with the initial KL), loss ``recon + β·kl``, Adam
(lr 1e-4, betas (0.9, 0.999)).  Trace logging and checkpoints are left out in
every mode.  In ``vmap`` mode each run keeps its own controller state: the N
scalar controllers, each primed with its own model's initial KL, are stacked
into one controller whose state has shape (N,) (:func:`stack_controllers`), so
one controller step serves all runs.  The batches of all runs are drawn in one
call (N·B images, N·B·L noise) instead of N calls: the same amount of work,
other random streams than the sequential runs.

Rate = N × steps / wall time (total optimizer steps per second over all runs).
On a CPU, ``processes`` uses ``--threads`` threads *per worker*, i.e. N times
the threads of the other modes; the table says so.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/concurrent_runs.py --device cpu --runs 2 --steps 30 --threads 1
    python benchmarks/concurrent_runs.py --device cuda --runs 8            # batch 128, 200 steps per run
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from klcontrol.backend import is_torch
from klcontrol.controllers import Controller
from klcontrol.registry import PRESETS, make_preset
from klcontrol.vae_plant.data.dsprites import DSprites
from klcontrol.vae_plant.training.model import BetaVAE, vae_losses
from klcontrol.vae_plant.training.presets import first_update, primes

MODES = ("sequential", "processes", "vmap")
LATENT_DIM = 10
LR, ADAM_BETAS = 1e-4, (0.9, 0.999)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stack_controllers(controllers) -> Controller:
    """One controller driving N loops whose states are those of N single-loop controllers.

    Parameters
    ----------
    controllers : sequence of Controller
        Same class, same parameters and set point, same number of steps taken
        (e.g. N copies of one preset, each primed with its own initial KL).

    Returns
    -------
    Controller
        A copy of the first controller with every state entry stacked along a
        new leading axis of length N; ``step`` then takes a KL of shape (N,).

    Raises
    ------
    ValueError
        For an empty sequence, mixed kinds, different parameters or step counts.
    """
    ctrls = list(controllers)
    if not ctrls:
        raise ValueError("stack_controllers needs at least one controller")
    sds = [c.state_dict() for c in ctrls]
    first = sds[0]
    for c, sd in zip(ctrls, sds):
        if type(c) is not type(ctrls[0]) or sd["kind"] != first["kind"]:
            raise ValueError(f"cannot stack controllers of different kinds: {type(ctrls[0]).__name__} and {type(c).__name__}")
        if sd["params"] != first["params"] or sd["t"] != first["t"]:
            raise ValueError("stacked controllers must share parameters and step count; "
                             f"got {sd['params']} at step {sd['t']} vs {first['params']} at step {first['t']}")
        if c.shape != ():
            raise ValueError("stack_controllers takes single-loop controllers (scalar gains)")

    def stack(values):
        if any(is_torch(v) for v in values):
            return torch.stack([torch.as_tensor(v) for v in values])
        return np.array(values, dtype=float)

    state = {k: ([stack([sd["state"][k][i] for sd in sds]) for i in range(len(first["state"][k]))]
                 if k == "filter" else stack([sd["state"][k] for sd in sds]))
             for k in first["state"]}
    out = ctrls[0].copy()
    out.load_state_dict({**first, "state": state})
    return out


class Run:
    """One β-VAE training run: the trainer's update without logging.

    Parameters
    ----------
    device : torch.device
    batch_size : int
    seed : int
        Seeds the model initialisation (as the trainer), data and noise generators.
    controller : str
        Preset name of :data:`klcontrol.registry.PRESETS`.
    data : DSprites, optional
        Shared procedural set on ``device`` (default: a new one).
    """

    def __init__(self, device, batch_size, seed, controller="dynamicvae", data=None):
        self.device, self.batch_size, self.name = torch.device(device), int(batch_size), controller
        torch.manual_seed(seed)
        self.model = BetaVAE(LATENT_DIM).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=ADAM_BETAS)
        self.ctrl = make_preset(controller)
        self.data = data if data is not None else DSprites(device=self.device)
        self.gen_data = torch.Generator(self.device).manual_seed(seed)
        self.gen_noise = torch.Generator(self.device).manual_seed(seed + 0x5EED)
        self.t = 0
        self.beta = None

    def draw(self):
        """A batch ``(x, noise)`` from the run's own generators."""
        x, _ = self.data.sample(self.batch_size, self.gen_data)
        noise = torch.randn(self.batch_size, LATENT_DIM, generator=self.gen_noise, device=self.device)
        return x, noise

    def update(self, x, noise):
        """One update on a given batch; returns β of this update (a device tensor)."""
        recon, kl, _ = vae_losses(self.model, x, noise)
        if self.t == 0 and first_update(self.name) != "step":
            if primes(self.name):
                self.ctrl.prime(float(kl.detach()))  # the one host sync of the run
            beta = torch.tensor(float(self.ctrl.beta), dtype=torch.float64, device=self.device)
        else:  # the official presets step already on update 0's KL
            beta = self.ctrl.step(kl.detach().to(torch.float64))
        loss = recon + beta.to(kl.dtype) * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.beta = beta
        self.t += 1
        return beta

    def step(self):
        """Draw a batch and update."""
        return self.update(*self.draw())


class _Losses(nn.Module):
    # functional_call needs a module whose forward returns the losses, so that
    # the vmapped path runs vae_losses itself rather than a copy of it.
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x, noise):
        return vae_losses(self.vae, x, noise)


class VmapRuns:
    """N β-VAE runs trained at once by ``torch.func.vmap`` over stacked parameters.

    Parameters
    ----------
    device : torch.device
    batch_size : int
        Per run.
    seeds : sequence of int
        One per run; model ``i`` starts as ``Run(seed=seeds[i])``'s model.
    controller : str
        Preset name; every run gets its own controller state.
    data : DSprites, optional
    """

    def __init__(self, device, batch_size, seeds, controller="dynamicvae", data=None):
        self.device, self.batch_size, self.name = torch.device(device), int(batch_size), controller
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("VmapRuns needs at least one seed")
        modules = []
        for s in self.seeds:
            torch.manual_seed(s)
            modules.append(_Losses(BetaVAE(LATENT_DIM)).to(self.device))
        self.params, self.buffers = torch.func.stack_module_state(modules)
        self.names = [k[len("vae."):] for k in self.params]
        self._base = copy.deepcopy(modules[0]).to("meta")
        self._vlosses = torch.func.vmap(self._losses_one)
        self.opt = torch.optim.Adam(list(self.params.values()), lr=LR, betas=ADAM_BETAS)
        self.ctrl = None
        self.data = data if data is not None else DSprites(device=self.device)
        self.gen_data = torch.Generator(self.device).manual_seed(self.seeds[0])
        self.gen_noise = torch.Generator(self.device).manual_seed(self.seeds[0] + 0x5EED)
        self.t = 0
        self.beta = None

    @property
    def n(self) -> int:
        """Number of runs."""
        return len(self.seeds)

    def _losses_one(self, params, buffers, x, noise):
        return torch.func.functional_call(self._base, (params, buffers), (x, noise))

    def losses(self, x, noise):
        """``(recon, kl, kl_latent)`` of every run: shapes (N,), (N,), (N, L) for x (N, B, 1, 64, 64), noise (N, B, L)."""
        return self._vlosses(self.params, self.buffers, x, noise)

    def draw(self):
        """Batches of all runs in one draw: ``x`` (N, B, 1, 64, 64), ``noise`` (N, B, L)."""
        n, b = self.n, self.batch_size
        x, _ = self.data.sample(n * b, self.gen_data)
        noise = torch.randn(n, b, LATENT_DIM, generator=self.gen_noise, device=self.device)
        return x.reshape(n, b, *x.shape[1:]), noise

    def update(self, x, noise):
        """One update of every run on given batches; returns the β of each run, shape (N,)."""
        recon, kl, _ = self.losses(x, noise)
        if self.t == 0:
            kl0 = kl.detach().cpu().tolist()  # the one host sync of the runs
            ctrls = [make_preset(self.name) for _ in range(self.n)]
            if primes(self.name):
                for c, y in zip(ctrls, kl0):
                    c.prime(y)
            self.ctrl = stack_controllers(ctrls)
            if first_update(self.name) == "step":  # the official presets step already on update 0's KL
                beta = self.ctrl.step(kl.detach().to(torch.float64))
            else:
                beta = torch.as_tensor(np.asarray(self.ctrl.beta, dtype=float), dtype=torch.float64, device=self.device)
        else:
            beta = self.ctrl.step(kl.detach().to(torch.float64))
        # Runs share no parameters, so the gradient of the sum is each run's own gradient.
        loss = (recon + beta.to(kl.dtype) * kl).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.beta = beta
        self.t += 1
        return beta

    def step(self):
        """Draw the batches and update every run."""
        return self.update(*self.draw())

    def model_state(self, i: int) -> dict:
        """Parameters of run ``i`` as a :class:`BetaVAE` state dict (detached copies)."""
        return {name: p[i].detach().clone() for name, p in zip(self.names, self.params.values())}


def _timed(device, step, steps, warmup):
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def sequential_seconds(device, runs, batch_size, steps, warmup, controller="dynamicvae"):
    """Wall seconds of ``runs`` runs of ``steps`` timed updates, one after another (warm-up untimed)."""
    data = DSprites(device=device)
    total = 0.0
    for i in range(runs):
        run = Run(device, batch_size, seed=i, controller=controller, data=data)
        total += _timed(device, run.step, steps, warmup)
    return total


def vmap_seconds(device, runs, batch_size, steps, warmup, controller="dynamicvae"):
    """Wall seconds of ``steps`` timed updates of ``runs`` runs trained at once with vmap."""
    group = VmapRuns(device, batch_size, range(runs), controller=controller)
    return _timed(device, group.step, steps, warmup)


def _worker(rank, device, batch_size, steps, warmup, controller, threads, barrier, results):
    try:
        if threads:
            torch.set_num_threads(threads)
        device = torch.device(device)
        run = Run(device, batch_size, seed=rank, controller=controller)
        for _ in range(warmup):
            run.step()
        _sync(device)
        barrier.wait()
        for _ in range(steps):
            run.step()
        _sync(device)
        results.put((rank, None))
    except BaseException as exc:  # report to the parent instead of leaving it at the barrier
        barrier.abort()
        results.put((rank, f"{type(exc).__name__}: {exc}"))


def processes_seconds(device, runs, batch_size, steps, warmup, controller="dynamicvae", threads=None,
                      timeout=600.0):
    """Wall seconds from the common start of ``runs`` spawned workers (after their warm-up) to the last finish.

    Raises
    ------
    RuntimeError
        If a worker fails (its error is quoted) or does not finish within ``timeout``.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(runs + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(device), batch_size, steps, warmup, controller, threads,
                                                barrier, results), daemon=True) for r in range(runs)]
    for p in procs:
        p.start()
    try:
        try:
            barrier.wait(timeout)
        except Exception:  # BrokenBarrierError from a failed worker or the timeout
            errors = []
            while not results.empty():
                errors.append(results.get())
            raise RuntimeError(f"a worker failed before the common start: {errors or 'timeout'}") from None
        t0 = time.perf_counter()
        for _ in range(runs):
            rank, err = results.get(timeout=timeout)
            if err is not None:
                raise RuntimeError(f"worker {rank} failed: {err}")
        return time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


def measure(device, runs, batch_size, steps, warmup, modes=MODES, controller="dynamicvae", threads=None,
            rounds=1):
    """Aggregate steps/s of each mode (median over interleaved rounds) and the ratio to ``sequential``.

    Returns
    -------
    dict
        ``device, torch, batch_size, runs, steps_per_run, warmup, threads, controller, rounds`` and
        ``modes``: mode → ``{"steps_per_s", "ratio_vs_sequential", "wall_s"}``.
    """
    device = torch.device(device)
    fns = dict(
        sequential=lambda: sequential_seconds(device, runs, batch_size, steps, warmup, controller),
        processes=lambda: processes_seconds(device, runs, batch_size, steps, warmup, controller,
                                            threads or torch.get_num_threads()),
        vmap=lambda: vmap_seconds(device, runs, batch_size, steps, warmup, controller),
    )
    walls = {m: [] for m in modes}
    for _ in range(rounds):
        for m in modes:
            walls[m].append(fns[m]())
    out = {}
    for m in modes:
        wall = statistics.median(walls[m])
        out[m] = {"steps_per_s": runs * steps / wall, "wall_s": wall}
    ref = out.get("sequential", {}).get("steps_per_s")
    for m in modes:
        out[m]["ratio_vs_sequential"] = out[m]["steps_per_s"] / ref if ref else None
    cuda = device.type == "cuda"
    return dict(
        device=torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine() or "cpu"),
        torch=torch.__version__, batch_size=batch_size, runs=runs, steps_per_run=steps, warmup=warmup,
        threads=None if cuda else (threads or torch.get_num_threads()), controller=controller, rounds=rounds,
        modes=out,
    )


def _parse_modes(text):
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes must be a comma-separated subset of {','.join(MODES)}, got {text!r}")
    return modes


def _format(r):
    lines = [f"device {r['device']}, torch {r['torch']}, batch {r['batch_size']} per run, {r['runs']} runs × "
             f"{r['steps_per_run']} timed steps (warm-up {r['warmup']}), controller {r['controller']}, "
             f"median of {r['rounds']} round(s)"
             + ("" if r["threads"] is None else f", {r['threads']} CPU thread(s) per process"),
             f"  {'mode':12s} {'runs':>4s} {'total steps/s':>14s} {'vs sequential':>14s} {'wall s':>8s}"]
    for m, v in r["modes"].items():
        ratio = "-" if v["ratio_vs_sequential"] is None else f"×{v['ratio_vs_sequential']:.2f}"
        lines.append(f"  {m:12s} {r['runs']:4d} {v['steps_per_s']:14.2f} {ratio:>14s} {v['wall_s']:8.2f}")
    if "processes" in r["modes"] and r["threads"] is not None and r["runs"] > 1:
        lines.append(f"  (processes uses {r['runs']} × {r['threads']} CPU threads, the other modes {r['threads']})")
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry: parse arguments, measure, print the table (or ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--runs", type=int, default=4, help="number of independent runs N (default 4)")
    p.add_argument("--batch-size", type=int, default=None, help="per run (default 128 on CUDA, 16 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed updates per run (default 200 CUDA, 30 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates first (default 20 CUDA, 2 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--modes", type=_parse_modes, default=MODES, help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--controller", choices=tuple(PRESETS), default="dynamicvae")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the median is reported")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda requested but CUDA is not available")
    batch = a.batch_size or (128 if cuda else 16)
    steps = a.steps or (200 if cuda else 30)
    warmup = a.warmup if a.warmup is not None else (20 if cuda else 2)
    for name, v in (("--runs", a.runs), ("--batch-size", batch), ("--steps", steps), ("--rounds", a.rounds)):
        if v < 1:
            p.error(f"{name} must be ≥ 1, got {v}")
    if warmup < 1:
        p.error("--warmup must be ≥ 1 (the first update primes the controller with a host sync)")
    if a.threads is not None:
        if a.threads < 1:
            p.error(f"--threads must be ≥ 1, got {a.threads}")
        torch.set_num_threads(a.threads)
    r = measure(a.device, a.runs, batch, steps, warmup, a.modes, a.controller, a.threads, a.rounds)
    print(json.dumps(r, indent=2) if a.json else _format(r))
    return r


if __name__ == "__main__":
    main()
