"""Figures of loop traces (matplotlib, headless)."""
from __future__ import annotations

import numpy as np

__all__ = ["plot_trace"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_trace(trace, path=None, title=None, max_loops: int = 20):
    """β(t) and KL(t) against the set point, one row each.

    Parameters
    ----------
    trace : Trace
        A simulated or recorded trace (several loops are overlaid, up to ``max_loops``).
    path : str, optional
        Where to save a PNG; the figure is returned either way.
    title : str, optional
        Figure title.
    max_loops : int
        Most loops drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    fig, (ax_b, ax_k) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    beta = np.asarray(trace.beta)
    kl = np.asarray(trace.kl)
    if beta.ndim == 2:
        beta, kl = beta[:, :max_loops], kl[:, :max_loops]
    ax_b.plot(trace.step, beta, lw=1)
    ax_b.set_ylabel("β(t)")
    ax_k.plot(trace.step, kl, lw=0.8, alpha=0.8, label="KL y(t)")
    sp = np.asarray(trace.setpoint)
    if sp.ndim == 2:
        sp = sp[:, 0]
    ax_k.plot(trace.step, sp, "k--", lw=1.2, label="set point C(t)")
    ax_k.set_ylabel("KL (nats)")
    ax_k.set_xlabel("step")
    ax_k.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
