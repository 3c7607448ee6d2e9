"""The identification experiment inside a user's own training loop, on the MNIST example plant.

A user who cannot hand their loop over to ``klcontrol identify --plant`` writes what is below: their loop as it is,
with ``beta = exp.step(kl)`` where a β controller would go and one log line per update. Then::

    klcontrol fit runs/mnist_inloop/log.csv --plan runs/mnist_inloop/plan.json --kl-lag 1 --out runs/mnist_inloop/fit.json
    klcontrol check --fit runs/mnist_inloop/fit.json --kp 0.01 --ki 0.005 --window 5 --beta-range 4 4 --ray 0 10

Run: ``python examples/mnist_inloop.py [OUT_DIR]`` (about 17 700 updates, 3 minutes on one CPU core).
"""
import csv
import os
import sys

import torch

from klcontrol.analysis.identification import InLoopExperiment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_vae import make  # noqa: E402 (the user's own model, beside this file)


def main(out="runs/mnist_inloop"):
    """Train from scratch through every phase of the experiment; write ``log.csv`` and ``plan.json``."""
    torch.set_num_threads(1)
    os.makedirs(out, exist_ok=True)
    plant = make(seed=0, batch_size=64)
    exp = InLoopExperiment(betas=(2, 4, 8), main=4)
    with open(os.path.join(out, "log.csv"), "w", newline="") as fh:
        log = csv.writer(fh)
        log.writerow(["step", "beta", "kl"])
        for step in range(exp.updates):
            row = {}

            def beta_of(kl, row=row):
                row["kl"], row["beta"] = kl, exp.step(kl)
                return row["beta"]

            plant.step(beta_of)
            log.writerow([step, row["beta"], row["kl"]])
    exp.save(os.path.join(out, "plan.json"))
    print(f"{exp.updates} updates; plan and log in {out}; derived: {exp.plan()['derived']['delta']:.3f} (δ)")


if __name__ == "__main__":
    main(*sys.argv[1:])
