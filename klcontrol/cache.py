"""Where klcontrol keeps generated code: ``$KLCONTROL_CACHE`` (default ``~/.cache/klcontrol``)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder for one kind of generated file (not created).

    Parameters
    ----------
    kind : str
        Sub-folder, e.g. ``"stability"`` or ``"kernels"``.
    """
    base = os.environ.get("KLCONTROL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "klcontrol")
    return Path(base) / kind
