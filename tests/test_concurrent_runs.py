"""benchmarks/concurrent_runs.py: the vmap path trains the same runs as separate models, and the script runs."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from klcontrol.registry import make_preset
from klcontrol.vae_plant.training.model import vae_losses

# The spawned workers of the processes mode import the benchmark by name, so it must be on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import concurrent_runs as cr  # noqa: E402

CPU = torch.device("cpu")


def _grads(model):
    return {k: p.grad for k, p in model.named_parameters()}


def test_vmap_runs_equal_separate_runs():
    n, b = 3, 2
    runs = [cr.Run(CPU, b, seed=s) for s in range(n)]
    group = cr.VmapRuns(CPU, b, range(n))
    for i, run in enumerate(runs):
        for k, v in group.model_state(i).items():
            assert torch.equal(v, run.model.state_dict()[k]), k
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        x = (torch.rand(n, b, 1, 64, 64, generator=g) < 0.1).float()
        noise = torch.randn(n, b, cr.LATENT_DIM, generator=g)
        with torch.no_grad():
            recon, kl, kl_lat = group.losses(x, noise)
            for i, run in enumerate(runs):
                r_i, k_i, kl_i = vae_losses(run.model, x[i], noise[i])
                torch.testing.assert_close(recon[i], r_i, rtol=1e-5, atol=1e-3)
                torch.testing.assert_close(kl[i], k_i, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(kl_lat[i], kl_i, rtol=1e-5, atol=1e-5)
        beta = group.update(x, noise)
        for i, run in enumerate(runs):
            torch.testing.assert_close(beta[i], run.update(x[i], noise[i]), rtol=1e-9, atol=1e-9)
            for name, p in zip(group.names, group.params.values()):
                ref = _grads(run.model)[name]
                torch.testing.assert_close(p.grad[i], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6)
            for k, v in group.model_state(i).items():
                torch.testing.assert_close(v, run.model.state_dict()[k], rtol=1e-5, atol=1e-6)
    # The controller moved β away from β(0): the loops were really closed per run.
    assert not torch.allclose(beta, torch.full_like(beta, 150.0))


@given(
    name=st.sampled_from(["dynamicvae", "dynamicvae-official", "controlvae", "capacity", "dynamicvae-p"]),
    kls=st.lists(st.lists(st.floats(0.0, 40.0), min_size=3, max_size=3), min_size=1, max_size=6),
    y0=st.lists(st.floats(0.0, 30.0), min_size=3, max_size=3),
)
def test_stacked_controller_equals_separate_controllers(name, kls, y0):
    singles = [make_preset(name) for _ in y0]
    for c, y in zip(singles, y0):
        c.prime(y)
    stacked = cr.stack_controllers(singles)
    np.testing.assert_allclose(stacked.beta, [c.beta for c in singles])
    for row in kls:
        kl = torch.tensor(row, dtype=torch.float64)
        out = stacked.step(kl)
        ref = torch.stack([c.step(kl[i]) for i, c in enumerate(singles)])
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_stack_controllers_rejects_mismatches():
    with pytest.raises(ValueError, match="at least one"):
        cr.stack_controllers([])
    with pytest.raises(ValueError, match="different kinds"):
        cr.stack_controllers([make_preset("dynamicvae"), make_preset("fixed")])
    a, b = make_preset("dynamicvae"), make_preset("dynamicvae").replace(kp=0.02)
    with pytest.raises(ValueError, match="share parameters"):
        cr.stack_controllers([a, b])


def test_main_smoke_all_modes(capsys):
    r = cr.main(["--device", "cpu", "--runs", "2", "--steps", "2", "--warmup", "1", "--batch-size", "2",
                 "--threads", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["modes"].keys() == set(cr.MODES)
    assert printed["runs"] == 2 and printed["batch_size"] == 2 and printed["steps_per_run"] == 2
    for m, v in r["modes"].items():
        assert v["steps_per_s"] > 0 and v["wall_s"] > 0
        assert v["steps_per_s"] == pytest.approx(2 * 2 / v["wall_s"])
    assert r["modes"]["sequential"]["ratio_vs_sequential"] == 1.0


def test_main_table_without_sequential(capsys):
    r = cr.main(["--device", "cpu", "--runs", "1", "--steps", "1", "--warmup", "1", "--batch-size", "2",
                 "--modes", "vmap"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert r["modes"].keys() == {"vmap"} and r["modes"]["vmap"]["ratio_vs_sequential"] is None
    assert len(rows) == 1 and rows[0].split()[0] == "vmap" and rows[0].split()[3] == "-"


@pytest.mark.parametrize("argv", [["--modes", "vmap,threads"], ["--runs", "0"], ["--warmup", "0"]])
def test_main_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        cr.main(["--device", "cpu", *argv])
