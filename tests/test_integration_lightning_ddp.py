"""KLControlCallback under real DDP: two CPU processes (gloo) launched by torchrun.

The test runs this file as a script with ``torchrun --nproc_per_node 2``;
Lightning (``accelerator="cpu", devices=2, strategy="ddp"``) finds the
torchrun environment and trains a tiny VAE on two disjoint halves of the data,
so each rank measures a different KL.  Every rank must end with the same β
sequence and controller state, equal to one controller fed the rank-averaged
KL, and the checkpoint must hold that state.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning", reason="the Lightning callback is an optional extra (klcontrol[lightning])")

from klcontrol import IncrementalPI  # noqa: E402
from klcontrol.integrations import KLControlCallback  # noqa: E402

WORLD = 2
STEPS = 12  # per rank
BATCH = 8


def make_controller():
    # Responsive gains, so β moves a lot in a few steps and a missing reduction shows.
    return IncrementalPI(kp=0.5, ki=0.1, setpoint=0.5, beta0=1.5, filter=3)


class TinyVAE(L.LightningModule):
    """A small VAE that records the KL it logs and the β it used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(16, 4)
        self.dec = nn.Linear(2, 16)
        self.beta = None
        self.kls, self.betas_used = [], []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        g = torch.Generator().manual_seed(int(self.global_step) + 1000 * self.global_rank)
        z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
        recon = nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        self.kls.append(kl.detach().clone())
        self.betas_used.append(torch.as_tensor(self.beta).clone())
        self.log("kl", kl)  # this rank's KL: no sync_dist, the callback averages
        return recon + self.beta * kl

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _train(out: Path) -> None:
    """One rank's part (run under torchrun): train, then save what this rank saw."""
    torch.set_num_threads(1)
    # Rows of rank 1's half are sparser, so the two ranks' KLs differ clearly.
    gen = torch.Generator().manual_seed(1)
    density = torch.tensor([0.15, 0.5]).repeat(WORLD * STEPS * BATCH // 2)[:, None]
    data = (torch.rand(WORLD * STEPS * BATCH, 16, generator=gen) < density).float()
    loader = DataLoader(TensorDataset(data), batch_size=BATCH, shuffle=False)
    model = TinyVAE()
    cb = KLControlCallback(make_controller(), float_path=False)  # the accelerator path, as under DDP on GPUs
    trainer = L.Trainer(
        accelerator="cpu", devices=WORLD, strategy="ddp", max_epochs=1, default_root_dir=out, callbacks=[cb],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, loader)
    trainer.save_checkpoint(out / "final.ckpt")  # written by rank 0, collective on every rank
    torch.save(
        {"rank": trainer.global_rank, "world": trainer.world_size, "kls": torch.stack(model.kls),
         "betas_used": torch.stack(model.betas_used), "final_beta": model.beta, "state": cb.controller.state_dict(),
         "state_key": cb.state_key},
        out / f"rank{trainer.global_rank}.pt",
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def states_equal(a, b):
    """Controller state dicts equal entry by entry (tensors compared exactly)."""
    assert a["kind"] == b["kind"] and a["t"] == b["t"] and a["params"] == b["params"]
    for k in a["state"]:
        xs, ys = a["state"][k], b["state"][k]
        for x, y in zip(xs, ys) if k == "filter" else [(xs, ys)]:
            if not torch.equal(torch.as_tensor(x), torch.as_tensor(y)):
                return False
    return True


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    ckpt = torch.load(out / "final.ckpt", weights_only=False)
    return results, ckpt


def test_two_ranks_measure_different_kls(ranks):
    (r0, r1), _ = ranks
    assert [r0["rank"], r1["rank"]] == [0, 1] and r0["world"] == r1["world"] == WORLD
    assert len(r0["kls"]) == len(r1["kls"]) == STEPS
    # different at every step, so controllers fed their own rank's KL would disagree
    assert torch.all(r0["kls"] != r1["kls"]) and (r0["kls"] - r1["kls"]).abs().mean() > 0.02


def test_every_rank_uses_the_same_beta_and_ends_in_the_same_state(ranks):
    (r0, r1), _ = ranks
    assert torch.equal(r0["betas_used"], r1["betas_used"])
    assert torch.equal(r0["final_beta"], r1["final_beta"])
    assert states_equal(r0["state"], r1["state"]) and r0["state"]["t"] == STEPS


def test_ranks_equal_one_controller_fed_the_rank_averaged_kl(ranks):
    (r0, r1), _ = ranks
    ref = make_controller()
    expected = [torch.as_tensor(ref.beta)]
    for k0, k1 in zip(r0["kls"], r1["kls"]):
        expected.append(ref.step((k0 + k1) / WORLD))
    for r in (r0, r1):
        # β of batch t+1 answers the mean KL of batch t.
        for used, exp in zip(r["betas_used"], expected):
            assert torch.equal(used.to(exp.dtype), exp)
        assert torch.equal(r["final_beta"], expected[-1])
        assert states_equal(r["state"], ref.state_dict())
    # A controller fed rank 0's KL alone ends elsewhere.
    alone = make_controller()
    for k in r0["kls"]:
        alone.step(k)
    assert not torch.equal(alone.beta, ref.beta)
    assert len({float(b) for b in expected}) > STEPS // 2  # β really moves


def test_checkpoint_holds_the_shared_controller_state(ranks):
    (r0, _), ckpt = ranks
    assert states_equal(ckpt["callbacks"][r0["state_key"]]["controller"], r0["state"])


if __name__ == "__main__":
    _train(Path(sys.argv[1]))
