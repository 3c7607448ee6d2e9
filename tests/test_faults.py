"""Fault injection: the trainer is SIGKILLed at chosen and at random points, then resumed.

Each fault runs ``klcontrol train`` in a subprocess whose driver patches one
writer to kill the process at its n-th call: halfway through the bytes of a
checkpoint, between the checksum's rename and the checkpoint's, in the middle
of a trace row, inside a TensorBoard flush, halfway through ``config.json``,
or at the start of a random update.  The run is then resumed as a user would
(``klcontrol train --resume DIR``, following the message's advice if it
refuses): the final ``trace.csv`` must be byte-identical to an uninterrupted
run, and the final checkpoint's weights equal.  A refusal must be one line
naming the directory and the way on (``--restart`` or ``--from-step``); a
silently different trace fails the test.  Seeded, tiny preset, 12 steps.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys

import pytest
import torch

from klcontrol.cli import main
from klcontrol.vae_plant.training import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--steps", "12", "--batch-size", "2", "--checkpoint-every", "4", "--flush-every", "3", "--seed", "5",
        "--no-progress"]

# The driver: patch one writer so that its n-th call kills the process (SIGKILL: no cleanup, no finally).
DRIVER = r'''
import os, signal, sys
point, n = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}
def hit():
    calls["n"] += 1
    return calls["n"] == n
def die():
    os.kill(os.getpid(), signal.SIGKILL)
import klcontrol.vae_plant.training.checkpoint as ckpt, klcontrol.vae_plant.training.trainer as train, klcontrol.vae_plant.training.trace_log as trace_log
if point == "checkpoint_bytes":
    real = ckpt._write_bytes
    def write(path, data):
        if path.endswith(".pt.tmp") and hit():
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
            die()
        real(path, data)
    ckpt._write_bytes = write
elif point == "checkpoint_rename":
    real_replace = os.replace
    class _OS:
        def __getattr__(self, k):
            return getattr(os, k)
        def replace(self, src, dst):
            if dst.endswith(".pt") and hit():
                die()  # the checksum file is renamed already, the checkpoint is not
            real_replace(src, dst)
    ckpt.os = _OS()
elif point == "trace_row":
    real_write = trace_log.TraceLog.write
    def write(self, block, setpoints):
        if hit():
            real_write(self, block[:1], setpoints[:1])
            with open(self.path, "a") as fh:
                fh.write("99,1.5,2.")  # half a row, no newline
                fh.flush()
            die()
        real_write(self, block, setpoints)
    trace_log.TraceLog.write = write
elif point == "tensorboard_flush":
    from torch.utils.tensorboard import SummaryWriter
    real_flush = SummaryWriter.flush
    def flush(self):
        if hit():
            die()
        real_flush(self)
    SummaryWriter.flush = flush
elif point == "config_json":
    real_json = train._write_json
    def write_json(path, obj):
        if hit():
            with open(path + ".tmp", "w") as fh:
                fh.write('{"settings": {"ste')
            die()
        real_json(path, obj)
    train._write_json = write_json
elif point == "update":
    real_update = train.Trainer._update
    def update(self):
        if hit():
            die()
        real_update(self)
    train.Trainer._update = update
from klcontrol.cli import main
sys.exit(main(sys.argv[3:]))
'''


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _killed(point, n, argv):
    p = subprocess.run([sys.executable, "-c", DRIVER, point, str(n), *argv], env=_env(), capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stderr


def _final_weights(run):
    return ckpt.load(ckpt.latest(run))["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("faults") / "ref")
    assert main(["train", "--out", d, *ARGS]) == 0
    return open(os.path.join(d, "trace.csv"), "rb").read(), _final_weights(d)


def _recover(run, capsys):
    """Resume as a user would: follow a refusal's advice (--restart / --from-step) once; return the messages."""
    said = []
    argv = ["train", "--resume", run, "--no-progress"]
    for _ in range(3):
        rc = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if rc == 0:
            return said
        lines = [ln for ln in err.splitlines() if ln.strip() and ": warning: " not in ln]
        assert len(lines) == 1 and lines[0].startswith("klcontrol train: error: ") and run in lines[0], err
        said.append(lines[0])
        if m := re.search(r"(--out|--resume) (\S+) --restart", lines[0]):
            # the advice names the flag: --resume DIR --restart (stored settings) or --out DIR --restart (these)
            argv = ["train", m.group(1), m.group(2), "--restart"] + (ARGS if m.group(1) == "--out" else ["--no-progress"])
        elif m := re.search(r"--from-step (\d+)", lines[0]):
            argv = ["train", "--resume", run, "--from-step", m.group(1), "--no-progress"]
        else:
            pytest.fail(f"refused without a way on: {lines[0]}")
    pytest.fail(f"could not recover {run}: {said}")


def _check_identical(run, reference):
    trace, weights = reference
    assert open(os.path.join(run, "trace.csv"), "rb").read() == trace
    got = _final_weights(run)
    assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k]) for k in weights)


# (point, n): the n-th call of that writer kills the run.  Checkpoint writes come at steps 4, 8, 12; trace
# flushes every 3 steps; config.json is written at the start and after the first forward pass.
# Each costs a subprocess (a torch import), so the list is short; the random test adds two more kills.
FAULTS = [
    ("checkpoint_bytes", 1), ("checkpoint_bytes", 2), ("checkpoint_rename", 3), ("trace_row", 2),
    ("tensorboard_flush", 3), ("config_json", 1),
]


@pytest.mark.parametrize("point,n", FAULTS, ids=[f"{p}-{n}" for p, n in FAULTS])
def test_kill_then_resume_is_identical_or_refused_clearly(point, n, tmp_path, capsys, reference):
    run = str(tmp_path / "run")
    rc, err = _killed(point, n, ["train", "--out", run, *ARGS])
    assert rc == -signal.SIGKILL, (rc, err)
    said = _recover(run, capsys)
    _check_identical(run, reference)
    if point == "checkpoint_bytes" and n == 1:  # nothing verified on disk: the only way on is a restart
        assert said and "--restart" in said[0]


def test_kills_at_random_updates_and_inside_resumes(tmp_path, capsys, reference):
    rng = random.Random(2026)
    run = str(tmp_path / "run")
    # a first kill at a random update of the new run, a second inside the resume, then a clean resume
    rc, _ = _killed("update", rng.randint(6, 12), ["train", "--out", run, *ARGS])
    assert rc == -signal.SIGKILL
    rc, err = _killed(rng.choice(["update", "trace_row", "checkpoint_bytes"]), rng.randint(1, 3),
                      ["train", "--resume", run, "--no-progress"])
    assert rc in (-signal.SIGKILL, 0), err
    _recover(run, capsys)
    _check_identical(run, reference)
