"""docs/your_vae.md as written, at tiny sizes: the model file, identify, fit, check, verify, the in-loop variant."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "your_vae.md"
TEXT = DOC.read_text()
PY = dict(re.findall(r"```python file=(\S+)\n(.*?)```", TEXT, re.S))
BASH = re.findall(r"```bash\n(.*?)```", TEXT, re.S)
#: What the test cuts to tiny sizes (the doc shows the real ones).
TINY_FLAGS = ("--settle-steps 240 --fit-steps 200 --val-steps 150 --closed-steps 120 --lead 20 --hold-min 3 --hold-max 30 "
              "--relay-steps 200")
TINY_KW = dict(settle_steps=240, fit_steps=200, val_steps=150, closed_steps=120, lead=20, hold_min=3, hold_max=30)


def tiny(cmd: str) -> str:
    if cmd.startswith("klcontrol identify"):
        cmd += " " + TINY_FLAGS
    cmd = re.sub(r"--steps \d+", "--steps 150", cmd)
    return cmd.replace("--ray 0 0.05 0.1 0.2 0.4 --ray 10 0.05 0.1 0.2", "--ray 0 0.05 0.4 --ray 10 0.1")


def test_every_block_is_run_here():
    assert set(PY) == {"my_vae.py", "inloop.py"}
    assert len(BASH) == 6 and len(re.findall(r"```python\s*\n", TEXT)) == 0


@pytest.mark.slow
def test_the_chain_runs_as_written(tmp_path):
    (tmp_path / "my_vae.py").write_text(PY["my_vae.py"])
    env = dict(os.environ, OMP_NUM_THREADS="1", KLCONTROL_CACHE=str(tmp_path / "cache"))
    chain = [b for b in BASH if " --plan " not in b]  # the in-loop log's fit runs below
    script = "set -euo pipefail\n" + "\n".join(tiny(line) for block in chain for line in block.strip().splitlines())
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "critical gain on Kp = 0·Ki" in r.stdout and (tmp_path / "my_stability.png").exists()
    assert (tmp_path / "my_fit.json").exists() and "agrees with" in r.stdout
    assert "measured (3 excitation runs" in r.stdout
    # the in-loop variant: its plan and log fit like identify's traces
    code = PY["inloop.py"]
    for k, v in TINY_KW.items():
        code = re.sub(rf"{k}=\d+", f"{k}={v}", code)
    (tmp_path / "inloop.py").write_text(code)
    r = subprocess.run([sys.executable, "inloop.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (inloop_fit,) = [b for b in BASH if " --plan " in b]
    r = subprocess.run(["bash", "-c", inloop_fit.strip()], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fit saved to my_inloop_fit.json" in r.stdout
