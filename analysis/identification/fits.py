"""Load any saved fit or plant: the one reader of fit files, dispatched by ``kind`` through the plant registry.

A fit is saved as JSON with its ``kind`` (``fit.save(path)``); :func:`load_fit` reads the file and rebuilds it with
:func:`klcontrol.plant.plant_from_dict`, where every fit class registers itself (:func:`klcontrol.plant.register_plant`):
``first_order`` (:class:`~klcontrol.analysis.identification.first_order.PlantFit`, or a plain
:class:`klcontrol.FirstOrderPlant` for a description without a ``"fit"`` entry), ``hammerstein``
(:class:`~klcontrol.analysis.identification.models.HammersteinFit`), and any kind a user registers.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["load_fit"]


def _read_json(path):
    """The JSON value in a file, with every way of failing named after the file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"fit file not found: {p}")
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a JSON text file (binary or not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply") from None


def load_fit(path):
    """Load a saved fit or plant of any kind from a JSON file.

    Parameters
    ----------
    path : str or Path
        JSON written by ``fit.save(path)`` / ``klcontrol fit --out`` (a fit) or a plant description
        (``plant.to_dict()``).

    Returns
    -------
    Plant
        The class registered for the file's ``kind``: a
        :class:`~klcontrol.analysis.identification.first_order.PlantFit` (``kind = "first_order"`` with a
        ``"fit"`` entry; without it a plain :class:`klcontrol.FirstOrderPlant`), a
        :class:`~klcontrol.analysis.identification.models.HammersteinFit` (``kind = "hammerstein"``), …;
        fits have ``predict(trace)``.

    Raises
    ------
    ValueError
        Naming the file: missing, not UTF-8, not JSON, nested too deeply, an unknown kind, or an invalid
        description (wrong types, missing entries, non-finite values).
    """
    # Importing the modules of the fit classes registers their kinds.
    import klcontrol.analysis.identification.first_order  # noqa: F401
    import klcontrol.analysis.identification.models  # noqa: F401
    from klcontrol.plant import plant_from_dict

    d = _read_json(path)
    try:
        return plant_from_dict(d)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{path}: not a valid fit or plant description ({what})") from None
