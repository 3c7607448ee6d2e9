"""Training speed of the dSprites β-VAE, measured side by side in one run on one device.

Prints steps/s of

* ``plain``: a plain PyTorch loop of the same model and data (batches drawn
  on the device as the trainer does, a constant β, no controller, no trace):
  the trainer's overhead is ``ours / plain`` (goal ≥ 0.99);
* ``eager-official``: a plain eager loop as the official ControlVAE/DynamicVAE
  code trains (batch built on the host and copied to the device, ``kl.item()``
  every step, the controller on Python floats);
* ``ours``: :class:`klcontrol.vae_plant.training.trainer.Trainer` (batches drawn on the device, no
  per-step host sync, trace flushed in blocks to CSV and TensorBoard), plain;
* ``ours+<option>``: each speed option alone (compile, amp, channels_last,
  fused_adam) and all together;
* the cost of each controller preset: our loop's step rate with that
  controller over its rate with ``fixed`` (goal ≥ 0.99);
* ``--overhead``: the trainer-only parts of each update (controller, trace rows, flushes), timed inside
  the run, and the ratio to a plain loop they imply (:func:`overhead`).

Usage::

    python benchmarks/train_speed.py --device cpu --batch-size 8 --steps 20
    python benchmarks/train_speed.py --device cuda --batch-size 128 --steps 2000   # goal ≥ 2000 steps/s on an H100

Rates are medians over ``--rounds`` interleaved rounds (the machine may be shared); ``--clock cpu`` times
the process's CPU time instead of wall time (on a CPU, with ``--threads 1``, other jobs on the machine then
disturb the ratio much less).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from klcontrol.registry import PRESETS, make_preset
from klcontrol.vae_plant.data.dsprites import DSprites
from klcontrol.vae_plant.training.model import BetaVAE, vae_losses
from klcontrol.vae_plant.training.trainer import Trainer

_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_official(device, batch, steps, warmup, controller="dynamicvae"):
    """Steps/s of the official-style loop: host batches, ``.item()`` and a float controller every step."""
    torch.manual_seed(0)
    model = BetaVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    host = DSprites()  # images made on the host, as a DataLoader would
    ctrl = make_preset(controller)
    rng = np.random.default_rng(0)
    beta = ctrl.beta
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = _clock()
        x = host.images(rng.integers(0, len(host), batch)).to(device)
        recon, kl, _ = vae_losses(model, x)
        beta = ctrl.step(kl.item())
        loss = recon + beta * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return steps / (_clock() - t0)


def plain(device, batch, steps, warmup, beta=4.0):
    """Steps/s of a plain PyTorch loop: the trainer's model, data and optimizer, nothing else."""
    torch.manual_seed(0)
    model = BetaVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    data = DSprites(device=device)
    gen = torch.Generator(device).manual_seed(0)
    noise_gen = torch.Generator(device).manual_seed(1)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = _clock()
        x, _ = data.sample(batch, gen)
        noise = torch.randn(batch, 10, generator=noise_gen, device=device)
        recon, kl, _ = vae_losses(model, x, noise)
        loss = recon + beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps / (_clock() - t0)


def ours(device, batch, steps, warmup, controller="dynamicvae", **options):
    """Steps/s of the trainer's loop (trace flushes and writing included)."""
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(d + "/run", preset="cpu", controller=controller, steps=warmup + steps + 1, batch_size=batch,
                     device=str(device), checkpoint_every=0, flush_every=max(10, min(1000, steps // 2)),
                     progress=False, **options)
        tr.run(until=warmup)
        _sync(device)
        t0 = _clock()
        tr.run(until=warmup + steps)
        _sync(device)
        rate = steps / (_clock() - t0)
        tr.close()
    return rate


def overhead(device, batch, steps, warmup, controller="dynamicvae"):
    """Trainer-only work per update, timed inside one run: (µs per step of each part, step µs).

    The parts are what a plain loop does not do: the controller (``Trainer._control``), the trace
    rows (``_record``) and their flushes to CSV and TensorBoard (``_flush``). Everything else of an
    update (batch draw, forward, backward, Adam) is the plain loop's own work. Timing the parts in
    the same updates as the whole step makes ``1 − parts/step`` a far steadier estimate of
    ``ours / plain`` than the ratio of two separately timed rates on a shared machine.
    """
    parts = {"controller": "_control", "trace rows": "_record", "flushes": "_flush"}
    spent = dict.fromkeys(parts, 0.0)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(d + "/run", preset="cpu", controller=controller, steps=warmup + steps + 1, batch_size=batch,
                     device=str(device), checkpoint_every=0, flush_every=max(10, min(1000, steps // 2)),
                     progress=False)
        tr.run(until=warmup)
        for key, name in parts.items():
            f = getattr(tr, name)

            def timed(*a, _f=f, _k=key):
                t = _clock()
                try:
                    return _f(*a)
                finally:
                    spent[_k] += _clock() - t
            setattr(tr, name, timed)
        _sync(device)
        t0 = _clock()
        tr.run(until=warmup + steps)
        _sync(device)
        total = _clock() - t0
        tr.close()
    return {k: v / steps * 1e6 for k, v in spent.items()}, total / steps * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 on CUDA, 8 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 2000 CUDA, 20 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 200 CUDA, 3 CPU)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default reduce-overhead on CUDA, default on CPU)")
    p.add_argument("--skip-compile", action="store_true", help="do not measure torch.compile")
    p.add_argument("--json", action="store_true")
    p.add_argument("--clock", choices=tuple(_CLOCKS), default="wall",
                   help="wall time, or this process's CPU time (all its threads; on a shared CPU less disturbed "
                        "by other jobs than wall time)")
    p.add_argument("--only", default=None,
                   help="comma-separated variants to measure (e.g. plain,ours); default all")
    p.add_argument("--overhead", action="store_true",
                   help="only time the trainer-only parts of each update inside the run (controller, trace rows, "
                        "flushes) and print the ratio to a plain loop they imply")
    a = p.parse_args(argv)
    global _clock
    _clock = _CLOCKS[a.clock]
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    batch = a.batch_size or (128 if cuda else 8)
    steps = a.steps or (2000 if cuda else 20)
    warmup = a.warmup or (200 if cuda else 3)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.overhead:
        runs = [overhead(device, batch, steps, warmup) for _ in range(a.rounds)]
        fractions = [sum(parts.values()) / step for parts, step in runs]
        print(f"device {device}, batch {batch}, {steps} timed steps × {a.rounds} rounds, {a.clock} clock; "
              "trainer-only work per update (µs), of the whole step:")
        for k in runs[0][0]:
            print(f"  {k:12s} " + ", ".join(f"{parts[k]:7.1f}" for parts, _ in runs))
        print("  step         " + ", ".join(f"{step:7.0f}" for _, step in runs))
        print("implied trainer / plain loop (1 − parts/step; goal ≥ 0.99): "
              + ", ".join(f"{1 - f:.4f}" for f in fractions) + f"; worst {1 - max(fractions):.4f}")
        return
    mode = a.compile_mode or ("reduce-overhead" if cuda else "default")
    variants = {
        "plain": lambda: plain(device, batch, steps, warmup),
        "eager-official": lambda: eager_official(device, batch, steps, warmup),
        "ours": lambda: ours(device, batch, steps, warmup),
        "ours+amp": lambda: ours(device, batch, steps, warmup, amp=True),
        "ours+channels_last": lambda: ours(device, batch, steps, warmup, channels_last=True),
        "ours+fused_adam": lambda: ours(device, batch, steps, warmup, fused_adam=True),
    }
    if not a.skip_compile:
        variants[f"ours+compile({mode})"] = lambda: ours(device, batch, steps, warmup + 2, compile=mode)
        variants["ours+all"] = lambda: ours(device, batch, steps, warmup + 2, compile=mode, amp=True,
                                            channels_last=True, fused_adam=True)
    for name in PRESETS:
        variants[f"controller:{name}"] = lambda name=name: ours(device, batch, steps, warmup, controller=name)
    if a.only:
        keep = [k.strip() for k in a.only.split(",")]
        unknown = [k for k in keep if k not in variants]
        if unknown:
            p.error(f"unknown variants {unknown}; choose from {list(variants)}")
        variants = {k: variants[k] for k in keep}
    rates = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, f in variants.items():
            rates[k].append(f())
    med = {k: statistics.median(v) for k, v in rates.items()}
    fixed = med.get("controller:fixed")
    base = med.get("eager-official")
    result = dict(
        device=torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        clock=a.clock,
        torch=torch.__version__, batch_size=batch, timed_steps=steps, rounds=a.rounds,
        steps_per_s={k: v for k, v in med.items() if not k.startswith("controller:")},
        rounds_steps_per_s={k: v for k, v in rates.items()},
        speedup_vs_eager={k: v / base for k, v in med.items() if base and not k.startswith("controller:")},
        controller_steps_per_s={k.split(":", 1)[1]: v for k, v in med.items() if k.startswith("controller:")},
        controller_rate_vs_fixed={k.split(":", 1)[1]: v / fixed for k, v in med.items()
                                  if fixed and k.startswith("controller:")},
    )
    if "plain" in med and "ours" in med:
        # per round, the two were measured one right after the other: the ratio of a round is less noisy
        per_round = [o / p for o, p in zip(rates["ours"], rates["plain"])]
        result["ours_vs_plain"] = dict(median=statistics.median(per_round), rounds=per_round)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"device {result['device']}, torch {result['torch']}, batch {batch}, {steps} timed steps, "
          f"median of {a.rounds} rounds, {a.clock} clock")
    for k, v in result["steps_per_s"].items():
        vs = f"   ×{result['speedup_vs_eager'][k]:.2f} vs eager-official" if base else ""
        print(f"  {k:28s} {v:10.2f} steps/s{vs}")
    if "ours_vs_plain" in result:
        r = result["ours_vs_plain"]
        print(f"trainer / plain PyTorch loop (goal ≥ 0.99): median {r['median']:.3f}, rounds "
              + ", ".join(f"{v:.3f}" for v in r["rounds"]))
    if result["controller_rate_vs_fixed"]:
        print("controller cost (our loop, step rate relative to fixed β; goal ≥ 0.99):")
        for k, v in result["controller_rate_vs_fixed"].items():
            print(f"  {k:28s} {result['controller_steps_per_s'][k]:10.2f} steps/s   {v:.3f}")


if __name__ == "__main__":
    main()
