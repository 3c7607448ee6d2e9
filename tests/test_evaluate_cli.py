"""`klcontrol evaluate` on a tiny trained run: metrics in range, figures written, bad input refused."""
import json

import pytest

from klcontrol.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--preset", "tiny", "--controller", "dynamicvae", "--steps", "20", "--seed", "1",
                 "--out", str(d), "--checkpoint-every", "20"]) == 0
    return d


def test_evaluate_writes_metrics_and_figures(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--n-images", "3000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("mig", "mig_tcvae", "rmig"):
        assert 0.0 <= out[k] <= 1.0
    assert set(out["rmig_per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
    saved = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert saved["mig"] == out["mig"] and saved["n_images"] == 3000
    for name in ("training.png", "latent_kl.png", "traversals.png"):
        assert (run_dir / "eval" / name).stat().st_size > 1000


@pytest.mark.parametrize("args, msg", [(["/nonexistent/run"], "not a directory"), (["--n-images", "-1"], "n-images")])
def test_evaluate_bad_input(run_dir, capsys, args, msg):
    argv = ["evaluate"] + (args if args[0].startswith("/") else [str(run_dir)] + args)
    assert main(argv) == 1
    assert msg in capsys.readouterr().err


def test_cuda_asked_for_without_cuda_names_the_flag_not_the_checkpoint(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(tmp_path), "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda: torch sees no CUDA device" in err and "corrupt" not in err
