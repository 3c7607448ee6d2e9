"""Diagnostic figures of a trained or training β-VAE (matplotlib, headless).

- ``plot_traversals``: latent traversals, rows ordered by per-latent KL (Burgess et al. 2018;
  DynamicVAE Fig. 3).
- ``plot_latent_kl``: per-latent KL over training (DynamicVAE Fig. 2c).
- ``plot_runs``: β(t), KL(t) against its set point, and reconstruction(t) of several runs on
  shared axes (DynamicVAE Fig. 2a–b); several seeds per run draw a mean line and a min–max band.

Every function takes plain arrays (or a ``decode`` callable), returns the Figure and optionally
saves a PNG.
"""
from __future__ import annotations

import numpy as np

from klcontrol.filters import moving_mean
from klcontrol.plotting import pyplot

__all__ = ["plot_traversals", "traversal_values", "plot_latent_kl", "plot_runs", "traversals_figure"]


def _finish(fig, path, title, layout=True):
    if title:
        fig.suptitle(title)
        if layout:
            fig.tight_layout()  # again, now that the title takes room
    if path:
        from klcontrol.fileio import save_figure

        save_figure(fig, path)  # atomic: a full disk keeps the old figure
        # Saved figures are released from pyplot (as klcontrol.plotting does); the object stays usable.
        pyplot().close(fig)
    return fig


def traversal_values(means=None, n_values: int = 9, span: float = 2.0, quantiles=None) -> np.ndarray:
    """Values each latent takes along a traversal.

    Parameters
    ----------
    means : array_like, shape (N, d), optional
        Encoder means; needed for ``quantiles``.
    n_values : int
        Number of columns.
    span : float
        Without ``quantiles``: ``np.linspace(-span, span, n_values)`` for every latent.
    quantiles : (float, float), optional
        Per-latent quantiles of ``means`` to span, e.g. (0.05, 0.95).

    Returns
    -------
    numpy.ndarray, shape (n_values,) or (d, n_values)
    """
    if n_values < 2:
        raise ValueError(f"n_values must be at least 2, got {n_values}")
    if quantiles is None:
        return np.linspace(-span, span, n_values)
    if means is None:
        raise ValueError("quantile traversals need the encoder means")
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2 or not np.all(np.isfinite(mu)):
        raise ValueError(f"means must be a finite (N ≥ 2, d) array, got shape {mu.shape}")
    lo, hi = quantiles
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"quantiles must satisfy 0 ≤ low < high ≤ 1, got {quantiles}")
    return np.quantile(mu, np.linspace(lo, hi, n_values), axis=0).T


def _as_images(images, expected: int) -> np.ndarray:
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    if arr.shape[0] != expected:
        raise ValueError(f"decode returned {arr.shape[0]} images for {expected} codes")
    if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 1, -1)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4):
        raise ValueError(f"decode must return (M, H, W), (M, C, H, W) or (M, H, W, C) images, got {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def plot_traversals(decode, base_code, kl_per_latent, values=None, *, top: int | None = None,
                    path=None, title=None):
    """Latent traversals: one row per latent, sorted by KL (largest first), one column per value.

    Parameters
    ----------
    decode : callable
        ``decode(z)`` with z a float32 array (M, d) returns M images with values in [0, 1]
        ((M, H, W), (M, 1, H, W) or (M, H, W, C); NumPy or torch).
    base_code : array_like, shape (d,)
        Code of the seed image; the other latents stay at these values.
    kl_per_latent : array_like, shape (d,)
        KL of each latent (e.g. averaged over a batch, or the last row of the training trace).
    values : array_like, shape (n,) or (d, n), optional
        Traversal values (shared, or per latent from ``traversal_values(means, quantiles=…)``);
        default ``np.linspace(-2, 2, 9)``.
    top : int, optional
        Draw only the ``top`` latents with the largest KL.
    path : str, optional
        Where to save a PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``rows × columns`` image axes.
    """
    base = np.asarray(base_code, dtype=np.float64).reshape(-1)
    kl = np.asarray(kl_per_latent, dtype=np.float64).reshape(-1)
    d = base.size
    if kl.size != d:
        raise ValueError(f"kl_per_latent has {kl.size} entries but the code has {d} latents")
    if not (np.all(np.isfinite(base)) and np.all(np.isfinite(kl))):
        raise ValueError("base_code and kl_per_latent must be finite")
    vals = traversal_values() if values is None else np.asarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = np.broadcast_to(vals, (d, vals.size))
    if vals.shape[0] != d or vals.shape[1] < 1 or not np.all(np.isfinite(vals)):
        raise ValueError(f"values must have shape (n,) or ({d}, n) and be finite, got {vals.shape}")
    order = np.argsort(-kl, kind="stable")[: (d if top is None else max(1, min(int(top), d)))]
    n_cols = vals.shape[1]
    z = np.repeat(base[None, :], order.size * n_cols, axis=0)
    for r, k in enumerate(order):
        z[r * n_cols:(r + 1) * n_cols, k] = vals[k]
    images = _as_images(decode(z.astype(np.float32)), z.shape[0])

    plt = pyplot()
    fig, axes = plt.subplots(order.size, n_cols, figsize=(0.9 * n_cols + 1.0, 0.9 * order.size + 0.4),
                             squeeze=False)
    for r, k in enumerate(order):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(images[r * n_cols + c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"z{k}\nKL {kl[k]:.2f}", rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.93 if title else 0.99, bottom=0.01,
                        wspace=0.03, hspace=0.03)
    return _finish(fig, path, title)


def plot_latent_kl(step, kl_per_latent, *, labels=None, show_total: bool = True, path=None, title=None):
    """Per-latent KL over training, one line per latent (DynamicVAE Fig. 2c).

    Parameters
    ----------
    step : array_like, shape (T,)
        Training steps.
    kl_per_latent : array_like, shape (T, d)
        KL of each latent at each step.
    labels : sequence of str, optional
        Line labels (default ``z0 … z{d-1}``); the legend lists latents by final KL.
    show_total : bool
        Also draw the total KL (sum over latents), dashed.
    path : str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    t = np.asarray(step, dtype=np.float64).reshape(-1)
    kl = np.asarray(kl_per_latent, dtype=np.float64)
    if kl.ndim != 2 or kl.shape[0] != t.size:
        raise ValueError(f"kl_per_latent must have shape (len(step)={t.size}, d), got {kl.shape}")
    if t.size < 1:
        raise ValueError("need at least one step")
    names = [f"z{k}" for k in range(kl.shape[1])] if labels is None else list(labels)
    if len(names) != kl.shape[1]:
        raise ValueError(f"{len(names)} labels for {kl.shape[1]} latents")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    final = np.nan_to_num(kl[-1], nan=-np.inf)
    for k in np.argsort(-final, kind="stable"):
        ax.plot(t, kl[:, k], lw=1.2, label=names[k])
    if show_total:
        ax.plot(t, np.nansum(kl, axis=1), "k--", lw=1.0, label="total")
    ax.set_xlabel("step")
    ax.set_ylabel("KL per latent (nats)")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    return _finish(fig, path, title)


_PANELS = (("beta", "β(t)"), ("kl", "KL (nats)"), ("recon", "reconstruction"))


def _band(ax, t, values, color, label, lw=1.4, ls="-"):
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        ax.plot(t, v, color=color, lw=lw, ls=ls, label=label)
    else:
        ax.plot(t, np.nanmean(v, axis=1), color=color, lw=lw, ls=ls, label=label)
        ax.fill_between(t, np.nanmin(v, axis=1), np.nanmax(v, axis=1), color=color, alpha=0.15, lw=0)


#: Line styles cycled with the colours, so that runs stay apart where their curves coincide or the
#: colours are hard to tell apart.
_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (10, 3)), (0, (1, 2, 5, 2)), (0, (3, 1, 1, 1)))


def plot_runs(runs: dict, *, beta_log: bool = False, symlog: bool = False, smooth: int = 1, path=None, title=None):
    """β(t), KL(t) with its set point, and reconstruction(t) of several runs on shared axes.

    Parameters
    ----------
    runs : dict
        name → mapping with ``step`` (T,) and any of ``beta``, ``kl``, ``recon``, ``setpoint``,
        each (T,) or (T, seeds). Several seeds draw the mean and a min–max band. An optional
        ``measures`` (``"kl"`` or ``"recon"``, :attr:`klcontrol.controllers.Controller.measures`) puts the
        set point on the panel of what the controller holds (GECO: the reconstruction). A KL panel whose
        curves exceed 100 nats, or a panel above 500, gets a symmetric-log axis.
    beta_log : bool
        Logarithmic β axis (useful when β falls from ~100 to below 1).
    symlog : bool
        Symmetric-log β axis (linear within ±1): for runs whose β changes sign, such as the capacity relay.
    smooth : int
        Centred moving-average window applied to β, KL and reconstruction before plotting (1: raw).
        The average of a relay's ±γ is its effective β.
    path : str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Three axes (β, KL, reconstruction) sharing the step axis; one legend for the runs (each
        has its own colour and line style), set points as wide pale lines in the colour of the
        first run that has them (identical set points are drawn once, listing their runs).
    """
    if not runs:
        raise ValueError("runs is empty")
    checked = {}
    for name, run in runs.items():
        if "step" not in run:
            raise ValueError(f"run {name!r} has no 'step' array")
        t = np.asarray(run["step"], dtype=np.float64).reshape(-1)
        series = {}
        for key in ("beta", "kl", "recon", "setpoint"):
            if key in run and run[key] is not None:
                v = np.asarray(run[key], dtype=np.float64)
                if v.ndim not in (1, 2) or v.shape[0] != t.size:
                    raise ValueError(f"run {name!r}: {key} must have {t.size} rows like step, got shape {v.shape}")
                series[key] = v if key == "setpoint" else (moving_mean(v, smooth, mode="same") if smooth > 1 and v.shape[0] >= 2 else v)
        if not series:
            raise ValueError(f"run {name!r} has none of beta, kl, recon, setpoint")
        checked[name] = (t, series)
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles, setpoints = [], []  # setpoints: [(t, curve, colour, [run names])], identical curves drawn once
    for i, (name, (t, series)) in enumerate(checked.items()):
        color, ls = colors[i % len(colors)], _STYLES[i % len(_STYLES)]
        lw = max(1.0, 2.2 - 0.18 * i)  # later runs thinner: where curves coincide, the earlier ones show beneath
        n_seeds = max((v.shape[1] for v in series.values() if v.ndim == 2), default=1)
        label = f"{name} (n={n_seeds})" if n_seeds > 1 else name
        for ax, (key, _) in zip(axes, _PANELS):
            if key in series:
                _band(ax, t, series[key], color, label, lw=lw, ls=ls)
        handles.append(Line2D([], [], color=color, ls=ls, lw=lw, label=label))
        if "setpoint" in series and np.any(np.isfinite(series["setpoint"])):
            sp = series["setpoint"] if series["setpoint"].ndim == 1 else series["setpoint"][:, 0]
            panel = 2 if runs[name].get("measures") == "recon" else 1  # GECO holds the reconstruction loss
            same = next((e for e in setpoints if e[4] == panel and e[0].shape == t.shape and np.array_equal(e[0], t)
                         and np.allclose(e[1], sp, equal_nan=True)), None)
            if same is None:
                setpoints.append((t, sp, color, [name], panel))
            else:
                same[3].append(name)
    sp_handles = {1: [], 2: []}
    for t, sp, color, names, panel in setpoints:
        axes[panel].plot(t, sp, color=color, lw=3.0, alpha=0.3, solid_capstyle="butt", zorder=0.5)
        sp_handles[panel].append(Line2D([], [], color=color, lw=3.0, alpha=0.3,
                                        label="set point: " + ", ".join(names)))
    for ax, (_, label) in zip(axes, _PANELS):
        ax.set_ylabel(label)
    for panel, hs in sp_handles.items():
        if hs:
            axes[panel].legend(handles=hs, loc="best", fontsize=7, title="wide pale lines", title_fontsize=7)
    kl_max = max((np.nanmax(series["kl"]) for _, series in checked.values() if "kl" in series), default=0.0)
    if kl_max > 100:  # one run's KL far above the set points (GECO at β ≈ 0): keep the others readable
        axes[1].set_yscale("symlog", linthresh=25.0)
    for ax in axes[1:]:
        if ax.get_yscale() == "linear" and np.nanmax([ln.get_ydata().max() for ln in ax.get_lines()] or [0]) > 500:
            ax.set_yscale("symlog", linthresh=200.0)
    # One legend for all panels, outside the axes: every run by colour and line style.
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    if beta_log:
        axes[0].set_yscale("log")
    elif symlog:
        axes[0].set_yscale("symlog", linthresh=1.0)
    axes[-1].set_xlabel("step")
    return _finish(fig, path, title, layout=False)

def traversals_figure(res, path) -> dict:
    """Latent traversals of a trained model around one sprite, rows ordered by per-latent KL.

    Parameters
    ----------
    res : klcontrol.vae_plant.training.trainer.RunResult
        The trained model (``res.model``).
    path : str
        Where to save the PNG.

    Returns
    -------
    dict
        ``order`` (latents, largest KL first), ``kl`` (per-latent KL on 1024 fresh procedural images,
        in that order), ``row_change`` (mean |Δpixel| between the two ends of each row), ``values``
        (the traversal's ends), ``active`` (latents above ``active_threshold_nats``).
    """
    import torch

    from klcontrol.vae_plant.data.dsprites import DSprites
    from klcontrol.vae_plant.training.model import gaussian_kl

    model = res.model
    dev = next(model.parameters()).device
    ds = DSprites()
    x, _ = ds.sample(1024, torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu, logvar = model.encode(x.to(dev))
        kl = gaussian_kl(mu.float(), logvar.float()).cpu().numpy()
        base, _ = model.encode(ds[400_000][0][None].float().to(dev))
    base = base[0].cpu().numpy()

    def decode(z):
        with torch.no_grad():
            return torch.sigmoid(model.decode(torch.as_tensor(z, device=dev))).cpu().numpy()

    vals = traversal_values()
    # How much each row changes the image: mean |pixel difference| between its two ends.
    ends = np.repeat(base[None], 2 * base.size, axis=0).astype(np.float32)
    for k in range(base.size):
        ends[2 * k, k], ends[2 * k + 1, k] = vals[0], vals[-1]
    img = decode(ends).reshape(base.size, 2, -1)
    change = np.abs(img[:, 0] - img[:, 1]).mean(axis=1)
    plot_traversals(decode, base, kl, vals, path=path,
                    title=f"latent traversals z = {vals[0]:g} … {vals[-1]:g}, other latents at the sprite's code\n"
                          "(rows: latents by KL on 1024 images, largest first)")
    order = np.argsort(-kl, kind="stable")
    return {"order": order.tolist(), "kl": kl[order].tolist(), "row_change": change[order].tolist(),
            "values": [float(vals[0]), float(vals[-1])],
            "active": int(np.sum(kl > 0.5)), "active_threshold_nats": 0.5}
