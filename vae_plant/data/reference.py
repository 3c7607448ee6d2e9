"""Compare procedural dSprites with the official animation ``dsprites.gif``.

The official repository (deepmind/dsprites-dataset, Apache-2.0) ships an
animation of 320 binary 64×64 frames.  Which factors each frame shows was read
off the frames themselves (areas, centroids, principal axes; see
``docs/vae_plant.md``): for each shape, in the order heart, ellipse, square,
the scale sweeps 0.5 → 1 → 0.5 → 1, then the orientation sweeps its 40 values
at scale 1, then (heart only) the position runs along the border of the
position square — posY 0 → 1 at posX 0, posX 0 → 1 at posY 1, posY 1 → 0 at
posX 1, posX 1 → 0 at posY 0 — and the scale falls back to 0.5.  Everything
not swept sits at class 0 (orientation 0, position (0, 0)) or at scale 1.

:data:`GIF_SWEEPS` lists each sweep's frames and their factor classes;
:func:`sweep_iou` renders those classes with :func:`klcontrol.vae_plant.data.dsprites.render` and
returns the intersection-over-union with the official frames.  Nothing here is
used for rendering: the renderer's geometry is fitted, not copied.

Run ``python -m klcontrol.vae_plant.data.reference PATH/TO/dsprites.gif`` to print
the mean and minimum IoU of every sweep.
"""
from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["GIF_SWEEPS", "read_gif", "sweep_iou"]

_UP, _DOWN = list(range(6)), list(range(5, -1, -1))
_R32, _R40 = list(range(32)), list(range(40))


def _sweep(first_frames, shape, scale, orient, x, y):
    frames = [f for a, b in first_frames for f in range(a, b + 1)]
    n = len(frames)

    def col(v):
        return list(v) if isinstance(v, list) else [v] * n

    cols = [col(v) for v in (scale, orient, x, y)]
    if any(len(c) != n for c in cols):
        raise AssertionError("sweep table is inconsistent")  # guards the table below, never user input
    return frames, [(0, shape, *c) for c in zip(*cols)]


#: Sweep name → (GIF frame numbers, factor classes ``(color, shape, scale, orientation, posX, posY)`` per frame).
GIF_SWEEPS = {
    "heart scale": _sweep([(0, 17), (186, 191)], 2, _UP + _DOWN + _UP + _DOWN, 0, 0, 0),
    "heart orientation": _sweep([(18, 57)], 2, 5, _R40, 0, 0),
    "heart posY": _sweep([(58, 89), (122, 153)], 2, 5, 0, [0] * 32 + [31] * 32, _R32 + _R32[::-1]),
    "heart posX": _sweep([(90, 121), (154, 185)], 2, 5, 0, _R32 + _R32[::-1], [31] * 32 + [0] * 32),
    "ellipse scale": _sweep([(192, 209), (250, 255)], 1, _UP + _DOWN + _UP + _DOWN, 0, 0, 0),
    "ellipse orientation": _sweep([(210, 249)], 1, 5, _R40, 0, 0),
    "square scale": _sweep([(256, 273), (314, 319)], 0, _UP + _DOWN + _UP + _DOWN, 0, 0, 0),
    "square orientation": _sweep([(274, 313)], 0, 5, _R40, 0, 0),
}


def read_gif(path) -> np.ndarray:
    """The frames of ``dsprites.gif`` as a boolean array ``(320, 64, 64)``.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, or not 320 frames of 64×64.
    """
    from PIL import Image, ImageSequence

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"dSprites reference animation not found: {path}")
    try:
        with Image.open(path) as im:
            frames = np.array([np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(im)])
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot read {path} as a GIF: {exc}") from None
    if frames.shape != (320, 64, 64):
        raise ValueError(f"{path}: expected 320 frames of 64×64 (the official dsprites.gif), got {frames.shape}")
    return frames


def sweep_iou(frames: np.ndarray, render=None) -> dict:
    """Per-sweep intersection-over-union of rendered sprites with the official frames.

    Parameters
    ----------
    frames : ndarray ``(320, 64, 64)`` of bool
        From :func:`read_gif`.
    render : callable, optional
        ``render(classes LongTensor (B, 6)) -> (B, 1, 64, 64)``; default
        :func:`klcontrol.vae_plant.data.dsprites.render`.

    Returns
    -------
    dict
        Sweep name → ``(mean IoU, min IoU)``.
    """
    import torch

    if render is None:
        from klcontrol.vae_plant.data.dsprites import render
    out = {}
    for name, (idx, classes) in GIF_SWEEPS.items():
        ours = render(torch.tensor(classes))[:, 0].numpy() > 0.5
        ref = frames[idx]
        inter = (ours & ref).sum((1, 2))
        union = np.maximum((ours | ref).sum((1, 2)), 1)
        iou = inter / union
        out[name] = (float(iou.mean()), float(iou.min()))
    return out


def _main(argv):
    if len(argv) != 1:
        print("usage: python -m klcontrol.vae_plant.data.reference PATH/TO/dsprites.gif", file=sys.stderr)
        return 2
    try:
        frames = read_gif(argv[0])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, (mean, low) in sweep_iou(frames).items():
        print(f"{name:20s} mean IoU {mean:.4f}  min {low:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
