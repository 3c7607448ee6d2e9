"""Figure of a plant fit: data against the model, and g(β), g′(β) with bands and the papers' curves."""
from __future__ import annotations

import math

import numpy as np

from klcontrol.papers import PAPER_PLANTS

__all__ = ["plot_fit", "PAPER_CURVES"]

#: DynamicVAE Table 5 / Appendix C.1.  dSprites gives only g′ = −3.2·exp(−0.121β); its g is the integral
#: vanishing at β → ∞, g = (3.2/0.121)·exp(−0.121β).  MNIST: g = 26.38·exp(−0.0476β), g′ = −1.26·exp(…).
PAPER_CURVES = {
    f"{'dSprites' if name == 'dsprites' else 'MNIST'} (paper)": {"a": p.a, "A": p.A, "k": p.k}
    for name, p in PAPER_PLANTS.items()
}


def plot_fit(fit, path=None, max_traces: int = 6, paper: bool = True, title: str | None = None):
    """Data vs model simulation for each trace, then g(β) and g′(β) with their bootstrap bands.

    Parameters
    ----------
    fit : PlantFit
        A fit that still holds its traces (as returned by ``fit_plant``).
    path : str, optional
        PNG path; the figure is returned either way.
    max_traces : int
        Most trace panels drawn.
    paper : bool
        Overlay the DynamicVAE paper's fitted curves for reference.
    title : str, optional
        Figure title (default: the fitted a with its interval).

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Each trace panel draws the fitted model driven by the trace's recorded β from its fitted initial
    KL; where that estimate is negative, the curve is clipped at 0 nats and its legend gives the value.
    Trace names that are paths below the current directory are shown relative to it, others as
    ``…/folder/file``.
    """
    from klcontrol.plotting import pyplot

    plt = pyplot()

    traces = fit.traces[:max_traces]
    n_rows = math.ceil(len(traces) / 2) + 1
    fig = plt.figure(figsize=(11, 3.0 * n_rows), constrained_layout=True)
    gs = fig.add_gridspec(n_rows, 2)
    for i, tr in enumerate(traces):
        ax = fig.add_subplot(gs[i // 2, i % 2])
        ax.plot(tr.step, tr.kl, lw=0.5, color="0.6", label="KL (data)")
        y0 = float(fit.y_init[i])
        # A first-order model cannot follow the real plateau-then-rise; the fit then puts the initial KL below
        # zero.  The curve is the fitted one, clipped at 0 nats (a KL cannot be negative), and says so.
        label = "model" if y0 >= 0 else f"model (fitted start {y0:.2g} nats, clipped at 0)"
        ax.plot(tr.step, np.maximum(fit.simulate_trace(i), 0.0), lw=1.5, color="C0", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("KL (nats)")
        name = fit.info["traces"][i]["name"] if i < len(fit.info.get("traces", [])) else f"trace {i}"
        ax.set_title(_short(_shown(name)), fontsize=9)
        axb = ax.twinx()
        axb.plot(tr.step, tr.beta, lw=0.8, color="C3", alpha=0.7)
        axb.set_ylabel("β", color="C3")
        if i == 0 or y0 < 0:
            ax.legend(loc="best", fontsize=8)

    lo, hi = fit.beta_range
    pad = 0.15 * (hi - lo)
    b = np.linspace(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad, 300)
    ax_g = fig.add_subplot(gs[-1, 0])
    ax_d = fig.add_subplot(gs[-1, 1])
    for ax, fn, band, label in ((ax_g, fit.g, fit.g_ci, "g(β)"), (ax_d, fit.gprime, fit.gprime_ci, "g′(β)")):
        ax.axvspan(lo, hi, color="C0", alpha=0.06, label="β range seen")
        blo, bhi = band(b)
        if np.all(np.isfinite(blo)):
            ax.fill_between(b, blo, bhi, color="C0", alpha=0.25, label=f"{100 * fit.level:.0f} % bootstrap band")
        ax.plot(b, fn(b), color="C0", lw=2, label=f"fit ({fit.gain_model})")
        if paper:
            for (name, c), style in zip(PAPER_CURVES.items(), ("--", ":")):
                y = c["A"] * np.exp(-c["k"] * b)
                ax.plot(b, y if fn is fit.g else -c["k"] * y, "k" + style, lw=1, label=name)
        ax.set_xlabel("β")
        ax.set_ylabel(label)
    for i, tr in enumerate(fit.traces):
        ax_g.plot(tr.beta[::max(1, len(tr) // 400)], tr.kl[::max(1, len(tr) // 400)], ".", ms=1.5, color="0.5",
                  alpha=0.5, label="(β, KL) samples" if i == 0 else None)
    ax_g.set_ylim(bottom=0)
    ax_g.legend(fontsize=7, loc="upper right")
    a_lo, a_hi = fit.a_ci
    fig.suptitle(title or f"a = {fit.a:.3g} (1/{1 / fit.a:.0f})"
                 + (f", {100 * fit.level:.0f} % CI [{a_lo:.3g}, {a_hi:.3g}]" if np.isfinite(a_lo) else ""))
    if path:
        from klcontrol.fileio import save_figure

        save_figure(fig, path)  # atomic: a full disk keeps the old figure
    return fig


def _shown(name: str) -> str:
    """A trace's path relative to the current directory when it lies below it, else its last folder and
    file name (titles stay short and independent of where the repository was cloned); names unchanged."""
    import os

    if not os.path.isabs(name):
        return name
    rel = os.path.relpath(name)
    if not rel.startswith(".."):
        return rel
    head, tail = os.path.split(name)
    return os.path.join("…", os.path.basename(head), tail)


def _short(name: str, n: int = 60) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]
