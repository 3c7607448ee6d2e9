"""Speed of ``klcontrol.simulate`` against python-control on the same closed loop.

The loop: DynamicVAE's incremental PI (window-5 moving average, delay 0,
β_min = 0) on the paper's MNIST plant ``y(t) = y(t−1)/(1+a) + a/(1+a)·A·exp(−kβ)``
with a = 1/5000, A = 26.38, k = 0.0476, set point 20 nats, β0 = 100.

``simulate`` runs all gain sets in one vectorised call, with two recordings:

* default: β, KL and state in float64 (2 × 160 MB here: the KL is the state
  without noise);
* sweep: what a gain sweep needs, ``record=("kl",), dtype=np.float32`` (80 MB).

Each is timed on its first call in a fresh process (a child process each:
that call pays the kernel's first-touch page faults of the outputs) and
repeated in one process (later calls reuse freed memory).  The timings are
interleaved in rounds with python-control's, and the best of each is kept, so
that a load spike on a shared machine does not favour either side.  python-control runs
the same loop as a discrete ``control.nlsys`` (update function written out
with ``math``) through ``control.input_output_response``, one gain set at a
time; a few sets are timed and the best is scaled to the full count.  The
trajectories of the timed sets are compared with ``simulate``'s (β and KL,
max abs difference ≤ 1e-9).

Run:  python benchmarks/simulate_vs_control.py [--sets 1000] [--steps 20000] [--control-sets 3] [--repeats 3]
      [--first-repeats 2]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import control
import numpy as np

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, simulate

A_RATE, A_GAIN, K_DECAY = 1 / 5000, 26.38, 0.0476
C, BETA0, WINDOW = 20.0, 100.0, 5


def gain_sets(n):
    """``n`` (kp, ki) pairs spread over a stable region around the paper's gains."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.005, 0.02, n), rng.uniform(0.001, 0.01, n)


def control_system(kp, ki):
    """The same loop as a python-control discrete nonlinear system.

    State ``x(t) = [y(t−1), β(t), σ(m(t−1) − C), y(t−1), …, y(t−4)]``;
    outputs ``[β(t), y(t)]``.
    """
    a = A_RATE

    def plant(y_prev, beta):
        return y_prev / (1 + a) + a / (1 + a) * (A_GAIN * math.exp(-K_DECAY * beta))

    def sigmoid(x):
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-x))
        ex = math.exp(x)
        return ex / (1.0 + ex)

    def update(t, x, u, params):
        y = plant(x[0], x[1])
        m = (y + x[3] + x[4] + x[5] + x[6]) / WINDOW
        p = sigmoid(m - C)
        beta = max(x[1] + kp * (p - x[2]) - ki * (C - m), 0.0)
        return np.array([y, beta, p, y, x[3], x[4], x[5]])

    def output(t, x, u, params):
        return np.array([x[1], plant(x[0], x[1])])

    return control.nlsys(update, output, states=7, inputs=0, outputs=2, dt=1, name="incremental_pi_loop")


def run_control(kp, ki, steps, y0=0.0):
    sys = control_system(kp, ki)
    x0 = [y0, BETA0, 1.0 / (1.0 + math.exp(-(y0 - C))), y0, y0, y0, y0]
    res = control.input_output_response(sys, np.arange(steps), 0, X0=x0)
    return res.outputs[0], res.outputs[1]


def fused_numpy(kp, ki, steps, y0=0.0):
    """The same loop written out by hand in NumPy, every constant folded: the floor of NumPy at this size.

    A reference for the benchmark only (klcontrol never runs it): it shows what any NumPy
    implementation of this loop can reach, so a ratio above it needs compiled code. Records the
    KL in float32, like the sweep recording.
    """
    n = len(kp)
    phi = np.float64(1 / (1 + A_RATE))
    gain = np.float64(A_RATE / (1 + A_RATE) * A_GAIN)
    neg_k, c, half = np.float64(-K_DECAY), np.float64(C), np.float64(0.5)
    y = np.full(n, y0)
    hist = [y] * (WINDOW - 1)
    beta = np.full(n, BETA0)
    p_prev = np.full(n, 1.0 / (1.0 + math.exp(-(y0 - C))))
    floor = np.zeros(n)
    out = np.empty((steps, n), np.float32)
    for t in range(steps):
        y = y * phi + gain * np.exp(neg_k * beta)
        out[t] = y
        total = y
        for h in hist:
            total = total + h
        m = total / WINDOW
        hist = [y] + hist[:-1]
        dm = m - c
        p = np.tanh(dm * half)
        p *= half
        p += half
        beta = np.maximum(beta + kp * (p - p_prev) + ki * dm, floor)
        p_prev = p
    return out


RECORDINGS = {
    "default": {},
    "sweep": {"record": ("kl",), "dtype": np.float32},
}


def _setup(n):
    kp, ki = gain_sets(n)
    plant = FirstOrderPlant(A_RATE, ExpGain(A_GAIN, K_DECAY))
    ctrl = IncrementalPI(kp, ki, setpoint=C, beta0=BETA0, beta_min=0.0, filter=WINDOW)
    return kp, ki, plant, ctrl


def first_call(mode, sets, steps):
    """Seconds of the first ``simulate`` call of a fresh process (run in a child)."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import json, sys, time; sys.path.insert(0, {here!r}); import simulate_vs_control as b; "
            f"kp, ki, plant, ctrl = b._setup({sets}); t = time.perf_counter(); "
            f"b.simulate(ctrl, plant, {steps}, **b.RECORDINGS[{mode!r}]); print(json.dumps(time.perf_counter() - t))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=1000, help="gain sets simulated by klcontrol (default 1000)")
    ap.add_argument("--steps", type=int, default=20000, help="steps per trajectory (default 20000)")
    ap.add_argument("--control-sets", type=int, default=3, help="gain sets timed with python-control (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed simulate calls per recording (default 3)")
    ap.add_argument("--first-repeats", type=int, default=2,
                    help="fresh processes per recording for the first-call time (best kept; default 2)")
    args = ap.parse_args(argv)

    kp, ki, plant, ctrl = _setup(args.sets)
    idx = np.linspace(0, args.sets - 1, args.control_sets).round().astype(int)
    # The compared sets, float64, all series (the same arithmetic per set as in the timed calls).
    tr = simulate(IncrementalPI(kp[idx], ki[idx], setpoint=C, beta0=BETA0, beta_min=0.0, filter=WINDOW), plant,
                  args.steps)
    # Interleaved rounds (the machine may be shared): each round times one first call per recording in a fresh
    # process, one repeated call per recording and one python-control gain set; the best of each is kept.
    t_first = {m: [] for m in RECORDINGS}
    t_rep = {m: [] for m in RECORDINGS}
    t_ctl, t_fused, worst = [], [], 0.0
    fused = fused_numpy(kp[idx], ki[idx], args.steps)
    worst_fused = float(np.max(np.abs(fused - tr.kl.astype(np.float32))))
    rounds = max(args.repeats, args.control_sets, args.first_repeats)
    for r in range(rounds):
        if r < args.first_repeats:
            for m in RECORDINGS:
                t_first[m].append(first_call(m, args.sets, args.steps))
        if r < args.repeats:
            for m, kw in RECORDINGS.items():
                t0 = time.perf_counter()
                simulate(ctrl, plant, args.steps, **kw)
                t_rep[m].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fused_numpy(kp, ki, args.steps)
            t_fused.append(time.perf_counter() - t0)
        if r < args.control_sets:
            j, i = r, idx[r]
            t0 = time.perf_counter()
            beta, kl = run_control(kp[i], ki[i], args.steps)
            t_ctl.append(time.perf_counter() - t0)
            worst = max(worst, np.max(np.abs(beta - tr.beta[:, j])), np.max(np.abs(kl - tr.kl[:, j])))
    t_first = {m: min(v) for m, v in t_first.items()}
    t_rep = {m: min(v) for m, v in t_rep.items()}
    per_set = min(t_ctl)  # best of the timed sets, as simulate's best of its repeats
    t_ctl_scaled = per_set * args.sets

    print(f"loop: IncrementalPI window {WINDOW}, delay 0, plant a=1/5000 A={A_GAIN} k={K_DECAY}, C={C}")
    print(f"python-control: {per_set:.3f} s per gain set (best of {len(idx)}), scaled to {args.sets} sets: "
          f"{t_ctl_scaled:.1f} s")
    for m in RECORDINGS:
        print(f"simulate, {m} recording: {args.sets} gain sets x {args.steps} steps: first call in a fresh process "
              f"{t_first[m]:.2f} s ({t_ctl_scaled / t_first[m]:.0f}x; goal >= 300x), repeated {t_rep[m]:.2f} s "
              f"({t_ctl_scaled / t_rep[m]:.0f}x; goal >= 1000x)")
    print(f"reference, the loop hand-written in NumPy (benchmark only): repeated {min(t_fused):.2f} s "
          f"({t_ctl_scaled / min(t_fused):.0f}x): the most a NumPy implementation reaches here; "
          f"KL equal to simulate's to {worst_fused:.1e} (float32)")
    print(f"max |difference| on the {len(idx)} compared sets (beta and KL, all steps): {worst:.2e}")
    if worst > 1e-9:
        raise SystemExit(f"trajectories differ by {worst:.2e} > 1e-9")


if __name__ == "__main__":
    main()
