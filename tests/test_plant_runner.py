"""run_plant: any plant of the protocol trained with the trainer's guarantees (vae_plant/training/plant_runner.py)."""
import json
import os

import numpy as np
import pytest

from klcontrol import Constant, FixedBeta, IncrementalPI
from klcontrol.realplant import check_plant, load_factory
from klcontrol.vae_plant.training import checkpoint as ckpt
from klcontrol.vae_plant.training.plant_runner import RUN_KIND, run_plant
from klcontrol.vae_plant.training.trace_log import read_trace_csv

TINY = os.path.join(os.path.dirname(__file__), "tiny_plant.py") + ":make"


def _pi(c):
    return IncrementalPI(0.01, 0.05, Constant(c), beta0=1.25, filter=5)


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    d = tmp_path_factory.mktemp("settle") / "settle"
    run_plant(d, TINY, FixedBeta(1.0), 150, seed=0)
    return d


def test_trace_rows_and_provenance(settled):
    t = read_trace_csv(settled / "trace.csv")
    assert len(t["kl"]) == 150 and np.all(t["beta"] == 1.0) and np.all(np.isfinite(t["recon"]))
    cfg = json.loads((settled / "config.json").read_text())
    assert cfg["kind"] == RUN_KIND and cfg["settings"]["plant"] == TINY and cfg["settings"]["factory_kwargs"] == {"seed": 0}
    assert len(cfg["provenance"]["plant_source_sha256"]) == 64
    state = ckpt.load(ckpt.latest(str(settled)))
    assert state["kind"] == ckpt.PLANT_KIND and state["step"] == 150


def test_a_stopped_run_resumes_bit_for_bit(settled, tmp_path):
    c = float(read_trace_csv(settled / "trace.csv")["kl"][-50:].mean())
    run_plant(tmp_path / "whole", TINY, _pi(c), 90, init_from=settled)
    run_plant(tmp_path / "parts", TINY, _pi(c), 40, init_from=settled, checkpoint_every=25)
    r = run_plant(tmp_path / "parts", TINY, _pi(c), 90, init_from=settled, checkpoint_every=25)
    assert r["resumed_from"] == 40
    a, b = (read_trace_csv(tmp_path / n / "trace.csv") for n in ("whole", "parts"))
    for k in ("beta", "kl", "recon", "setpoint"):
        np.testing.assert_array_equal(a[k], b[k])
    assert run_plant(tmp_path / "whole", TINY, _pi(c), 90, init_from=settled)["seconds"] == 0.0  # finished: reused


def test_refusals_name_the_problem(settled, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"kind": "something else"}')
    with pytest.raises(ValueError, match="did not"):
        run_plant(foreign, TINY, FixedBeta(1.0), 10)
    assert (foreign / "config.json").read_text() == '{"kind": "something else"}'
    users = tmp_path / "users"
    users.mkdir()
    (users / "trace.csv").write_text("my own data\n")
    with pytest.raises(ValueError, match="never overwrites"):
        run_plant(users, TINY, FixedBeta(1.0), 10)
    assert (users / "trace.csv").read_text() == "my own data\n"
    run_plant(tmp_path / "a", TINY, FixedBeta(1.0), 10)
    with pytest.raises(ValueError, match="other settings"):
        run_plant(tmp_path / "a", TINY, FixedBeta(2.0), 20)
    with pytest.raises(ValueError, match="no verified checkpoint"):
        run_plant(tmp_path / "b", TINY, FixedBeta(1.0), 10, init_from=tmp_path / "nowhere")
    for bad in ("nocolon", "tests/none.py:make", "json:nothing", "os:sep"):
        with pytest.raises(ValueError, match="--plant"):
            load_factory(bad)
    with pytest.raises(TypeError, match="plant protocol"):
        check_plant(object())


def test_a_nan_kl_stops_with_a_message(tmp_path):
    class Broken:
        def __init__(self):
            self.n = 0

        def step(self, beta_of):
            self.n += 1
            return beta_of(float("nan") if self.n > 5 else 1.0)

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, sd):
            self.n = sd["n"]

    with pytest.raises(ValueError, match="update 5: the plant's KL is nan"):
        run_plant(tmp_path / "nan", lambda: Broken(), FixedBeta(1.0), 20)


def test_klcontrols_own_vae_is_a_plant_of_the_protocol(tmp_path):
    import io

    import torch

    spec = "klcontrol.vae_plant.training.dsprites_plant:make"
    make = load_factory(spec)
    a = check_plant(make(seed=1, batch_size=2))
    first = [a.step(lambda kl: 4.0) for _ in range(3)]
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    after = [a.step(lambda kl: 4.0) for _ in range(2)]
    b = make(seed=5, batch_size=2)  # loaded after a ran: the noise comes from torch's global generator, restored too
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert [b.step(lambda kl: 4.0) for _ in range(2)] == after
    assert [make(seed=1, batch_size=2).step(lambda kl: 4.0)] == first[:1]
    r = run_plant(tmp_path / "own", spec, FixedBeta(4.0), 4, seed=1, batch_size=2)
    assert r["rows"] == 4
