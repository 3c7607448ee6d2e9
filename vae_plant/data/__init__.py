"""Data of the real plant: procedural dSprites and the official reference frames.

The public names below are imported from their modules on first use."""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "DSprites": ".dsprites",
    "render": ".dsprites",
    "save_sample_grid": ".dsprites",
    "FACTOR_NAMES": ".dsprites",
    "FACTOR_SIZES": ".dsprites",
    "SHAPES": ".dsprites",
    "GIF_SWEEPS": ".reference",
    "read_gif": ".reference",
    "sweep_iou": ".reference",
})
