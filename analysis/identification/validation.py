"""Figures of the real-VAE checks: held-out predictions and the (Kp, Ki) stability plane."""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.identification.experiment import MEAN_WINDOW
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
    fig.savefig(path, dpi=110)
    plt.close(fig)




def plot_stability_plane(runs, models, setpoint, path, window=5, delay=0, kp_max=None, ki_max=None):
    """The (Kp, Ki) plane: each model's predicted boundary and the observed runs.

    Parameters
    ----------
    runs : sequence of dict
        Rows of :func:`klcontrol.vae_plant.experiments.stability_runs.summarize`.
    models : dict name → plant object
    setpoint : float
    path : str
    """
    from klcontrol.plotting import pyplot

    plt = pyplot()

    from klcontrol.analysis.stability import is_stable

    kp_max = kp_max or 1.3 * max(max(r["kp"] for r in runs), 1e-3)
    ki_max = ki_max or 1.3 * max(r["ki"] for r in runs)
    ki_min = 0.5 * min(r["ki"] for r in runs)
    kp = np.linspace(0, kp_max, 301)
    ki = np.geomspace(ki_min, ki_max, 401)
    KP, KI = np.meshgrid(kp, ki)
    fig, ax = plt.subplots(figsize=(6.4, 5))
    styles = [("C0", "-"), ("C3", "--"), ("C2", ":")]
    for (name, m), (col, ls) in zip(models.items(), styles):
        st = np.asarray(is_stable(KP, KI, plant=m, setpoint=setpoint, window=window, delay=delay), dtype=float)
        cs = ax.contour(KP, KI, st, levels=[0.5], colors=col, linestyles=ls)
        ax.plot([], [], color=col, ls=ls, label=f"predicted boundary: {name}")
        del cs
    for r in runs:
        ok = r["observed_stable"]
        ax.scatter(r["kp"], r["ki"], marker="o" if ok else "x", s=50, color="k" if ok else "C3", zorder=3)
    ax.scatter([], [], marker="o", color="k", label="real VAE: stable")
    ax.scatter([], [], marker="x", color="C3", label="real VAE: unstable")
    ax.set_xlabel("Kp")
    ax.set_ylabel("Ki")
    ax.set_xlim(0, kp_max)
    ax.set_yscale("log")
    ax.set_ylim(ki_min, ki_max)
    ax.set_title(f"incremental PI, window {window}, set point {setpoint:g} nats (stable below a boundary)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
