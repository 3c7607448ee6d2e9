"""``klcontrol.simulate`` (compiled engine) against the two references a user could write instead.

The loop is ``simulate_vs_control.py``'s: DynamicVAE's incremental PI (window-5 moving average, delay 0,
β_min = 0) on the MNIST plant, 1000 gain sets × 20 000 steps, the KL recorded in float32.

* **JAX**: ``jit(vmap(lax.scan))`` of the same loop in float64, about fifteen lines (skipped, with a note, when
  jax is not installed: ``pip install 'klcontrol[bench]'``).
* **floor**: the loop fused by hand in numba: all state of a block of sets in one array at constant offsets, a
  ring for the moving average (one loop per phase, so that nothing is copied), parameters folded into
  constants, ``error_model="numpy"`` (divisions unchecked, hence vectorised), ``fastmath={"contract"}`` (fused
  multiply-adds: any further reassociation would change the rounding), klcontrol's vectorisable ``exp`` and
  the block's array at a 64-byte boundary (a 512-bit row access that spans two cache lines costs ~10 %).

Per core, in one process and one thread (``NUMBA_NUM_THREADS=1``, XLA on one thread, the process pinned to
one CPU), CPU time, minimum over interleaved rounds, so that a load spike on a shared machine favours no
side.  Then, for klcontrol alone: the cost per loop-step from 1 000 to 100 000 sets (one thread), and the
wall-clock speed-up of every core over one at 10 000 sets (in a child process that may use them all).
The trajectories are compared: JAX and the floor against ``simulate`` (float32 KL).

``--breakdown`` adds, in the same rounds, klcontrol's kernel alone writing into an output already touched (as
the floor's ``out`` is) and the first touch of a fresh output array, which ``simulate`` pays on every call (it
returns new arrays): where the ratio to the floor goes.

Run:  python benchmarks/simulate_floor.py [--sets 1000] [--steps 20000] [--rounds 5] [--no-scaling] [--breakdown]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # one thread for everything timed in this process (before numba or jax is imported)
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_vs_control import A_GAIN, A_RATE, BETA0, K_DECAY, WINDOW, C, _setup  # noqa: E402

C_SET = C

from klcontrol import simulate  # noqa: E402
from klcontrol._jit_math import exp as _exp  # noqa: E402

BLOCK = 512
RING = WINDOW - 1


@njit(error_model="numpy", fastmath={"contract"}, inline="always")
def _phase(X, o, nb, r, phi, gain):
    for i in range(nb):
        y = X[i] * phi + gain * _exp(-K_DECAY * X[BLOCK + i])
        o[i] = y
        s = y + X[5 * BLOCK + i] + X[6 * BLOCK + i] + X[7 * BLOCK + i] + X[8 * BLOCK + i]
        dm = s * (1 / WINDOW) - C
        p = 1.0 / (1.0 + _exp(-dm))
        beta = max(X[BLOCK + i] + X[3 * BLOCK + i] * (p - X[2 * BLOCK + i]) + X[4 * BLOCK + i] * dm, 0.0)
        X[i] = y
        X[BLOCK + i] = beta
        X[2 * BLOCK + i] = p
        X[r + i] = y


@njit(error_model="numpy", fastmath={"contract"})
def fused_numba(kp, ki, steps, out):
    """The hand-fused floor: the KL of every set into ``out`` (steps × sets, float32)."""
    n = kp.shape[0]
    phi = 1 / (1 + A_RATE)
    gain = A_RATE / (1 + A_RATE) * A_GAIN
    p0 = 1.0 / (1.0 + math.exp(C))  # σ(y0 − C) with y0 = 0
    for b0 in range(0, n, BLOCK):
        nb = min(n, b0 + BLOCK) - b0
        Xa = np.zeros((5 + RING) * BLOCK + 8)  # from a 64-byte boundary, as klcontrol's (numba aligns to 32)
        xo = (64 - np.intp(Xa.ctypes.data) % 64) % 64 // 8
        X = Xa[xo:xo + (5 + RING) * BLOCK]
        for i in range(nb):
            X[BLOCK + i] = BETA0
            X[2 * BLOCK + i] = p0
            X[3 * BLOCK + i] = kp[b0 + i]
            X[4 * BLOCK + i] = ki[b0 + i]
        for t in range(steps):
            o = out[t, b0:b0 + nb]
            ph = t % RING  # the ring slot the new KL overwrites (the oldest), a constant in each branch
            if ph == 0:
                _phase(X, o, nb, 8 * BLOCK, phi, gain)
            elif ph == 1:
                _phase(X, o, nb, 7 * BLOCK, phi, gain)
            elif ph == 2:
                _phase(X, o, nb, 6 * BLOCK, phi, gain)
            else:
                _phase(X, o, nb, 5 * BLOCK, phi, gain)


def jax_loop():
    """``jit(vmap(lax.scan))`` of the loop, or ``None`` without jax."""
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    phi, gain = 1 / (1 + A_RATE), A_RATE / (1 + A_RATE) * A_GAIN

    def one(kp, ki, steps):
        def step(carry, _):
            y, beta, p_prev, hist = carry
            y = y * phi + gain * jnp.exp(-K_DECAY * beta)
            m = (y + hist.sum()) / WINDOW
            p = 1.0 / (1.0 + jnp.exp(C - m))
            beta = jnp.maximum(beta + kp * (p - p_prev) + ki * (m - C), 0.0)
            return (y, beta, p, jnp.concatenate([y[None], hist[:-1]])), y.astype(jnp.float32)

        init = (jnp.float64(0.0), jnp.float64(BETA0), jnp.float64(1 / (1 + math.exp(C))), jnp.zeros(RING))
        return lax.scan(step, init, None, length=steps)[1]

    run = jax.jit(jax.vmap(one, in_axes=(0, 0, None), out_axes=1), static_argnums=2)
    return lambda kp, ki, steps: np.asarray(run(kp, ki, steps).block_until_ready())


def cpu(fn):
    """CPU seconds of ``fn()`` (this process, all threads)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def sweep(ctrl, plant, steps, **kw):
    """The benchmark's ``simulate`` call: compiled, the KL alone in float32."""
    return simulate(ctrl, plant, steps, engine="compiled", record=("kl",), dtype=np.float32, **kw)


def kernel_alone(ctrl, plant, steps, out):
    """klcontrol's compiled kernel on the benchmark loop, writing the KL into ``out`` (no ``simulate`` around it)."""
    from klcontrol import compiled
    from klcontrol.loop import initial_loop_state

    n = out.shape[1]
    k = compiled.kernel_for(plant, ctrl, 0, False, True)
    c = ctrl.copy()
    c.prime(0.0)
    x = initial_loop_state(plant, c.state, np.zeros(n), 0, (n,))
    leaves = {("plant", j): v for j, v in enumerate(x.plant)}
    leaves.update({("ctrl", key): v for key, v in x.controller.items() if key != "filter"})
    leaves.update({("filter", j): v for j, v in enumerate(x.controller["filter"])})
    S0 = np.array([np.broadcast_to(np.asarray(leaves[tag], dtype=float), (n,)) for tag in k.state])
    pv, cv = plant.parameters(), c.params
    P = np.array([np.broadcast_to(np.asarray(pv[name] if owner == "plant" else cv[name], dtype=float), (n,))
                  for owner, name in k.params])
    C = np.full(steps, C_SET)
    e = compiled.empty_rows

    def run():
        compiled.run_kernel(k, 0, steps, S0.copy(), P, C, e(n), 0.0, 0.0, e(n, np.float32), out,
                            e(n, np.float32, 1), np.empty((2, n)))
    return run


def first_touch(steps, sets):
    """A fresh output array written once (what ``simulate``'s new array costs beyond the writes themselves)."""
    a = np.empty((steps, sets), np.float32)
    a[:] = 0


def cores_child(sets, steps, rounds):
    """Wall seconds of the sweep on 1 thread and on every core, in a child that may use them all."""
    code = (f"import json, os, sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "import numba; from simulate_vs_control import _setup; from simulate_floor import sweep; "
            f"kp, ki, plant, ctrl = _setup({sets}); sweep(ctrl, plant, 10); out = {{}}\n"
            f"for r in range({rounds}):\n"
            "    for th in (1, numba.config.NUMBA_NUM_THREADS):\n"
            "        t = time.perf_counter(); sweep(ctrl, plant, " f"{steps}, threads=th)\n"
            "        out.setdefault(th, []).append(time.perf_counter() - t)\n"
            "print(json.dumps({k: min(v) for k, v in out.items()}))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return {int(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=1000, help="gain sets (default 1000)")
    ap.add_argument("--steps", type=int, default=20000, help="steps per trajectory (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds, the minimum kept (default 5)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the sets and cores measurements")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time klcontrol's kernel alone (output already touched) and a fresh output's first touch")
    args = ap.parse_args(argv)
    all_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if all_cpus:
        os.sched_setaffinity(0, {all_cpus[-1]})  # one core for the per-core comparison

    kp, ki, plant, ctrl = _setup(args.sets)
    out = np.empty((args.steps, args.sets), np.float32)
    jx = jax_loop()
    # Warm-up: compile (or load) everything before timing.
    ref = sweep(ctrl, plant, args.steps).kl
    fused_numba(kp, ki, args.steps, out)
    worst = {"floor": float(np.max(np.abs(out - ref)))}
    if jx is not None:
        worst["jax"] = float(np.max(np.abs(jx(kp, ki, args.steps) - ref)))
    times = {"klcontrol": [], "floor": [], "jax": []}
    if args.breakdown:
        out2 = np.zeros_like(out)
        alone = kernel_alone(ctrl, plant, args.steps, out2)
        alone()
        worst["kernel alone"] = float(np.max(np.abs(out2 - ref)))
        times.update({"kernel alone": [], "first touch": []})
    for _ in range(args.rounds):
        times["klcontrol"].append(cpu(lambda: sweep(ctrl, plant, args.steps)))
        times["floor"].append(cpu(lambda: fused_numba(kp, ki, args.steps, out)))
        if jx is not None:
            times["jax"].append(cpu(lambda: jx(kp, ki, args.steps)))
        if args.breakdown:
            times["kernel alone"].append(cpu(alone))
            times["first touch"].append(cpu(lambda: first_touch(args.steps, args.sets)))
    best = {k: min(v) for k, v in times.items() if v}
    per = args.sets * args.steps
    print(f"loop: IncrementalPI window {WINDOW}, delay 0, {args.sets} gain sets x {args.steps} steps, KL in float32; "
          f"one thread, CPU time, min of {args.rounds} interleaved rounds")
    for k, v in best.items():
        print(f"  {k:12s} {v:.3f} s  {v / per * 1e9:5.2f} ns per loop-step")
    k = best["klcontrol"]
    line = f"klcontrol / floor = {k / best['floor']:.2f} (goal <= 1.3)"
    if jx is not None:
        line += f"; JAX / klcontrol = {best['jax'] / k:.2f} (goal >= 1.5)"
    else:
        line += "; JAX column skipped: jax is not installed (pip install 'klcontrol[bench]')"
    print(line)
    rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(times["klcontrol"], times["floor"]))
    print(f"per round, klcontrol / floor: {rounds}" + ("; JAX / klcontrol: " + ", ".join(
        f"{a / b:.2f}" for a, b in zip(times["jax"], times["klcontrol"])) if jx is not None else ""))
    if args.breakdown:
        print(f"kernel alone / floor = {best['kernel alone'] / best['floor']:.2f}; a fresh output's first touch "
              f"{best['first touch']:.3f} s (writes included)")
    print("max |KL difference| against simulate (float32): " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if args.no_scaling:
        return
    print("cost per loop-step, one thread (CPU time, min of 3):")
    for n, steps in ((1000, 20000), (10000, 4000), (100000, 400)):
        _, _, pl, ct = _setup(n)
        sweep(ct, pl, 10)
        t = min(cpu(lambda: sweep(ct, pl, steps)) for _ in range(3))
        print(f"  {n:6d} sets x {steps:5d} steps: {t / n / steps * 1e9:5.2f} ns")
    if all_cpus:
        os.sched_setaffinity(0, set(all_cpus))
    if len(all_cpus) > 1:
        w = cores_child(10000, 4000, 3)
        many = max(w)
        print(f"every core, 10000 sets x 4000 steps (wall, min of 3): 1 thread {w[1]:.3f} s, {many} threads "
              f"{w[many]:.3f} s: {w[1] / w[many]:.2f}x (goal >= 1.8x on 2 cores)")


if __name__ == "__main__":
    main()
