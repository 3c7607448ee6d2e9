"""DDP integration: every rank computes the same β from the rank-averaged KL.

Two CPU processes (gloo) run, in one spawn: the DDP script of
docs/integration.md as written, then controllers fed different local KL
sequences on each rank.  Both ranks' β sequences must be identical and equal
to a single-process controller fed the mean.
"""
import math
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from klcontrol import IncrementalPI, PositionalPI
from klcontrol.integrations import DistributedController, all_reduce_mean, distributed_world_size

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
STEPS = 40
WORLD = 2


def doc_block(name):
    """The python code block tagged ``file=<name>`` in docs/integration.md."""
    blocks = dict(re.findall(r"```python file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    return blocks[name]


def local_kl(rank):
    """Rank-dependent KL measurements (float64), far apart so a missing reduction shows."""
    t = torch.arange(STEPS, dtype=torch.float64)
    return 30.0 * torch.exp(-t / 10) + 2.0 + (4.0 * rank - 2.0) * (1.5 + torch.sin(t))


def make_controller():
    # Responsive gains so that β moves a lot over the short sequence.
    return IncrementalPI(kp=0.5, ki=0.2, setpoint=8.0, beta0=2.0, filter=3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, out_dir, port):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )
    torch.set_num_threads(1)
    result = {}

    # The documented script, as written (it initialises and destroys the group itself).
    ns = {"__name__": "__main__"}
    exec(compile(doc_block("train_ddp.py"), "docs/integration.md:train_ddp.py", "exec"), ns)
    result["doc_beta"] = ns["beta"]
    result["doc_state"] = ns["ctrl"].state_dict()
    result["doc_local_kl"] = ns["kl"].detach()

    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    result["world"] = distributed_world_size()
    kls = local_kl(rank)
    ctrl = DistributedController(make_controller())
    bare = make_controller()
    betas, betas_fn, betas_float = [], [], []
    float_ctrl = PositionalPI(kp=0.5, ki=0.05, setpoint=8.0, beta_max=50.0)
    for kl in kls:
        before = kl.clone()
        betas.append(ctrl.step(kl))
        betas_fn.append(bare.step(all_reduce_mean(kl)))
        betas_float.append(float_ctrl.step(all_reduce_mean(float(kl))))
        assert torch.equal(kl, before), "all_reduce_mean modified the caller's tensor"
    arr = all_reduce_mean(np.array([rank, 10.0 * rank]))
    result.update(
        betas=torch.stack(betas),
        betas_fn=torch.stack(betas_fn),
        betas_float=betas_float,
        array_mean=arr,
        int_mean=all_reduce_mean(torch.tensor(rank + 1)),
        state=ctrl.state_dict(),
    )
    dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out), _free_port()), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_both_ranks_compute_the_same_beta(ranks):
    r0, r1 = ranks
    assert r0["world"] == r1["world"] == WORLD
    assert torch.equal(r0["betas"], r1["betas"])
    assert torch.equal(r0["betas_fn"], r1["betas_fn"])
    assert r0["betas_float"] == r1["betas_float"]
    # The local sequences differ a lot, so unsynchronised controllers would not agree.
    assert not torch.equal(make_steps(local_kl(0)), make_steps(local_kl(1)))


def make_steps(kls):
    ctrl = make_controller()
    return torch.stack([ctrl.step(k) for k in kls])


def test_ranks_match_a_single_process_fed_the_mean(ranks):
    mean = (local_kl(0) + local_kl(1)) / 2
    expected = make_steps(mean)
    for r in ranks:
        assert torch.equal(r["betas"], expected)
        assert torch.equal(r["betas_fn"], expected)
    float_ctrl = PositionalPI(kp=0.5, ki=0.05, setpoint=8.0, beta_max=50.0)
    expected_float = [float_ctrl.step(float(k)) for k in mean]
    for r in ranks:
        assert r["betas_float"] == pytest.approx(expected_float, rel=1e-12, abs=1e-12)
    assert expected.std() > 0.1  # β actually moved


def test_the_controller_state_is_identical_on_every_rank(ranks):
    s0, s1 = ranks[0]["state"], ranks[1]["state"]
    assert s0["t"] == s1["t"] == STEPS
    for k in s0["state"]:
        a, b = s0["state"][k], s1["state"][k]
        for x, y in zip(a, b) if k == "filter" else [(a, b)]:
            assert torch.equal(x, y)


def test_reductions_of_arrays_and_integer_tensors(ranks):
    for r in ranks:
        np.testing.assert_array_equal(r["array_mean"], [0.5, 5.0])
        assert r["int_mean"].dtype == torch.get_default_dtype()
        assert float(r["int_mean"]) == 1.5


def test_documented_ddp_script_runs_under_two_ranks(ranks):
    r0, r1 = ranks
    # Different batches on each rank ...
    assert not torch.equal(r0["doc_local_kl"], r1["doc_local_kl"])
    # ... one β for both.
    assert torch.equal(r0["doc_beta"], r1["doc_beta"])
    assert r0["doc_state"]["t"] == 100
    assert math.isfinite(float(r0["doc_beta"]))


def test_single_process_is_a_passthrough():
    assert not dist.is_initialized()
    assert distributed_world_size() == 1
    kl = torch.tensor(3.0, requires_grad=True) * 2
    out = all_reduce_mean(kl)
    assert not out.requires_grad and float(out) == 6.0
    assert all_reduce_mean(2.5) == 2.5
    np.testing.assert_array_equal(all_reduce_mean([1.0, 2.0]), [1.0, 2.0])
    assert all_reduce_mean(torch.tensor(3)).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="KL measurement must be"):
        all_reduce_mean("nats")


def test_distributed_controller_delegates_to_the_wrapped_controller():
    inner = make_controller()
    ctrl = DistributedController(inner)
    ref = make_controller()
    for k in local_kl(0)[:10]:
        assert torch.equal(ctrl.step(k), ref.step(k))
    assert torch.equal(ctrl.beta, ref.beta)
    assert ctrl.steps_taken == 10
    sd = ctrl.state_dict()
    fresh = DistributedController(make_controller())
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.step(torch.tensor(5.0, dtype=torch.float64)), ref.step(torch.tensor(5.0, dtype=torch.float64)))
    clone = ctrl.copy()  # the wrapped controller's copy
    assert isinstance(clone, IncrementalPI)
    import copy

    assert copy.deepcopy(ctrl).controller is not inner
    assert "IncrementalPI" in repr(ctrl)
    with pytest.raises(ValueError, match="step"):
        DistributedController(object())
