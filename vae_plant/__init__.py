"""The real plant: PyTorch β-VAEs trained with any β controller, one subpackage per concept.

- :mod:`klcontrol.vae_plant.data`: procedural dSprites and the official reference frames;
- :mod:`klcontrol.vae_plant.training`: the model, the trainer (traces, checkpoints, exact resume, the run lock),
  the papers' presets;
- :mod:`klcontrol.vae_plant.metrics`: disentanglement metrics, evaluation of a run, diagnostic figures;
- :mod:`klcontrol.vae_plant.experiments`: comparisons, identification and stability experiments, the demo.

Torch is imported by these subpackages, which are imported on first use.
"""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "data": None, "training": None, "metrics": None, "experiments": None, "commands": None,
})
