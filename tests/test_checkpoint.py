"""klcontrol.vae_plant.training.checkpoint: checksums verified on load, non-finite weights refused, atomic writes that survive a full disk."""
import errno
import hashlib
import os

import pytest
import torch

from klcontrol.vae_plant.training import checkpoint as ckpt


def _state(step=3, fill=1.0):
    return dict(format=ckpt.FORMAT, step=step, config={}, model={"w": torch.full((4, 4), fill)},
                optimizer={"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": []},
                controller={}, rng={})


def test_round_trip_and_sha256sum_format(tmp_path):
    path = ckpt.checkpoint_path(str(tmp_path), 3)
    ckpt.save(_state(), path)
    line = open(path + ".sha256").read()
    assert line == f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}  step_00000003.pt\n"
    assert torch.equal(ckpt.load(path)["model"]["w"], torch.ones(4, 4))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_00000003.pt", "step_00000003.pt.sha256"]


def test_flipped_bytes_missing_checksum_and_nan_weights_are_refused(tmp_path):
    d = str(tmp_path)
    ckpt.save(_state(3), ckpt.checkpoint_path(d, 3))
    path = ckpt.checkpoint_path(d, 6)
    ckpt.save(_state(6), path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01  # one bit
    open(path, "wb").write(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"step_00000006\.pt is corrupt: its bytes do not match the SHA-256"):
        ckpt.load(path)
    good, state = ckpt.latest_good(d)
    assert good == ckpt.checkpoint_path(d, 3) and state["step"] == 3
    ckpt.save(_state(6), path)
    os.remove(path + ".sha256")
    with pytest.raises(ckpt.CheckpointError, match="has no checksum file"):
        ckpt.load(path)
    torch.save(dict(_state(6), format=1), path)  # the first format had no checksum: still loads
    assert ckpt.load(path)["step"] == 6
    ckpt.save(_state(6, fill=float("nan")), path)
    with pytest.raises(ckpt.CheckpointError, match=r"holds NaN or infinite values \(model\.w\)"):
        ckpt.load(path)
    assert ckpt.latest_good(d)[0] == ckpt.checkpoint_path(d, 3)


def test_full_disk_leaves_no_temporary_file_and_keeps_the_last_good(tmp_path, monkeypatch):
    d = str(tmp_path)
    first = ckpt.checkpoint_path(d, 3)
    ckpt.save(_state(3), first)
    before = open(first, "rb").read()
    real = ckpt._write_bytes

    def full(path, data):  # what torch.save into a full disk does: part of the bytes, then ENOSPC
        real(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(ckpt, "_write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(_state(6), ckpt.checkpoint_path(d, 6))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_00000003.pt", "step_00000003.pt.sha256"]
    assert open(first, "rb").read() == before and ckpt.latest(d) == first
