"""Figures of the real-VAE checks: held-out predictions and the (Kp, Ki) stability plane."""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.identification.experiment import MEAN_WINDOW
from klcontrol.fileio import save_figure
from klcontrol.filters import moving_mean

__all__ = ["plot_validation", "plot_stability_plane"]


def plot_validation(fit, traces, names, path, compare=None, compare_label="comparison fit"):
    """Recorded 50-update mean KL vs the model's (and a second fit's) on each held-out trace, β below.

    Parameters
    ----------
    fit : object with ``predict(trace)``
    traces : sequence of Trace
    names : sequence of str
        Panel titles.
    path : str
        PNG to write.
    compare : object with ``predict(trace)``, optional
    """
    from klcontrol.plotting import pyplot

    plt = pyplot()

    from klcontrol.analysis.identification.models import fit_percent

    n = len(traces)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 5.2), sharex="col", gridspec_kw=dict(height_ratios=[3, 1]),
                             squeeze=False)
    for j, (tr, nm) in enumerate(zip(traces, names)):
        ax, axb = axes[0, j], axes[1, j]
        t = np.asarray(tr.step)[MEAN_WINDOW - 1:]
        yhat = fit.predict(tr)
        ax.plot(t, moving_mean(tr.kl, MEAN_WINDOW), color="k", lw=1.2, label="real VAE (50-update mean)")
        ax.plot(t, moving_mean(yhat, MEAN_WINDOW), color="C0", lw=1.2, label=f"identified: {fit_percent(tr.kl, yhat):.0f} %")
        if compare is not None:
            yc = compare.predict(tr)
            ax.plot(t, moving_mean(yc, MEAN_WINDOW), color="C3", lw=1, ls="--",
                    label=f"{compare_label}: {fit_percent(tr.kl, yc):.0f} %")
        sp = np.asarray(tr.setpoint, dtype=float)
        if np.any(np.isfinite(sp)):
            ax.plot(tr.step, sp, color="gray", lw=0.8, ls=":", label="set point")
        ax.set_title(str(nm).split("/")[-1], fontsize=9)
        ax.set_ylabel("KL (nats)")
        ax.legend(fontsize=7, loc="best")
        axb.plot(tr.step, tr.beta, color="gray", lw=0.8)
        axb.set_ylabel("β")
        axb.set_xlabel("update")
    fig.tight_layout()
    save_figure(fig, path)  # atomic: a failed write keeps the old figure
    plt.close(fig)




def plot_stability_plane(runs, models, setpoint, path, window=5, delay=0, kp_max=None, ki_max=None):
    """Observed runs against each model's predicted critical gain, one panel per ray ``Kp = r·Ki``.

    Every run lies on a ray through the origin, so each ray is drawn as its own Ki axis (log scale): the real runs
    (stable ●, unstable ✕; seeds stacked) and a vertical line where each model predicts the loop turns unstable.
    A single ray stays readable, which a (Kp, Ki) plane is not.

    Parameters
    ----------
    runs : sequence of dict
        Rows of :func:`klcontrol.vae_plant.experiments.stability_runs.summarize`.
    models : dict name → plant object
    setpoint : float
    path : str
    kp_max, ki_max : float, optional
        Ignored (kept for callers of the plane figure); the Ki axis spans the runs and the predictions.
    """
    from matplotlib.ticker import NullFormatter

    from klcontrol.analysis.stability import critical_gain
    from klcontrol.plotting import pyplot

    plt = pyplot()
    rays: dict = {}
    for r in runs:
        ratio = round(r["kp"] / r["ki"], 9) if r["ki"] else float("inf")
        rays.setdefault(ratio, []).append(r)
    rays = {k: v for k, v in sorted(rays.items()) if np.isfinite(k)}
    fig, axes = plt.subplots(len(rays), 1, figsize=(7, 1.2 + 1.5 * len(rays)), squeeze=False)
    styles = [("C0", "-"), ("C3", "--"), ("C2", ":"), ("C4", "-.")]
    for ax, (ratio, rs) in zip(axes[:, 0], rays.items()):
        kis = [r["ki"] for r in rs]
        lo, hi = min(kis) / 2, max(kis) * 2
        for (name, m), (col, ls) in zip(models.items(), styles):
            c = critical_gain(ratio, plant=m, setpoint=setpoint, window=window, delay=delay, ki_min=lo / 10,
                              ki_max=hi * 10)
            if c is None:
                ax.plot([], [], color=col, ls=ls, label=f"{name}: no boundary in range")
                continue
            lo, hi = min(lo, c.ki / 1.5), max(hi, c.ki * 1.5)
            per = f", period {c.period:.0f}" if np.isfinite(c.period) else ""
            ax.axvline(c.ki, color=col, ls=ls, lw=1.5, label=f"{name}: critical Ki {c.ki:.3g}{per}")
        seen: dict = {}
        for r in rs:
            y = seen[r["ki"]] = seen.get(r["ki"], -1) + 1
            ok = r["observed_stable"]
            ax.scatter(r["ki"], y, marker="o" if ok else "x", s=55, color="k" if ok else "C3", zorder=3)
        ax.scatter([], [], marker="o", color="k", label="real run: stable")
        ax.scatter([], [], marker="x", color="C3", label="real run: unstable")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis collide
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.8, max(seen.values()) + 0.8)
        ax.set_yticks(range(max(seen.values()) + 1))
        ax.set_ylabel("run")
        ax.set_title(f"ray Kp = {ratio:g}·Ki", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[-1, 0].set_xlabel("Ki (stable to the left of a model's line)")
    fig.suptitle(f"incremental PI, window {window}, set point {setpoint:g} nats: predicted boundaries vs real runs",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)  # atomic: a failed write keeps the old figure
    plt.close(fig)
