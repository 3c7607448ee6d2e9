"""Tests of klcontrol.vae_plant.data.dsprites: the official grid and index order, sprite geometry, the .npz loader."""
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol.vae_plant.data.dsprites import DSprites, render
from klcontrol.vae_plant.data.reference import GIF_SWEEPS, read_gif, sweep_iou

SIZES = (1, 3, 6, 40, 32, 32)



@pytest.fixture(scope="module")
def ds():
    return DSprites()


def img(shape=2, scale=5, orient=0, x=15, y=15):
    return render(torch.tensor([[0, shape, scale, orient, x, y]]))[0, 0].numpy()


def moments(a):
    rows, cols = np.nonzero(a)
    return a.sum(), cols.mean(), rows.mean(), rows, cols


def test_size_and_factors(ds):
    assert len(ds) == 737280
    assert ds.factor_sizes == SIZES
    assert ds.factor_names == ("color", "shape", "scale", "orientation", "posX", "posY")
    np.testing.assert_allclose(ds.factor_values[2], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(ds.factor_values[3], np.linspace(0, 2 * math.pi, 40))
    np.testing.assert_allclose(ds.factor_values[4], np.linspace(0, 1, 32))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 737279))
def test_item_classes_in_official_order(i):
    ds = DSprites()
    image, classes = ds[i]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert set(image.unique().tolist()) <= {0.0, 1.0}
    assert classes.tolist() == list(np.unravel_index(i, SIZES))
    assert i == int(np.dot(classes.numpy(), [737280, 245760, 40960, 1024, 32, 1]))
    assert ds.index_of(classes[None]).item() == i


def test_getitem_bad_index(ds):
    with pytest.raises(IndexError):
        ds[737280]
    assert ds[-1][1].tolist() == [0, 2, 5, 39, 31, 31]
    with pytest.raises(TypeError):
        ds[1.5]


def test_posx_moves_right_posy_moves_down():
    xs = [moments(img(x=k))[1] for k in range(0, 32, 5)]
    ys = [moments(img(y=k))[2] for k in range(0, 32, 5)]
    assert np.all(np.diff(xs) > 5) and np.all(np.diff(ys) > 5)
    assert xs[0] < 20 and xs[-1] > 44 and ys[0] < 20 and ys[-1] > 44
    # posX does not move the sprite vertically and vice versa
    assert np.ptp([moments(img(x=k))[2] for k in range(0, 32, 5)]) < 0.5


def test_scale_grows_area():
    for shape in range(3):
        areas = [img(shape=shape, scale=s).sum() for s in range(6)]
        assert np.all(np.diff(areas) > 0)
        assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.15)  # lengths double from 0.5 to 1
    assert 350 < img(shape=0, scale=5).sum() < 450  # a 20 × 20 px square, like dSprites


def test_orientation_rotates_counter_clockwise():
    for k in (0, 3, 7, 12, 25):
        _, cx, cy, rows, cols = moments(img(shape=1, orient=k))
        u, v = cols - cx, -(rows - cy)  # screen coordinates, y up
        cov = np.cov(np.stack([u, v]))
        w, vec = np.linalg.eigh(cov)
        major = math.atan2(vec[1, 1], vec[0, 1]) % math.pi
        expected = (2 * math.pi * k / 39) % math.pi  # horizontal at orientation 0, as the official frames
        diff = abs((major - expected + math.pi / 2) % math.pi - math.pi / 2)
        assert diff < math.radians(4), (k, math.degrees(major), math.degrees(expected))
    assert not np.array_equal(img(orient=0), img(orient=10))
    assert np.array_equal(img(orient=0), img(orient=39))  # 0 and 2π: the grid's end points coincide


def test_shapes_differ():
    sq, el, he = (img(shape=s) for s in range(3))
    for a, b in ((sq, el), (sq, he), (el, he)):
        assert np.abs(a - b).sum() > 60
    rows, cols = np.nonzero(sq)
    assert sq.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # the square fills its box
    rows, cols = np.nonzero(el)
    assert el.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) == pytest.approx(math.pi / 4, abs=0.06)
    rows, cols = np.nonzero(he)
    # the heart's lobes are on top: its upper half is wider than its lower half
    mid = rows.mean()
    assert he[rows.min() : int(mid)].sum(1).max() > he[int(mid) + 2 :].sum(1).mean()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CI checks out ../shared beside the clone; KLCONTROL_DSPRITES_GIF points elsewhere (e.g. from a worktree).
GIF = os.environ.get("KLCONTROL_DSPRITES_GIF") or os.path.join(ROOT, "..", "shared", "reference", "dsprites", "dsprites.gif")


@pytest.fixture(scope="module")
def official_frames():
    if not os.path.isfile(GIF):
        pytest.skip(f"official dsprites.gif not found at {GIF} (deepmind/dsprites-dataset; set KLCONTROL_DSPRITES_GIF)")
    return read_gif(GIF)


def test_sweep_table_covers_the_animation_once():
    frames = sorted(f for idx, _ in GIF_SWEEPS.values() for f in idx)
    assert frames == list(range(320))


def test_matches_official_frames(official_frames):
    ious = sweep_iou(official_frames)
    assert set(ious) == set(GIF_SWEEPS)
    for name, (mean, low) in ious.items():
        assert mean >= 0.90, (name, mean)
        assert low >= 0.85, (name, low)


def test_sweep_table_agrees_with_the_frames(official_frames):
    # The table was read off the frames; check the readings it rests on.
    area = official_frames.sum((1, 2))
    for name, (idx, classes) in GIF_SWEEPS.items():
        cls = np.array(classes)
        a = area[idx]
        if name.endswith("scale"):
            by_scale = [a[cls[:, 2] == s] for s in range(6)]
            assert all(np.ptp(v) == 0 for v in by_scale) and np.all(np.diff([v[0] for v in by_scale]) > 0), name
        cols = np.array([np.nonzero(f)[1].mean() + 0.5 for f in official_frames[idx]])
        rows = np.array([np.nonzero(f)[0].mean() + 0.5 for f in official_frames[idx]])
        if name == "heart posX":
            np.testing.assert_allclose(cols, 16 + 32 * cls[:, 4] / 31, atol=0.4)
        if name == "heart posY":
            np.testing.assert_allclose(rows - rows[0], 32 * cls[:, 5] / 31, atol=0.5)
    assert official_frames[[0, 17, 192, 209, 256, 273]].sum((1, 2)).tolist() == [58, 222, 76, 288, 100, 400]
    # orientation 0 and 39 (0 and 2π) coincide in every orientation sweep
    for shape in ("heart", "ellipse", "square"):
        idx = GIF_SWEEPS[f"{shape} orientation"][0]
        assert np.array_equal(official_frames[idx[0]], official_frames[idx[-1]])


def test_no_sprite_touches_the_border(ds):
    # The extreme corner of the position square with every shape at scale 1 and all orientations.
    cls = torch.tensor([[0, s, 5, o, x, y] for s in range(3) for o in range(40) for x in (0, 31) for y in (0, 31)])
    im = render(cls)[:, 0]
    border = im[:, 0].sum() + im[:, -1].sum() + im[:, :, 0].sum() + im[:, :, -1].sum()
    assert border == 0


def test_reference_reader_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_gif(tmp_path / "missing.gif")
    bad = tmp_path / "bad.gif"
    bad.write_bytes(b"not a gif")
    with pytest.raises(ValueError, match="cannot read"):
        read_gif(bad)


def test_sample_on_device_is_reproducible(ds):
    x1, i1 = ds.sample(64, torch.Generator().manual_seed(5))
    x2, i2 = ds.sample(64, torch.Generator().manual_seed(5))
    assert x1.shape == (64, 1, 64, 64) and torch.equal(x1, x2) and torch.equal(i1, i2)
    assert torch.equal(x1[3], ds[int(i1[3])][0])
    assert 0.02 < x1.mean().item() < 0.07  # dSprites: ≈ 0.043 of the pixels are on


def test_batches_in_index_order(ds):
    idx = [5, 1000, 737279]
    (x, c), = list(ds.batches(8, indices=idx))
    assert torch.equal(c, ds.classes(idx))
    assert torch.equal(x, ds.images(idx))


def _write_npz(path, imgs, classes, values, sizes):
    meta = np.array({"latents_sizes": np.array(sizes), "latents_names": ("color", "shape", "scale",
                     "orientation", "posX", "posY"), "title": "small"}, dtype=object)
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=values, metadata=meta)


def test_npz_loader(tmp_path):
    ds = DSprites()
    pick = [0, 87040, 332800, 578560, 737279]
    imgs = ds.images(pick)[:, 0].numpy().astype(np.uint8)
    classes = ds.classes(pick).numpy()
    values = np.stack([[ds.factor_values[k][c] for k, c in enumerate(row)] for row in classes])
    path = tmp_path / "small.npz"
    _write_npz(path, imgs, classes, values, SIZES)
    small = DSprites(path=path)
    assert len(small) == 5 and small.factor_sizes == SIZES
    for i in range(5):
        image, cls = small[i]
        assert torch.equal(image[0], torch.from_numpy(imgs[i]).float())
        assert cls.tolist() == classes[i].tolist()
    np.testing.assert_allclose(small.factor_values[1][[0, 1, 2]], [1, 2, 3])
    x, i = small.sample(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 64, 64) and torch.equal(x[0, 0], torch.from_numpy(imgs[int(i[0])]).float())


def test_npz_loader_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        DSprites(path=tmp_path / "missing.npz")
    np.savez(tmp_path / "nokeys.npz", imgs=np.zeros((1, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="lacks the dSprites keys"):
        DSprites(path=tmp_path / "nokeys.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        DSprites(path=tmp_path / "junk.npz")
    c = np.zeros((2, 6), np.int64)
    _write_npz(tmp_path / "gray.npz", np.full((2, 64, 64), 255, np.uint8), c, c.astype(float), SIZES)
    with pytest.raises(ValueError, match="binary"):
        DSprites(path=tmp_path / "gray.npz")
    _write_npz(tmp_path / "range.npz", np.zeros((2, 64, 64), np.uint8), c + 3, c.astype(float), SIZES)
    with pytest.raises(ValueError, match="out of range"):
        DSprites(path=tmp_path / "range.npz")


def test_bit_packing_round_trip(ds):
    """The CUDA path keeps the set bit-packed; packing and unpacking must be lossless."""
    from klcontrol.vae_plant.data.dsprites import _pack, _unpack

    x = ds.images(torch.arange(0, 737280, 9973))
    packed = _pack(x)
    assert packed.shape == (len(x), 512) and packed.dtype == torch.uint8
    assert torch.equal(_unpack(packed), x)
    flat = x.reshape(len(x), -1).numpy().astype(np.uint8)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(flat, axis=1))  # same layout as the .npz path


class _Payload:
    """Pickles to a call of ``open(marker, "w")``: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_npz_pickle_payload_in_metadata_runs_no_code(tmp_path):
    marker = tmp_path / "PWNED"
    imgs = np.zeros((2, 64, 64), np.uint8)
    c = np.zeros((2, 6), np.int64)
    meta = np.array({"latents_sizes": np.array(SIZES), "evil": _Payload(marker)}, dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, imgs=imgs, latents_classes=c, latents_values=c.astype(float), metadata=meta)
    with pytest.raises(ValueError, match=r"evil\.npz: metadata is not a plain pickled dict .*refusing to load io\.open"):
        DSprites(path=path)
    assert not marker.exists()
    # the same payload as a data array: refused by allow_pickle=False
    bad = np.array([_Payload(marker)], dtype=object)
    np.savez(tmp_path / "evil2.npz", imgs=bad, latents_classes=c, latents_values=c.astype(float),
             metadata=np.array({"latents_sizes": np.array(SIZES)}, dtype=object))
    with pytest.raises(ValueError, match=r"evil2\.npz: cannot read the dSprites arrays"):
        DSprites(path=tmp_path / "evil2.npz")
    assert not marker.exists()
    # and through the CLI: a clean error, no traceback, no code run
    from klcontrol.cli import main

    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"]) == 1
    assert not marker.exists()


def test_npz_metadata_variants(tmp_path):
    imgs = np.zeros((2, 64, 64), np.uint8)
    c = np.zeros((2, 6), np.int64)
    cases = {
        "plain.npz": (np.array(SIZES), "must be a pickled dict"),
        "list.npz": (np.array([1, 2], dtype=object), "must be a dict"),
        "nosizes.npz": (np.array({"title": "x"}, dtype=object), "no readable 'latents_sizes'"),
        "zero.npz": (np.array({"latents_sizes": np.array([0, 3])}, dtype=object), "no readable 'latents_sizes'"),
    }
    for name, (meta, msg) in cases.items():
        np.savez(tmp_path / name, imgs=imgs, latents_classes=c, latents_values=c.astype(float), metadata=meta)
        with pytest.raises(ValueError, match=msg):
            DSprites(path=tmp_path / name)
    np.savez(tmp_path / "float_classes.npz", imgs=imgs, latents_classes=c.astype(float),
             latents_values=c.astype(float), metadata=np.array({"latents_sizes": np.array(SIZES)}, dtype=object))
    with pytest.raises(ValueError, match="must hold integers"):
        DSprites(path=tmp_path / "float_classes.npz")
