"""Figures of the stability analysis: the stable region in the (Kp, Ki) plane."""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.stability.numeric import is_stable_first_order
from klcontrol.analysis.stability.paper import (
    PAPER_GAINS,
    PAPER_PLANT_POINTS,
    default_boxes,
    theorem_appendix,
    theorem_main,
)
from klcontrol.fileio import save_figure

__all__ = ["region_figure", "plot_region", "gains_region_figure", "tuned_response_figure"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
#: The fills of those colours: light, opaque tints (tab10's paired light shades).
_LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7")


def _plant(preset, a, gprime):
    if preset is not None:
        if preset not in PAPER_PLANT_POINTS:
            raise ValueError(f"preset must be one of {sorted(PAPER_PLANT_POINTS)}, got {preset!r}")
        return PAPER_PLANT_POINTS[preset]
    if a is None or gprime is None:
        raise ValueError("give a preset or both a and gprime")
    return float(a), float(gprime)


def _extent(st) -> str:
    """Legend note for a region that fills the whole box or none of it (no edge to draw)."""
    if st.min() > 0.5:
        return " (whole box)"
    if st.max() < 0.5:
        return " (nowhere in box)"
    return " (continues above the box)" if st[-1].min() > 0.5 else ""


def plot_region(ax, a, gprime, box, windows=(1,), delay=1, controller="incremental", n=400, paper=True,
                gains=PAPER_GAINS, legend=True):
    """Draw the exact stable region(s) and the paper's claimed ones on one axes.

    Parameters
    ----------
    ax : matplotlib Axes
    a, gprime : float
        Plant.
    box : tuple
        ``(kp_lo, kp_hi, ki_lo, ki_hi)``.
    windows : sequence of int
        Moving-average windows; each stable region is shaded in its own colour and outlined.
    delay : {0, 1}
        Loop delay.
    controller : str
        Controller (the region is the same for all inside the clamps).
    n : int
        Grid points per axis.
    paper : bool
        Outline the region Theorem 3.1 claims (main text Eq. 19 dashed,
        appendix Eq. 29 dotted).
    gains : tuple or None
        ``(Kp, Ki)`` to mark (default: the paper's 0.01, 0.005).
    legend : bool
        Add a legend.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kp_lo, kp_hi, ki_lo, ki_hi = box
    KP, KI = np.meshgrid(np.linspace(kp_lo, kp_hi, n), np.linspace(ki_lo, ki_hi, n))
    handles = []
    masks = [(i, T, is_stable_first_order(KP, KI, a, gprime, T, delay, controller).astype(float))
             for i, T in enumerate(windows)]
    # Opaque fills, the largest region first: nested regions (a longer window's lies inside a shorter one's) read as
    # bands of distinct colour instead of translucent layers whose mixed tints match no legend entry.
    for i, T, st in sorted(masks, key=lambda m: -m[2].sum()):
        if st.max() > 0.5:
            ax.contourf(KP, KI, st, levels=[0.5, 1.5], colors=[_LIGHT[i % len(_LIGHT)]])
    for i, T, st in masks:
        col = _COLORS[i % len(_COLORS)]
        if st.min() < 0.5 < st.max():
            ax.contour(KP, KI, st, levels=[0.5], colors=[col], linewidths=1.5)
        handles.append(Patch(facecolor=_LIGHT[i % len(_LIGHT)], edgecolor=col,
                             label=f"exact, T={T}: stable{_extent(st)}"))
    if paper:
        regions = []
        # Eq. 19 and Eq. 29 differ by a term of order a·Kp·g′²: in most boxes their edges coincide, so Eq. 19
        # is drawn wide and pale and Eq. 29 thin on top, both visible where they overlap.
        for thm, ls, col, lw, label in ((theorem_main, "--", "0.35", 3.0, "paper Eq. 19 (main)"),
                                        (theorem_appendix, ":", "k", 1.6, "paper Eq. 29 (appendix)")):
            m = thm(KP, KI, a, gprime).astype(float)
            if m.min() < 0.5 < m.max():
                ax.contour(KP, KI, m, levels=[0.5], colors=[col], linestyles=[ls], linewidths=lw)
            regions.append(m)
            same = len(regions) == 2 and np.mean(regions[0] != regions[1]) < 1e-3
            handles.append(Line2D([], [], color=col, ls=ls, lw=lw,
                                  label=f"{label}: claimed{_extent(m)}" + (", = Eq. 19 here" if same else "")))
    if gains is not None:
        # not clipped: gains on the box's edge (Kp = 0, the integral ray) stay a whole star
        ax.plot(*gains, marker="*", color="crimson", mec="white", mew=0.6, ms=13, ls="none", clip_on=False, zorder=5)
        handles.append(Line2D([], [], marker="*", color="crimson", ms=10, ls="none",
                              label=f"Kp={gains[0]:g}, Ki={gains[1]:g}"))
    ax.set_xlim(kp_lo, kp_hi)
    ax.set_ylim(ki_lo, ki_hi)
    ax.set_xlabel("Kp")
    ax.set_ylabel("Ki")
    ax.set_title(f"delay {delay}")
    if legend:
        ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.9)


def region_figure(preset=None, a=None, gprime=None, box="near", windows=(1, 2, 5), delays=(0, 1),
                  controller="incremental", n=400, paper=True, gains=PAPER_GAINS, path=None):
    """Stable regions in the (Kp, Ki) plane, one panel per delay.

    Parameters
    ----------
    preset : {"dsprites", "mnist"}, optional
        The paper's plants (a = 1/2500, g′ = −3.2; a = 1/5000, g′ = −1.26).
    a, gprime : float, optional
        Plant, when no preset is given.
    box : {"near", "wide"} or tuple
        Named box of :func:`klcontrol.analysis.stability.paper.default_boxes` or
        ``(kp_lo, kp_hi, ki_lo, ki_hi)``.
    windows, delays : sequences
        Windows drawn in each panel; one panel per delay.
    controller, n, paper, gains
        See :func:`plot_region`.
    path : str, optional
        Write a PNG there.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a, gprime = _plant(preset, a, gprime)
    if isinstance(box, str):
        boxes = default_boxes(a, gprime)
        if box not in boxes:
            raise ValueError(f"box must be one of {sorted(boxes)} or a 4-tuple, got {box!r}")
        box = boxes[box]
    if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]):
        raise ValueError(f"box must be (kp_lo, kp_hi, ki_lo, ki_hi) with lo < hi, got {box!r}")
    fig, axes = plt.subplots(1, len(delays), figsize=(5.2 * len(delays), 4.6), squeeze=False)
    for ax, d in zip(axes[0], delays):
        plot_region(ax, a, gprime, box, windows, d, controller, n, paper, gains)
    name = f"{preset}: " if preset else ""
    fig.suptitle(f"{name}stable (Kp, Ki) for a = {a:.3g}, g′ = {gprime:g} ({controller} PI)")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)  # atomic: a failed write keeps the old figure
    return fig


def gains_region_figure(kp, ki, a, gprime, window=1, delay=0, controller="incremental", path=None):
    """The stable (Kp, Ki) region at one g′, drawn around the paper's "near" box and the given gains.

    Parameters
    ----------
    kp, ki : float
        Gains to mark (the box is widened to contain them).
    a, gprime : float
        Plant rate and slope (g′ ≠ 0).
    window, delay, controller
        Loop configuration; the paper's claimed regions are drawn for its own loop (T = 1, delay 1).
    path : str, optional
        PNG path.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from klcontrol.plotting import pyplot

    plt = pyplot()

    if gprime == 0:
        raise ValueError("the region needs a nonzero g′")
    lo_p, hi_p, lo_i, hi_i = default_boxes(a, gprime)["near"]
    # Make sure the requested gains are inside the drawn box.
    hi_p, hi_i = max(hi_p, 1.3 * kp), max(hi_i, 1.3 * ki)
    lo_p, lo_i = min(lo_p, kp - 0.3 * abs(kp)), min(lo_i, ki - 0.3 * abs(ki))
    fig, ax = plt.subplots(figsize=(6, 5))
    plot_region(ax, a, gprime, (lo_p, hi_p, lo_i, hi_i), windows=(window,), delay=delay, controller=controller,
                paper=delay == 1 and window == 1, gains=(kp, ki))
    ax.set_title(f"stable region at g′={gprime:g} (a={a:g}, T={window}, delay {delay})")
    fig.tight_layout()
    if path:
        save_figure(fig, path)
        plt.close(fig)
    return fig


def tuned_response_figure(result, plant, setpoint, steps: int, *, path=None, controller: str = "incremental",
                          beta0: float = 150.0, y0: float = 0.0, reference=None, noise_std: float = 0.0,
                          noise_rel: float = 0.0, seed: int = 0):
    """Simulated β and KL of designed gains (and of reference gains) on a fitted plant.

    Parameters
    ----------
    result : TuneResult or ScheduleTuneResult
        The design (``kp``, ``ki``, ``window``, ``delay``).
    plant : Plant or fit
        The plant simulated.
    setpoint : SetPoint
        The schedule tracked.
    steps : int
        Updates simulated.
    path : str, optional
        PNG path.
    controller : str
        Controller kind (:data:`klcontrol.registry.CONTROLLER_KINDS`).
    beta0, y0 : float
        Initial β and KL.
    reference : (float, float), optional
        Gains drawn beside the design (e.g. the paper's).
    noise_std, noise_rel, seed
        KL measurement noise (:func:`klcontrol.simulate`).

    Returns
    -------
    klcontrol.simulate.Trace
        The simulated runs (column 0 the design, column 1 the reference).
    """
    from klcontrol.plotting import plot_trace
    from klcontrol.registry import make_controller
    from klcontrol.simulate import simulate

    kp = np.array([result.kp] + ([reference[0]] if reference is not None else []))
    ki = np.array([result.ki] + ([reference[1]] if reference is not None else []))
    ctrl = make_controller(controller, setpoint, kp, ki, window=result.window, beta0=beta0)
    tr = simulate(ctrl, plant, steps, delay=result.delay, y0=y0, noise_std=noise_std, noise_rel=noise_rel, seed=seed)
    noise = f"{noise_std:g}-nat" if noise_std else f"{100 * noise_rel:g} %"
    title = f"tuned (Kp={result.kp:.3g}, Ki={result.ki:.3g})"
    if reference is not None:
        title += f" vs paper ({reference[0]:g}, {reference[1]:g})"
    if path:
        plot_trace(tr, path, labels=["tuned", "paper"][: len(kp)], title=f"{title}, {noise} KL noise")
    return tr
