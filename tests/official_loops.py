"""Independent transcriptions of how the official dSprites training loops compute β (shared by tests).

Read in DynamicVAE-CVPR2022 ``2D-sprites/{I_PID.py, solver_dynamic.py, run_dynamic.sh}`` and
ControlVAE-ICML2020 ``Disentangling/{P_PID.py, solver_light.py, run_dsprites_pid_c18.sh}``.
Both loops count iterations from 1, raise C before calling the PID in the same forward pass,
and use the PID output already as the β of that very update.  The official gains carry the
code's sign: ``Ki_code = −Ki`` of klcontrol.
"""
import collections
import math

import numpy as np


def dynamicvae_official_betas(kls, kp=0.01, ki_code=-0.005):
    """β of each update of the official DynamicVAE loop, from the KL of each forward pass."""
    w_prev, w_min, err_prev = 50.0, 0.1, 0.0
    c, period, ramp, step, c_max, past_t = 0.5, 6000, 1000, 0.15, 20.0, 5
    queue = collections.deque([0.0] * (past_t - 1))
    out = []
    for it, kl in enumerate(kls, start=1):
        if it % period < ramp and it >= period:
            c += step / ramp
        if c > c_max:
            c = c_max
        queue.append(kl)
        avg = np.mean(queue)
        err = c - avg
        d_p = kp * (1.0 / (1.0 + math.exp(err)) - 1.0 / (1.0 + math.exp(err_prev)))
        d_i = 0.0 if w_prev < w_min else ki_code * err
        w_prev = (d_p + d_i) + w_prev
        err_prev = err
        queue.popleft()
        out.append(max(w_prev, w_min))
    return np.array(out)


def controlvae_official_betas(kls, kp=0.01, ki_code=-0.001):
    """β of each update of the official ControlVAE loop, from the KL of each forward pass."""
    integ, w_prev = 0.0, 1.0
    c, period, step, c_max = 0.5, 5000, 0.15, 18.0
    out = []
    for it, kl in enumerate(kls, start=1):
        if it % period == 0:
            c += step
        if c > c_max:
            c = c_max
        err = c - kl
        p = kp * (1.0 / (1.0 + math.exp(err))) + 1
        i_new = integ if w_prev < 1 else integ + ki_code * err
        w_prev, integ = p + i_new, i_new
        out.append(max(w_prev, 1.0))
    return np.array(out)
