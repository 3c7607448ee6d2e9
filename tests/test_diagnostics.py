"""Diagnostic figures: files written, axes counts, row order by KL, bad input."""
import numpy as np
import pytest

from klcontrol.vae_plant.metrics.diagnostics import plot_latent_kl, plot_runs, plot_traversals, traversal_values


def _decode_recording(calls):
    def decode(z):
        calls.append(np.array(z))
        # Brightness encodes the traversed value so the drawn images can be checked.
        return np.clip(0.5 + 0.1 * z.sum(axis=1), 0, 1)[:, None, None, None] * np.ones((1, 1, 8, 8))
    return decode


def test_traversals_rows_sorted_by_kl(tmp_path):
    calls = []
    kl = np.array([0.1, 3.0, 0.0, 1.5])
    path = tmp_path / "trav.png"
    fig = plot_traversals(_decode_recording(calls), np.zeros(4), kl, np.linspace(-2, 2, 5), path=str(path))
    assert path.stat().st_size > 0
    assert len(fig.axes) == 4 * 5
    z = calls[0].reshape(4, 5, 4)
    # Row r traverses the r-th largest-KL latent; the others stay at the base code.
    for r, k in enumerate([1, 3, 0, 2]):
        np.testing.assert_allclose(z[r, :, k], np.linspace(-2, 2, 5))
        assert np.all(np.delete(z[r], k, axis=1) == 0)
    assert "KL 3.00" in fig.axes[0].get_ylabel()


def test_traversals_top_and_per_latent_quantiles():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(500, 3)) * [1.0, 0.1, 3.0]
    values = traversal_values(means, n_values=4, quantiles=(0.05, 0.95))
    assert values.shape == (3, 4)
    np.testing.assert_allclose(values[2, [0, -1]], np.quantile(means[:, 2], [0.05, 0.95]))
    calls = []
    fig = plot_traversals(_decode_recording(calls), means[0], [0.2, 0.1, 0.9], values, top=2)
    assert len(fig.axes) == 2 * 4
    np.testing.assert_allclose(calls[0][:4, 2], values[2])


def test_latent_kl_and_runs_figures(tmp_path):
    steps = np.arange(100)
    kl = np.cumsum(np.random.default_rng(1).random((100, 6)), axis=0)
    fig = plot_latent_kl(steps, kl, path=str(tmp_path / "kl.png"))
    assert (tmp_path / "kl.png").stat().st_size > 0
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 7  # 6 latents + total
    runs = {
        "DynamicVAE": {"step": steps, "beta": np.linspace(150, 0.5, 100), "kl": kl.sum(1),
                       "recon": np.linspace(300, 12, 100), "setpoint": np.linspace(0.5, 20, 100)},
        "β-VAE_H": {"step": steps, "beta": np.full((100, 3), 4.0), "kl": np.ones((100, 3)),
                    "recon": np.full((100, 3), 40.0)},
    }
    fig = plot_runs(runs, beta_log=True, path=str(tmp_path / "runs.png"))
    assert (tmp_path / "runs.png").stat().st_size > 0
    assert len(fig.axes) == 3
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[1].lines) == 3  # two KL curves and one set point


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: plot_traversals(lambda z: z, np.zeros(3), np.zeros(2)), "latents"),
        (lambda: plot_traversals(lambda z: np.zeros((1, 4, 4)), np.zeros(2), np.zeros(2)), "images"),
        (lambda: plot_traversals(lambda z: z, np.zeros(2), [np.nan, 1]), "finite"),
        (lambda: plot_traversals(lambda z: z, np.zeros(2), np.zeros(2), np.zeros((3, 4))), "values"),
        (lambda: traversal_values(n_values=1), "n_values"),
        (lambda: traversal_values(quantiles=(0.1, 0.9)), "means"),
        (lambda: plot_latent_kl(np.arange(5), np.zeros((4, 2))), "shape"),
        (lambda: plot_runs({}), "empty"),
        (lambda: plot_runs({"a": {"beta": [1, 2]}}), "step"),
        (lambda: plot_runs({"a": {"step": [0, 1], "kl": [1, 2, 3]}}), "rows"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_runs_figure_smooths_and_keeps_one_setpoint_entry():
    steps = np.arange(200)
    relay = np.where(steps % 2 == 0, 1000.0, -1000.0)
    runs = {name: {"step": steps, "beta": relay, "kl": np.full(200, 3.0), "setpoint": np.full(200, 3.0)}
            for name in ("a", "b", "c")}
    fig = plot_runs(runs, symlog=True, smooth=20)
    beta_line = fig.axes[0].lines[0].get_ydata()
    assert np.all(np.abs(beta_line[15:-15]) <= 50.0)  # the relay's mean is near 0, not ±1000
    assert fig.axes[0].get_yscale() == "symlog"
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert sum("set point" in x for x in labels) == 1


def test_runs_figure_tells_every_run_apart():
    # Seven runs whose curves coincide: each keeps its own (colour, line style), and one legend lists them all.
    steps = np.arange(50)
    runs = {f"run{i}": {"step": steps, "beta": np.ones(50), "kl": np.ones((50, 2)), "recon": np.ones(50)}
            for i in range(7)}
    fig = plot_runs(runs)
    kl_lines = fig.axes[1].lines
    assert len(kl_lines) == 7
    assert len({line.get_color() for line in kl_lines}) == 7
    assert len({line.get_linestyle() for line in kl_lines}) >= 4  # "-", "--", "-.", ":" and dash patterns
    assert len({line.get_linewidth() for line in kl_lines}) > 1  # earlier runs wider: they show beneath
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"run{i} (n=2)" for i in range(7)]
