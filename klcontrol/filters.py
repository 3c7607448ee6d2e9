"""Measurement filters for the KL feedback: moving average and EMA.

A filter is a small stateless description; its state lives in the controller
that uses it, so one filter object can serve many controllers and the state is
saved with the controller.  Both filters are linear and start from ``y0``
(default 0, like the official code, whose window starts from zeros).
"""
from __future__ import annotations

import math

import numpy as np

from . import laws
from .backend import NUMPY, Ops

__all__ = ["Filter", "MovingAverage", "ExponentialAverage", "as_filter", "moving_mean"]


class Filter:
    """Base class of measurement filters."""

    #: Length of the FIR window (1 for "no filter"); ``None`` if not FIR.
    window: int | None = 1

    def initial_state(self, y0):
        """Filter state as if every sample before t = 0 had been ``y0``."""
        return ()

    def apply(self, state, y, ops: Ops = NUMPY):
        """Consume raw sample ``y``; return ``(m, new_state)``."""
        return y, state

    def filter_series(self, ys, y0=0.0):
        """Filter a whole series (time first) with NumPy; returns an array like ``ys``."""
        import numpy as np

        ys = np.asarray(ys, dtype=float)
        state = self.initial_state(np.zeros(ys.shape[1:]) + y0)
        out = np.empty_like(ys)
        for t in range(ys.shape[0]):
            out[t], state = self.apply(state, ys[t])
        return out

    def to_dict(self) -> dict:
        """JSON-able description."""
        return {"kind": "none"}

    def __repr__(self):
        return f"{type(self).__name__}()"


class MovingAverage(Filter):
    """Equal-weight moving average of the last ``window`` KL samples.

    Parameters
    ----------
    window : int
        Number of samples averaged, ``T ≥ 1``; ``1`` is no filtering.
    """

    def __init__(self, window: int = 1):
        try:
            integral = not isinstance(window, bool) and (isinstance(window, int) or float(window).is_integer())
        except (TypeError, ValueError):
            integral = False
        if not integral:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        window = int(window)
        if window < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.window = window

    def initial_state(self, y0):
        return tuple(y0 for _ in range(self.window - 1))

    def apply(self, state, y, ops: Ops = NUMPY):
        return laws.moving_average(state, y, ops)

    def to_dict(self) -> dict:
        return {"kind": "moving_average", "window": self.window}

    def __repr__(self):
        return f"MovingAverage(window={self.window})"


class ExponentialAverage(Filter):
    """Exponential moving average ``m = α·y + (1 − α)·m_prev``.

    Parameters
    ----------
    alpha : float
        Weight of the newest sample, in (0, 1]; ``1`` is no filtering.
    """

    window = None

    def __init__(self, alpha: float):
        alpha = float(alpha)
        if not (math.isfinite(alpha) and 0 < alpha <= 1):
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha

    def initial_state(self, y0):
        return (y0,)

    def apply(self, state, y, ops: Ops = NUMPY):
        m, new = laws.exponential_average(state[0], y, self.alpha, ops)
        return m, (new,)

    def to_dict(self) -> dict:
        return {"kind": "exponential_average", "alpha": self.alpha}

    def __repr__(self):
        return f"ExponentialAverage(alpha={self.alpha})"


def as_filter(f) -> Filter:
    """Coerce ``None`` (no filter), an int window or a :class:`Filter`."""
    if f is None:
        return MovingAverage(1)
    if isinstance(f, Filter):
        return f
    if isinstance(f, (int, float)) and not isinstance(f, bool):
        return MovingAverage(f)
    raise ValueError(f"filter must be None, a window size or a Filter, got {f!r}")


def moving_mean(x, window: int, axis: int = 0, mode: str = "valid"):
    """The offline moving mean of a recorded series (the online filter is :class:`MovingAverage`).

    Parameters
    ----------
    x : array_like
        The series (any shape; averaged along ``axis``).
    window : int
        Samples per mean (``1``: ``x`` itself, as a float copy).
    axis : int
        The time axis.
    mode : {"valid", "same"}
        ``"valid"``: trailing means, ``len − window + 1`` values (value ``i`` is the mean of samples
        ``i … i + window − 1``, what :class:`MovingAverage` outputs at ``i + window − 1``). ``"same"``: centred,
        the ends padded with the edge values, as many values as ``x`` (for figures); a window longer than the
        series is cut to its length.

    Returns
    -------
    numpy.ndarray
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, 0)
    window = int(window)
    n = x.shape[0]
    if mode not in ("valid", "same"):
        raise ValueError(f"moving_mean mode must be 'valid' or 'same', got {mode!r}")
    if window < 1:
        raise ValueError(f"moving_mean needs a window ≥ 1, got {window}")
    if mode == "same":
        window = min(window, max(n, 1))
        if window > 1:
            pad = [(window // 2, window - 1 - window // 2)] + [(0, 0)] * (x.ndim - 1)
            x = np.pad(x, pad, mode="edge")
    elif n < window:
        raise ValueError(f"need 1 ≤ window ≤ len(x), got window {window} for {n} rows")
    if window == 1:
        return np.moveaxis(x.copy(), 0, axis)
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x], axis=0), axis=0)
    return np.moveaxis((c[window:] - c[:-window]) / window, 0, axis)
