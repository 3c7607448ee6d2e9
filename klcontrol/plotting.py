"""Figures of loop traces (matplotlib, headless)."""
from __future__ import annotations

import numpy as np

__all__ = ["plot_trace", "pyplot"]


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (unless a backend was already chosen)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_trace(trace, path=None, title=None, max_loops: int = 20, labels=None):
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
    labels : list of str, optional
        One legend label per loop.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()
    fig, (ax_b, ax_k) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    beta = np.asarray(trace.beta)
    kl = np.asarray(trace.kl)
    if beta.ndim == 2:
        beta, kl = beta[:, :max_loops], kl[:, :max_loops]
    state = np.asarray(trace.state)
    if state.ndim == 2:
        state = state[:, :max_loops]
    lines = ax_b.plot(trace.step, beta, lw=1)
    if labels is not None:
        for ln, lab in zip(lines, labels):
            ln.set_label(lab)
        ax_b.legend(loc="upper right")
    ax_b.set_ylabel("β(t)")
    noisy = not np.array_equal(kl, state)
    if noisy:
        ax_k.plot(trace.step, kl, lw=0.5, alpha=0.25, color="0.6")
    ax_k.set_prop_cycle(None)
    ax_k.plot(trace.step, state, lw=1.0, label="KL y(t)" if labels is None else None)
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
        from klcontrol.fileio import save_figure

        save_figure(fig, path)  # atomic: a full disk keeps the old figure
        plt.close(fig)
    return fig
