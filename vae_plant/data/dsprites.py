"""dSprites: rendered procedurally on the official factor grid, or loaded from the official ``.npz``.

Factor grid and index order (as in the official file)::

    color        1   {white}
    shape        3   {square, ellipse, heart}
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2π, 40)
    posX        32   linspace(0, 1, 32)
    posY        32   linspace(0, 1, 32)

    index = classes · (737280, 245760, 40960, 1024, 32, 1)

Procedural rendering (``DSprites()``): a binary 64×64 image, a pixel is on when
its centre lies inside the sprite.  The geometry is fitted to the official
animation ``dsprites.gif`` (see :mod:`klcontrol.vae_plant.data.reference`), not
copied from its generator.  In pixels at scale 1: the square has half-side
9.6 (20×20 px when axis-aligned, as the pixel centres fall; 368 px when
rotated, like the official frames); the ellipse has semi-axes 12.75 along x
and 7.25 along y (horizontal at orientation 0, 26×14 px, area 288); the heart
is two discs of radius 4.98 centred at (±4.59, 4.23) over a lower part that
narrows from half-width 10.36 at the discs' centre line to a point 7.8 below
the centre, its sides bowed out (exponent 0.67): 20×17 px, area 222, lobes
up, cleft 3 px deep.  ``scale`` multiplies lengths, ``orientation`` rotates
counter-clockwise on screen about the sprite's centre, and the centre moves
from pixel 16 to 48 as ``posX`` (rightwards) or ``posY`` (downwards) goes from
0 to 1, so no sprite touches the border.  Mean IoU with the official frames
is at least 0.95 on every sweep (``python -m klcontrol.vae_plant.data.reference``);
the geometry changed in the commit "dSprites renderer fitted to the official
frames" (before it, IoU 0.33–0.57), which changes every image and so every
real-VAE result trained before it.

Rendering is a handful of vectorised tensor operations per batch, so a
procedural ``DSprites`` starts instantly and renders a batch of 128 in
milliseconds on a CPU.  On CUDA (``ds.to("cuda")``) the whole set is rendered
once on the device (well under a second) and kept there bit-packed (377 MB);
batches are then gathered and unpacked on the device.
"""
from __future__ import annotations

import math
import os
import pickle
import zipfile

import numpy as np
import torch

__all__ = ["DSprites", "render", "save_sample_grid", "FACTOR_NAMES", "FACTOR_SIZES", "SHAPES"]

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")

_N = int(np.prod(FACTOR_SIZES))
_STRIDES = tuple(int(np.prod(FACTOR_SIZES[i + 1 :])) for i in range(6))  # (737280, 245760, 40960, 1024, 32, 1)
_SIZE = 64
# Geometry fitted to the official frames (px at scale 1; sprite frame: x right, y up).
_POS_LO, _POS_SPAN = 16.0, 32.0  # centre pixel coordinate at position 0 and its travel to position 1
_SQUARE_HALF = 9.6
_ELLIPSE_AXES = (12.75, 7.25)  # semi-axes along x and y
# Heart: discs (±cx, cy) of radius r over |x| ≤ w·((y + t)/(cy + t))^q for −t ≤ y ≤ cy.
_HEART_CX, _HEART_CY, _HEART_R, _HEART_TIP, _HEART_W, _HEART_Q = 4.59, 4.23, 4.98, 7.8, 10.36, 0.67


def _grid_values():
    return (
        np.array([1.0]),
        np.array([1.0, 2.0, 3.0]),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * math.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    )


def render(classes: torch.Tensor) -> torch.Tensor:
    """Render sprites from factor classes.

    Parameters
    ----------
    classes : LongTensor ``(B, 6)``
        Factor classes in the official order (see module docstring).

    Returns
    -------
    Tensor ``(B, 1, 64, 64)``, float32 in {0, 1}, on the device of ``classes``.
    """
    dev = classes.device
    c = classes.to(torch.float32)
    shape = classes[:, 1]
    scale = 0.5 + 0.1 * c[:, 2]
    theta = c[:, 3] * (2 * math.pi / 39)
    cx = _POS_LO + _POS_SPAN * c[:, 4] / 31
    cy = _POS_LO + _POS_SPAN * c[:, 5] / 31
    px = torch.arange(_SIZE, device=dev, dtype=torch.float32) + 0.5
    h = scale[:, None, None]
    dx = (px[None, None, :] - cx[:, None, None]) / h  # (B, 1, 64), screen x to the right
    dy = (cy[:, None, None] - px[None, :, None]) / h  # (B, 64, 1), y up so rotation is counter-clockwise
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    img = torch.empty((classes.shape[0], _SIZE, _SIZE), dtype=torch.float32, device=dev)
    # Each shape is tested only on its own images (a third of the work of testing all three).
    for k, inside in enumerate((_square, _ellipse, _heart)):
        sel = (shape == k).nonzero().squeeze(1)
        if len(sel):
            dxs, dys, c, s = dx[sel], dy[sel], cos[sel], sin[sel]
            x = c * dxs + s * dys  # sprite frame: rotate the pixel grid back by θ
            y = c * dys - s * dxs
            img[sel] = inside(x, y).to(torch.float32)
    return img.unsqueeze(1)


def _square(x, y):
    return torch.maximum(x.abs(), y.abs()) <= _SQUARE_HALF


def _ellipse(x, y):
    ea, eb = _ELLIPSE_AXES
    return (x * (1 / ea)).square() + (y * (1 / eb)).square() <= 1.0


def _heart(x, y):
    ax = x.abs()
    lobes = (ax - _HEART_CX).square() + (y - _HEART_CY).square() <= _HEART_R**2
    u = ((y + _HEART_TIP) * (1 / (_HEART_CY + _HEART_TIP))).clamp(min=0.0)
    lower = (y >= -_HEART_TIP) & (y <= _HEART_CY) & (ax <= _HEART_W * u.pow(_HEART_Q))
    return lobes | lower


def _pack(img: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 64, 64)`` binary → ``(B, 512)`` uint8, most significant bit first."""
    bits = img.reshape(img.shape[0], -1, 8).to(torch.uint8)
    w = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=img.device)
    return (bits * w).sum(-1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor) -> torch.Tensor:
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], 1, _SIZE, _SIZE).to(torch.float32)


class DSprites:
    """The dSprites set: procedural (``path=None``) or the official ``.npz``.

    Parameters
    ----------
    path : str or path-like, optional
        The official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (or any
        file with its keys ``imgs``, ``latents_classes``, ``latents_values``
        and ``metadata`` holding ``latents_sizes``).  ``None``: render.
    device : str or torch.device
        Where images are produced.  On CUDA the whole set is kept on the device.

    Attributes
    ----------
    factor_sizes : tuple of int
        ``(1, 3, 6, 40, 32, 32)`` for dSprites.
    factor_names : tuple of str
    factor_values : list of ndarray
        The value of each class of each factor.

    Examples
    --------
    >>> ds = DSprites()
    >>> img, classes = ds[87040]   # a square, as in the official file
    >>> x, idx = ds.sample(128, torch.Generator().manual_seed(0))
    """

    factor_names = FACTOR_NAMES

    def __init__(self, path=None, device="cpu"):
        self.path = None if path is None else os.fspath(path)
        self.device = torch.device(device)
        self._packed = None
        if self.path is None:
            self.factor_sizes = FACTOR_SIZES
            self.factor_values = list(_grid_values())
            self._n = _N
            self._classes = None
            self._imgs = None
        else:
            self._load_npz(self.path)
        if self.device.type != "cpu":
            self._to_device()

    # -- loading ----------------------------------------------------------------------
    def _load_npz(self, path):
        if not os.path.isfile(path):
            raise ValueError(f"dSprites file not found: {path}")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"cannot read {path} as a dSprites .npz: it is not a zip archive (damaged or another format)")
        try:
            # Arrays never unpickle (allow_pickle=False); only the metadata goes through _read_metadata.
            f = np.load(path, allow_pickle=False)
            keys = set(f.files)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise ValueError(f"cannot read {path} as a dSprites .npz: {exc}") from None
        missing = {"imgs", "latents_classes", "latents_values", "metadata"} - keys
        if missing:
            raise ValueError(f"{path} lacks the dSprites keys {sorted(missing)}")
        meta = _read_metadata(path)
        try:
            sizes = tuple(int(s) for s in np.asarray(meta["latents_sizes"]).ravel())
            if not sizes or min(sizes) < 1:
                raise ValueError(f"sizes must be ≥ 1, got {sizes}")
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: metadata has no readable 'latents_sizes' ({exc})") from None
        try:
            imgs = np.asarray(f["imgs"])
            classes = np.asarray(f["latents_classes"])
            values = np.asarray(f["latents_values"], dtype=np.float64)
            if classes.dtype.kind not in "iu":
                raise ValueError(f"latents_classes must hold integers, got dtype {classes.dtype}")
            if imgs.dtype.kind not in "biu":
                raise ValueError(f"imgs must hold integers 0/1, got dtype {imgs.dtype}")
            classes = classes.astype(np.int64)
        except Exception as exc:  # noqa: BLE001 - object arrays (allow_pickle=False), damaged members, bad dtypes
            raise ValueError(f"{path}: cannot read the dSprites arrays ({type(exc).__name__}: {exc})") from None
        n = imgs.shape[0]
        if imgs.ndim != 3 or imgs.shape[1:] != (_SIZE, _SIZE):
            raise ValueError(f"{path}: imgs must have shape (N, 64, 64), got {imgs.shape}")
        if classes.shape != (n, len(sizes)) or values.shape != (n, len(sizes)):
            raise ValueError(
                f"{path}: latents_classes {classes.shape} and latents_values {values.shape} must be (N={n}, {len(sizes)})"
            )
        if n and (classes.min() < 0 or np.any(classes.max(0) >= np.array(sizes))):
            raise ValueError(f"{path}: latents_classes out of range for latents_sizes {sizes}")
        if n and imgs.max() > 1:
            raise ValueError(f"{path}: imgs must be binary (0/1), found a value {imgs.max()}")
        self.factor_sizes = sizes
        self.factor_values = []
        for k, size in enumerate(sizes):
            vals = np.full(size, np.nan)
            vals[classes[:, k]] = values[:, k]
            self.factor_values.append(vals)
        self._n = n
        self._imgs = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.uint8))
        self._classes = torch.from_numpy(classes)

    def _to_device(self):
        dev = self.device
        if self._imgs is not None:
            flat = self._imgs.reshape(self._n, -1).numpy()
            self._packed = torch.from_numpy(np.packbits(flat, axis=1)).to(dev)
            self._imgs = None
            self._classes = self._classes.to(dev)
            return
        chunk = 32768
        packed = torch.empty((_N, _SIZE * _SIZE // 8), dtype=torch.uint8, device=dev)
        for start in range(0, _N, chunk):
            idx = torch.arange(start, min(start + chunk, _N), device=dev)
            packed[start : start + len(idx)] = _pack(render(self._classes_of(idx)))
        self._packed = packed

    def to(self, device) -> "DSprites":
        """This set on ``device`` (a new object unless already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        if self.path is not None:
            return DSprites(self.path, device)
        return DSprites(None, device)

    # -- access -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _classes_of(self, idx: torch.Tensor) -> torch.Tensor:
        if self._classes is not None:
            return self._classes[idx]
        strides = torch.tensor(_STRIDES, device=idx.device)
        sizes = torch.tensor(FACTOR_SIZES, device=idx.device)
        return (idx[:, None] // strides) % sizes

    def _as_index(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device).reshape(-1)
        return idx

    def classes(self, indices) -> torch.Tensor:
        """Factor classes ``(B, 6)`` (int64) of the given indices."""
        return self._classes_of(self._as_index(indices))

    def index_of(self, classes) -> torch.Tensor:
        """Dataset indices of factor classes ``(B, 6)`` (procedural set only: the official order)."""
        c = torch.as_tensor(classes, dtype=torch.long, device=self.device).reshape(-1, len(self.factor_sizes))
        return (c * torch.tensor(_STRIDES, device=self.device)).sum(1)

    def images(self, indices) -> torch.Tensor:
        """Images ``(B, 1, 64, 64)`` float32 in {0, 1} on the set's device.

        ``indices`` should already live on that device (no host round trip).
        """
        idx = self._as_index(indices)
        if self._packed is not None:
            return _unpack(self._packed[idx])
        if self._imgs is not None:
            return self._imgs[idx.cpu()].unsqueeze(1).to(self.device, torch.float32)
        return render(self._classes_of(idx))

    def __getitem__(self, i):
        if isinstance(i, torch.Tensor):
            i = int(i)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dSprites index must be an int, got {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} images")
        return self.images([i])[0], self.classes([i])[0]

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        """Draw a batch uniformly with replacement, on the device, without host sync.

        Parameters
        ----------
        batch_size : int
        generator : torch.Generator, optional
            A generator on the set's device (its state is part of checkpoints).

        Returns
        -------
        images ``(B, 1, 64, 64)``, indices ``(B,)``
        """
        idx = torch.randint(0, self._n, (int(batch_size),), generator=generator, device=self.device)
        return self.images(idx), idx

    def batches(self, batch_size: int = 1024, indices=None):
        """Iterate over the set (or ``indices``) in order: yields ``(images, classes)``.

        For computing encoder means over the whole set (disentanglement metrics).
        """
        idx_all = torch.arange(self._n, device=self.device) if indices is None else self._as_index(indices)
        for start in range(0, len(idx_all), int(batch_size)):
            idx = idx_all[start : start + int(batch_size)]
            yield self.images(idx), self._classes_of(idx)

    def __repr__(self):
        src = "procedural" if self.path is None else repr(self.path)
        return f"DSprites({src}, n={self._n}, device={self.device})"


#: The only globals the metadata pickle may name: NumPy's array and dtype reconstructors (what ``np.save``
#: writes for an object array holding a dict of arrays, strings and tuples).  Nothing else is importable,
#: so a crafted pickle cannot call ``os.system`` and the like.
_META_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_META_GLOBALS` (plain builtins need no global)."""

    def find_class(self, module, name):
        if (module, name) not in _META_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays are allowed)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)  # NumPy 2 name, no deprecation warning
        return super().find_class(module, name)


def _read_metadata(path) -> dict:
    """The ``metadata`` dict of a dSprites ``.npz``, unpickled with :class:`_MetadataUnpickler`.

    The official file stores it as a pickled 0-d object array (written by
    Python 2, hence ``encoding="latin1"``).

    Raises
    ------
    ValueError
        Naming the file, if the member is missing, damaged, or names any
        global other than NumPy's array reconstructors.
    """
    try:
        with zipfile.ZipFile(path) as z, z.open("metadata.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            _, _, dtype = read_header(fh)
            if not dtype.hasobject:
                raise ValueError(f"metadata must be a pickled dict, got a {dtype} array")
            meta = _MetadataUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: metadata is not a plain pickled dict ({exc}); nothing from it was run") from None
    except Exception as exc:  # noqa: BLE001 - zip, header, truncated pickle: all "this file is damaged"
        raise ValueError(f"{path}: cannot read the metadata ({type(exc).__name__}: {exc})") from None
    if isinstance(meta, np.ndarray) and meta.dtype.hasobject and meta.shape == ():
        meta = meta[()]
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: metadata must be a dict holding 'latents_sizes', got {type(meta).__name__}")
    return meta


def save_sample_grid(path, seed: int = 1) -> None:
    """Write a PNG of procedural sprites: each factor swept alone, then random samples.

    Rows: the three shapes at scales 1 and 0.5 and two hearts rotated; a
    square through the six scales and an ellipse rotated; a heart through
    posX, through posY and through orientations; three rows of random images.

    Parameters
    ----------
    path : str or path-like
        Output PNG.
    seed : int
        Seed of the random rows.
    """
    from klcontrol.fileio import save_figure
    from klcontrol.plotting import pyplot

    plt = pyplot()

    ds = DSprites()

    def at(shape, scale, orient, x, y):
        return int(ds.index_of([[0, shape, scale, orient, x, y]])[0])

    rand = torch.randint(0, len(ds), (24,), generator=torch.Generator().manual_seed(seed)).tolist()
    grid = [
        [at(s, 5, 0, 15, 15) for s in range(3)] + [at(s, 0, 0, 15, 15) for s in range(3)] + [at(2, 5, o, 15, 15) for o in (5, 10)],
        [at(0, sc, 4, 15, 15) for sc in range(6)] + [at(1, 5, o, 15, 15) for o in (5, 10)],
        [at(2, 5, 0, x, 15) for x in range(0, 32, 4)],
        [at(2, 5, 0, 15, y) for y in range(0, 32, 4)],
        [at(2, 5, o, 15, 15) for o in range(0, 40, 5)],
        rand[0:8], rand[8:16], rand[16:24],
    ]
    labels = ["shapes (scale 1, 0.5)", "scale 0.5→1", "posX 0→1", "posY 0→1", "orientation 0→", "random", "random", "random"]
    fig, axs = plt.subplots(len(grid), 8, figsize=(8, len(grid) * 1.05))
    for i, row in enumerate(grid):
        images = ds.images(row)
        for j in range(8):
            ax = axs[i, j]
            ax.imshow(images[j, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axs[i, 0].set_ylabel(labels[i], fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle("procedural dSprites (klcontrol.vae_plant.data.dsprites.DSprites())", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
