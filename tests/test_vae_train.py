"""Tests of klcontrol.vae_plant.training.trainer and `klcontrol train`: time indexing, controllers in the loop, exact resume, bad input."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from official_loops import controlvae_official_betas, dynamicvae_official_betas

from klcontrol.cli import main
from klcontrol.controllers import FixedBeta, IncrementalPI
from klcontrol.registry import PRESETS, make_preset
from klcontrol.setpoints import StepRamp
from klcontrol.vae_plant.commands.train import CONTROLLER_NAMES, SCHEDULE_NAMES
from klcontrol.vae_plant.training import checkpoint as ckpt
from klcontrol.vae_plant.training import presets
from klcontrol.vae_plant.training.trace_log import read_trace_csv
from klcontrol.vae_plant.training.trainer import Trainer, load_run, train

ARGS = ["train", "--preset", "tiny", "--controller", "dynamicvae", "--seed", "3", "--checkpoint-every", "20",
        "--no-progress"]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: 40 steps in one go; B: stopped at 20, then resumed to 40 (the must-hold check)."""
    root = tmp_path_factory.mktemp("runs")
    a, b = str(root / "A"), str(root / "B")
    assert main(ARGS + ["--steps", "40", "--out", a]) == 0
    assert main(ARGS + ["--steps", "20", "--out", b]) == 0
    with open(os.path.join(b, "trace.csv"), "rb") as fh:
        b20 = fh.read()
    assert main(ARGS + ["--steps", "40", "--resume", b]) == 0
    return a, b, b20


def test_resume_is_byte_identical(runs):
    a, b, b20 = runs
    with open(os.path.join(a, "trace.csv"), "rb") as fa, open(os.path.join(b, "trace.csv"), "rb") as fb:
        ta, tb = fa.read(), fb.read()
    assert ta == tb
    lines = ta.decode().splitlines()
    assert lines[0] == "step,beta,kl,recon,setpoint," + ",".join(f"kl_{i}" for i in range(10))
    assert len(lines) == 41 and lines[-1].startswith("39,")
    assert b20.decode().splitlines()[:20] == lines[:20]  # rows 0..18 unchanged, row 19 from the same state


def test_trace_follows_the_controller_law(runs):
    """β(t+1) = controller.step(y(t)) with the history primed by the initial model's KL."""
    a = runs[0]
    tr = read_trace_csv(os.path.join(a, "trace.csv"))
    with open(os.path.join(a, "config.json")) as fh:
        cfg = json.load(fh)
    ctrl = IncrementalPI.dynamicvae_dsprites()
    ctrl.prime(cfg["initial_kl"])
    assert tr["beta"][0] == 150.0
    expected = [ctrl.beta] + [ctrl.step(y) for y in tr["kl"][:-1]]
    # torch and NumPy sigmoids differ in the last bits; the integrator accumulates that
    np.testing.assert_allclose(tr["beta"], expected, rtol=1e-10)
    assert len(np.unique(tr["beta"])) == 40  # β really moves every step
    np.testing.assert_array_equal(tr["setpoint"], StepRamp.dynamicvae_dsprites()(np.arange(40)))
    np.testing.assert_allclose(tr["kl_latent"].sum(1), tr["kl"], rtol=1e-5)
    assert np.all(tr["recon"] > 0) and np.all(tr["kl"] >= 0)


def test_checkpoint_is_weights_only_and_complete(runs):
    a = runs[0]
    state = torch.load(os.path.join(a, "checkpoints", "step_00000040.pt"), weights_only=True)
    assert state["step"] == 40
    assert {"model", "optimizer", "controller", "setpoint", "rng", "config"} <= set(state)
    assert set(state["rng"]) >= {"torch", "cuda", "numpy", "python", "generators"}
    assert set(state["rng"]["generators"]) == {"data", "noise"}
    assert state["controller"]["kind"] == "incremental_pi" and state["controller"]["t"] == 39
    assert state["setpoint"]["description"]["kind"] == "StepRamp"
    assert os.listdir(os.path.join(a, "tb"))
    cfg = json.load(open(os.path.join(a, "config.json")))
    assert {"torch", "git_commit", "command", "device_name"} <= set(cfg["provenance"])
    assert cfg["settings"]["seed"] == 3 and cfg["settings"]["device"] == "cpu"


def test_load_run_gives_trace_and_model(runs):
    res = load_run(runs[0])
    assert res.step == 40 and len(res.trace["beta"]) == 40
    mu, classes = res.encode(indices_dataset(), batch_size=4)
    assert mu.shape == (6, 10) and classes.shape == (6, 6)
    assert res.to_trace().kl.shape == (40,)


def indices_dataset():
    from klcontrol.vae_plant.data.dsprites import DSprites

    class Few(DSprites):
        def batches(self, batch_size=1024, indices=None):
            return super().batches(batch_size, indices=[0, 1, 2, 87040, 332800, 578560])

    return Few()


def test_capacity_relay_gives_negative_beta(tmp_path):
    res = train(tmp_path / "cap", controller="capacity", steps=6, batch_size=4, progress=False)
    t = res.trace
    assert np.all(np.abs(t["beta"]) == 1000.0)
    # β(t+1) = γ·sign(y(t) − C(t)); C ramps from 0, so early KLs are above it
    np.testing.assert_array_equal(t["beta"][1:], 1000.0 * np.sign(t["kl"][:-1] - t["setpoint"][:-1]))


def test_custom_controller_object_and_negative_relay(tmp_path):
    ctrl = FixedBeta(-0.5)
    res = train(tmp_path / "neg", controller=ctrl, steps=3, batch_size=2, progress=False)
    assert np.all(res.trace["beta"] == -0.5) and np.all(np.isnan(res.trace["setpoint"]))
    assert ctrl.steps_taken == 0  # the caller's object is not advanced
    res = train(tmp_path / "neg", controller=FixedBeta(-0.5), steps=4, resume=True, progress=False)
    assert len(res.trace["beta"]) == 4
    with pytest.raises(ValueError, match="custom controller"):
        train(tmp_path / "neg", steps=5, resume=True, progress=False)


def test_speed_options_run_on_cpu(tmp_path):
    res = train(tmp_path / "fast", controller="fixed", steps=3, batch_size=2, channels_last=True, fused_adam=True,
                amp=True, progress=False)
    assert np.all(np.isfinite(res.trace["kl"])) and res.config["settings"]["amp"] is True


def test_nan_kl_stops_with_clear_error_and_keeps_good_state(tmp_path):
    out = str(tmp_path / "nan")
    tr = Trainer(out, controller="dynamicvae", steps=16, batch_size=2, checkpoint_every=5, flush_every=5,
                 progress=False)
    tr.run(until=10)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.fill_(float("nan"))
    # row 9 is y(9), the KL of the model after update 9, measured by the forward pass of update 10
    with pytest.raises(ValueError, match=r"NaN or infinite at step 9 .*checkpoints/step_00000010\.pt"):
        tr.run()
    tr.close()
    t = read_trace_csv(os.path.join(out, "trace.csv"))
    assert list(t["step"]) == list(range(9)) and np.all(np.isfinite(t["kl"]))
    assert sorted(f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".pt")) == [
        "step_00000005.pt", "step_00000010.pt"]
    good = torch.load(os.path.join(out, "checkpoints", "step_00000010.pt"), weights_only=True)
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_bad_input_cli(runs, tmp_path, capsys):
    b = runs[1]
    before = open(os.path.join(b, "trace.csv"), "rb").read()
    cases = [
        (["train", "--preset", "huge", "--out", str(tmp_path / "x")], "unknown preset 'huge'"),
        (["train", "--controller", "pid9", "--out", str(tmp_path / "x")], "unknown controller 'pid9'"),
        (["train", "--resume", b, "--steps", "50", "--seed", "4"], "different settings: seed=4"),
        (["train", "--resume", b, "--steps", "50", "--batch-size", "16"], "different settings: batch_size=16"),
        (["train", "--resume", b, "--steps", "10"], "already at step 40"),
        (["train", "--out", b, "--steps", "50"], "already holds a run"),
        (["train", "--resume", str(tmp_path / "none"), "--steps", "50"], "holds no run"),
        (["train", "--steps", "5"], "--out DIR"),
        (["train", "--out", str(tmp_path / "y"), "--resume", b], "different directories"),
        (["train", "--out", str(tmp_path / "z"), "--steps", "0"], "--steps 0: must be ≥ 1"),
    ]
    for argv, msg in cases:
        assert main(argv + ["--no-progress"]) == 1, argv
        assert msg in capsys.readouterr().err, argv
    assert open(os.path.join(b, "trace.csv"), "rb").read() == before
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "z")


def test_missing_and_corrupt_checkpoints(runs, tmp_path, capsys):
    c = str(tmp_path / "C")
    shutil.copytree(runs[1], c)
    os.remove(os.path.join(c, "checkpoints", "step_00000040.pt"))
    with open(os.path.join(c, "checkpoints", "step_00000020.pt"), "r+b") as fh:
        fh.truncate(1000)
    before = open(os.path.join(c, "trace.csv"), "rb").read()
    assert main(["train", "--resume", c, "--steps", "50", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "step_00000020.pt is corrupt" in err
    os.remove(os.path.join(c, "checkpoints", "step_00000020.pt"))
    assert main(["train", "--resume", c, "--steps", "50", "--no-progress"]) == 1
    assert "no checkpoint in" in capsys.readouterr().err
    assert open(os.path.join(c, "trace.csv"), "rb").read() == before


@pytest.mark.parametrize("name, official", [("dynamicvae-official", dynamicvae_official_betas),
                                            ("controlvae-official", controlvae_official_betas)])
def test_official_presets_train_with_the_official_beta_call_for_call(tmp_path, name, official):
    """The official loops use the PID output of update t's own forward pass for update t, from t = 0."""
    res = train(tmp_path / name, preset="tiny", controller=name, steps=12, seed=1, progress=False)
    tr = res.trace
    with open(tmp_path / name / "config.json") as fh:
        cfg = json.load(fh)
    kls = np.concatenate([[cfg["initial_kl"]], tr["kl"]])  # forward pass of update t measures y(t − 1)
    ref = official(kls)
    np.testing.assert_allclose(tr["beta"], ref[:-1], rtol=0, atol=1e-9)
    # row t's set point is the C of the call that consumed y(t): official call t + 1 sees C(t + 3)
    base = make_preset(name.replace("-official", "")).setpoint
    np.testing.assert_array_equal(tr["setpoint"], base(np.arange(len(tr["beta"])) + 3))


def test_presets_and_cli_names_agree():
    assert set(CONTROLLER_NAMES) == set(PRESETS)
    assert set(SCHEDULE_NAMES) == set(presets.SCHEDULES)
    assert presets.SCHEDULES["paper"].batch_size == 128
    assert presets.SCHEDULES["paper"].adam_betas == (0.9, 0.999) and presets.SCHEDULES["paper"].lr == 1e-4


def test_controller_presets_match_the_papers():
    c = {name: make_preset(name) for name in PRESETS}
    assert c["fixed"].beta == 4.0
    assert c["capacity"].gains["gamma"] == 1000.0 and c["capacity"].setpoint(100_000) == 25.0
    g = c["controlvae"].gains
    assert (g["kp"], g["ki"], g["beta_min"]) == (0.01, 0.001, 1.0)
    assert c["controlvae"].setpoint(4999) == 0.5 and c["controlvae"].setpoint(10**7) == 18.0
    for name in ("dynamicvae", "dynamicvae-official", "dynamicvae-step", "dynamicvae-t"):
        g = c[name].gains
        assert (g["kp"], g["ki"], g["beta0"]) == (0.01, 0.005, 50.0 if name == "dynamicvae-official" else 150.0)
    assert c["dynamicvae"].filter.window == 5 and c["dynamicvae-t"].filter.window == 1
    for name in ("dynamicvae-official", "controlvae-official"):
        assert c[name].anti_windup == "official" and not presets.primes(name) and presets.first_update(name) == "step"
    assert presets.first_update("dynamicvae") is True and presets.primes("controlvae")
    # step: same levels as the ramp schedule at period ends, but a jump instead of a 1000-step ramp
    ramp, step = c["dynamicvae"].setpoint, c["dynamicvae-step"].setpoint
    assert step(6001) == pytest.approx(0.65) and ramp(6001) < 0.501
    assert step(5999 + 6000 * 10) == pytest.approx(ramp(5999 + 6000 * 10))
    assert type(c["dynamicvae-p"]).__name__ == "PositionalPI" and c["dynamicvae-p"].filter.window == 5
    assert c["dynamicvae-p"].beta < 0.01  # no large β(0)


# ----------------------------------------------------------------------------- reliability: corrupt, NaN, disk, restart


def _trace_bytes(d):
    return open(os.path.join(d, "trace.csv"), "rb").read()


def test_bit_flipped_latest_checkpoint_is_named_and_the_previous_offered(runs, tmp_path, capsys):
    a, b, _ = runs
    c = str(tmp_path / "C")
    shutil.copytree(b, c)
    latest = os.path.join(c, "checkpoints", "step_00000040.pt")
    data = bytearray(open(latest, "rb").read())
    for i in np.random.default_rng(0).choice(len(data), 64, replace=False):
        data[i] ^= 0xFF
    open(latest, "wb").write(bytes(data))
    before = _trace_bytes(c)
    assert main(["train", "--resume", c, "--steps", "50", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "step_00000040.pt is corrupt: its bytes do not match the SHA-256" in err
    assert "the previous good checkpoint is checkpoints/step_00000020.pt" in err and "--from-step 20" in err
    assert _trace_bytes(c) == before
    # the offer works: from step 20 the run is redone to the same bytes, the bad file is set aside
    assert main(["train", "--resume", c, "--from-step", "20", "--steps", "40", "--no-progress"]) == 0
    assert _trace_bytes(c) == _trace_bytes(a)
    assert os.path.exists(latest + ".discarded") and ckpt.load(latest)["step"] == 40
    assert main(["train", "--resume", c, "--from-step", "30", "--steps", "40", "--no-progress"]) == 1
    assert "no checkpoints/step_00000030.pt" in capsys.readouterr().err


def test_nan_weights_are_never_called_a_good_checkpoint(tmp_path):
    ref = train(tmp_path / "ref", steps=16, batch_size=2, checkpoint_every=5, flush_every=5, progress=False)
    out = str(tmp_path / "nan")
    tr = Trainer(out, steps=16, batch_size=2, checkpoint_every=5, flush_every=5, progress=False)
    real_step = tr.opt.step

    def poisoned_step(*a, **kw):  # update 9 turns the weights NaN; its own forward pass (row 8) was fine
        real_step(*a, **kw)
        if tr.step == 9:
            with torch.no_grad():
                for p in tr.model.parameters():
                    p.fill_(float("nan"))

    tr.opt.step = poisoned_step
    with pytest.raises(ValueError, match=r"model became NaN or infinite before step 10 .*every good row and the "
                                         r"last good checkpoint is checkpoints/step_00000005\.pt"):
        tr.run()
    tr.close()
    assert not os.path.exists(ckpt.checkpoint_path(out, 10))
    rows = _trace_bytes(out).decode().splitlines()
    assert len(rows) == 1 + 9  # rows 0…8: every row measured before the NaN
    assert rows == _trace_bytes(ref.run_dir).decode().splitlines()[:10]
    res = train(out, resume=True, progress=False)  # from step 5: nothing lost, nothing different
    assert _trace_bytes(out) == _trace_bytes(ref.run_dir)
    assert res.step == 16


def _fill_disk_at(monkeypatch, call):
    """Make checkpoint writing fail with ENOSPC on the ``call``-th checkpoint (after writing half its bytes)."""
    import errno

    real, n = ckpt._write_bytes, {"pt": 0}

    def write(path, data):
        if path.endswith(".pt.tmp"):
            n["pt"] += 1
            if n["pt"] == call:
                real(path, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_bytes", write)


SMALL = ["train", "--steps", "12", "--batch-size", "2", "--checkpoint-every", "4", "--flush-every", "3", "--no-progress"]


@pytest.fixture(scope="module")
def small_ref(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("small") / "ref")
    assert main(SMALL + ["--out", d]) == 0
    return _trace_bytes(d)


def test_full_disk_during_a_checkpoint_leaves_a_resumable_run(tmp_path, monkeypatch, capsys, small_ref):
    out = str(tmp_path / "full")
    _fill_disk_at(monkeypatch, 2)
    assert main(SMALL + ["--out", out]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No space left on device" in err and "step_00000008.pt" in err
    assert "the last good checkpoint is checkpoints/step_00000004.pt" in err and f"--resume {out}" in err
    assert not [f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["train", "--resume", out, "--no-progress"]) == 0
    assert _trace_bytes(out) == small_ref


def test_full_disk_at_the_first_checkpoint_then_restart(tmp_path, monkeypatch, capsys, small_ref):
    out = str(tmp_path / "full1")
    _fill_disk_at(monkeypatch, 1)
    assert main(SMALL + ["--out", out]) == 1
    assert "no good checkpoint was written yet (restart with --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["train", "--resume", out, "--no-progress"]) == 1
    assert f"--resume {out} --restart" in capsys.readouterr().err
    assert main(SMALL + ["--out", out]) == 1
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", out, "--restart", "--no-progress"]) == 0
    assert _trace_bytes(out) == small_ref


def test_interrupted_before_the_first_checkpoint_exits_130_and_restarts(tmp_path, monkeypatch, capsys, small_ref):
    out = str(tmp_path / "ctrlc")

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", interrupt)
    assert main(SMALL + ["--out", out]) == 130
    assert "klcontrol train: interrupted" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(SMALL + ["--out", out, "--restart"]) == 0  # --out DIR --restart: the given settings
    assert _trace_bytes(out) == small_ref
    assert main(SMALL + ["--out", out, "--restart"]) == 1  # now it has a good checkpoint: no restart
    assert "has a good checkpoint (checkpoints/step_00000012.pt)" in capsys.readouterr().err


def test_threads_are_stored_and_a_change_is_refused(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "thr")
    assert main(SMALL[:2] + ["6"] + SMALL[3:] + ["--out", out, "--threads", "1"]) == 0
    assert json.load(open(os.path.join(out, "config.json")))["settings"]["threads"] == 1
    assert main(["train", "--resume", out, "--steps", "12", "--threads", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "threads=2 (the run has 1)" in err and "changes the trace bytes" in err
    seen = []
    real = Trainer._update
    monkeypatch.setattr(Trainer, "_update", lambda self: (seen.append(torch.get_num_threads()), real(self)))
    torch.set_num_threads(2)
    try:
        assert main(["train", "--resume", out, "--steps", "12", "--no-progress"]) == 0
        assert set(seen) == {1} and torch.get_num_threads() == 2  # the stored count, restored afterwards
    finally:
        torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(out, "config.json")))
    cfg["provenance"]["torch"] = "0.0.1"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
    assert main(["train", "--resume", out, "--steps", "14", "--no-progress"]) == 0
    assert f"warning: resuming {out} with torch 0.0.1 → {torch.__version__}" in capsys.readouterr().err


def test_read_only_out_is_a_clean_error(tmp_path, capsys):
    ro = "/sys/kernel"  # read-only even for root
    if not os.path.isdir(ro) or os.access(ro, os.W_OK) and os.geteuid() != 0:
        pytest.skip("no read-only directory to try")
    assert main(["train", "--out", ro, "--steps", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klcontrol train: error: /sys/kernel/.lock:") and "Traceback" not in err
    assert main(["train", "--out", "/sys/klcontrol-run", "--steps", "2", "--no-progress"]) == 1
    assert "/sys/klcontrol-run" in capsys.readouterr().err


def test_mixed_trace_is_refused_by_readers(runs, tmp_path):
    a = runs[0]
    lines = _trace_bytes(a).decode().splitlines(True)
    mixed = tmp_path / "trace.csv"
    mixed.write_text("".join(lines[:11] + lines[1:20] + lines[11:]))  # steps 0–9, 0–18, 10–39: two runs in one file
    with pytest.raises(ValueError, match=r"not 0, 1, 2, … in order \(line 12 has step 0, expected 10\)"):
        read_trace_csv(mixed)


def test_failed_new_run_leaves_no_directory(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    out = tmp_path / "never"
    assert main(["train", "--data", str(bad), "--out", str(out), "--steps", "2", "--no-progress"]) == 1
    assert "not a zip archive" in capsys.readouterr().err and not out.exists()


def test_geco_run_feeds_the_reconstruction_and_beta_follows_the_law(tmp_path):
    """A GECO run on ``tiny``: the controller consumes recon (Controller.measures), β(t+1) = step(recon(t))."""
    res = train(str(tmp_path / "geco"), preset="tiny", controller="geco", steps=30, seed=1, progress=False)
    tr = read_trace_csv(os.path.join(res.run_dir, "trace.csv"))
    with open(os.path.join(res.run_dir, "config.json")) as fh:
        cfg = json.load(fh)
    ctrl = make_preset("geco")
    assert ctrl.measures == "recon"
    ctrl.prime(cfg["initial_recon"])
    recon = tr["recon"].astype(np.float32).astype(float)  # the CSV's shortest float32 repr, back to the float32
    expected = [ctrl.beta] + [ctrl.step(r) for r in recon[:-1]]
    np.testing.assert_allclose(tr["beta"], expected, rtol=1e-13)
    # recon ≫ κ at the start: β falls every update until it reaches the clamp β_min
    down = np.flatnonzero(np.isclose(tr["beta"], ctrl.gains["beta_min"], rtol=1e-12))
    assert 10 < down[0] < 30 and np.all(np.diff(tr["beta"][:down[0] + 1]) < 0) and len(down) == 30 - down[0]
    # the KL would give another β sequence: the trainer really passed the reconstruction
    other = make_preset("geco")
    other.prime(cfg["initial_kl"])
    assert not np.allclose([other.beta] + [other.step(k) for k in tr["kl"][:-1]], tr["beta"], rtol=1e-3)
    np.testing.assert_array_equal(tr["setpoint"], 100.0)


def test_warm_start_continues_the_checkpointed_model_with_a_new_controller(runs, tmp_path):
    """init_from: model and Adam state of the checkpoint, the new run's own controller, seed and trace."""
    from klcontrol.controllers import ScheduledBeta
    from klcontrol.setpoints import Constant, Sequence

    a = runs[0]
    src = load_run(a)
    sched = ScheduledBeta(Sequence([(Constant(2.0), 3), (Constant(5.0), None)]))
    tr = Trainer(str(tmp_path / "W"), preset="tiny", controller=sched, steps=6, seed=9, init_from=a, progress=False)
    for p, q in zip(tr.model.state_dict().values(), src.model.state_dict().values()):
        torch.testing.assert_close(p, q)
    assert tr.opt.state_dict()["state"][0]["step"] == 40  # Adam's moments and step count carried over
    res = tr.run()
    tr.close()
    np.testing.assert_array_equal(res.trace["beta"], [2, 2, 2, 5, 5, 5])
    assert res.config["settings"]["init_from"]["step"] == 40
    assert res.config["settings"]["init_from"]["checkpoint"].endswith("step_00000040.pt")
    # the warm model's KL starts where the checkpointed model was, not at a fresh network's
    fresh = train(str(tmp_path / "F"), preset="tiny", controller=sched, steps=6, seed=9, progress=False)
    assert abs(res.meta["initial_kl"] - fresh.meta["initial_kl"]) > 1e-6


def test_warm_start_bad_input(runs, tmp_path):
    with pytest.raises(ValueError, match="cannot be combined with resume"):
        Trainer(str(tmp_path / "X"), preset="tiny", steps=5, init_from=runs[0], resume=True)
    with pytest.raises(ValueError, match="checkpoint"):
        Trainer(str(tmp_path / "X"), preset="tiny", steps=5, init_from=str(tmp_path / "nothing_here"))
    with pytest.raises(ValueError, match="hidden_fc"):
        Trainer(str(tmp_path / "Y"), preset="tiny", steps=5, init_from=runs[0], hidden_fc=True)
    assert not os.path.exists(tmp_path / "X") and not os.path.exists(tmp_path / "Y")


@pytest.mark.parametrize("preset", ["dynamicvae", "geco"])
def test_on_a_cpu_the_law_runs_on_floats_with_the_tensor_paths_betas(tmp_path, preset):
    from klcontrol.vae_plant.training.trainer import Trainer

    runs = {}
    for host in (True, False):
        tr = Trainer(str(tmp_path / f"{preset}{host}"), preset="tiny", controller=preset, steps=25, seed=3,
                     device="cpu", checkpoint_every=0, flush_every=5, progress=False)
        assert tr._host_control  # CPU, one loop, NumPy state
        tr._host_control = host
        runs[host] = tr.run()
        tr.close()
        assert torch.is_tensor(tr.ctrl.state["beta"]) is not host
    np.testing.assert_allclose(runs[True].trace["beta"], runs[False].trace["beta"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(runs[True].trace["kl"], runs[False].trace["kl"], rtol=1e-5)
