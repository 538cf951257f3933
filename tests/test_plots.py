"""Unit tests of leafkit.plots: what each plot draws (its lines, points, scales and labels)."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from leafkit import plots
from leafkit.planes import PLANE_FIELDS, circle
from leafkit.tables import Table


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_spectra_draws_each_sample_normalized_and_descending():
    lam = torch.tensor([[1.0, 4.0, 2.0, 1e-20], [3.0, -6.0, 0.0, 1.5]], dtype=torch.float64)
    ax = plots.plot_spectra(lam, 3, labels=["a", "b"], show=3)
    lines = ax.get_lines()
    assert len(lines) == 3  # two samples and the marker at C - 1
    np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(lines[1].get_ydata(), [1.0, 0.5, 0.25])
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3])
    assert list(lines[2].get_xdata()) == [2.5, 2.5]  # between the (C-1)-th and the C-th
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "C - 1 = 2"]


def test_plot_rank_vs_tolerance_draws_median_and_band():
    rtols = torch.tensor([1e-1, 1e-3, 1e-6])
    ranks = {"x": torch.tensor([[1, 2, 5], [1, 4, 9], [1, 3, 7]]), "y": torch.ones(3, 3)}
    ax = plots.plot_rank_vs_tolerance(rtols, ranks, 10)
    median_x, median_y, true_rank = ax.get_lines()
    np.testing.assert_allclose(median_x.get_xdata(), rtols.numpy())
    np.testing.assert_allclose(median_x.get_ydata(), [1, 3, 7])
    np.testing.assert_allclose(median_y.get_ydata(), [1, 1, 1])
    assert list(true_rank.get_ydata()) == [9, 9]
    assert len(ax.collections) == 2  # one min-max band per method
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 1 and band[:, 1].max() == 9
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "symlog")
    assert ax.xaxis_inverted() and ax.get_ylabel() == "estimated rank of G"


def test_plot_kl_check_draws_the_ratio():
    eps = torch.logspace(-4, 0, 3, dtype=torch.float64)
    q = eps.square().expand(2, 3) * torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    kl = q * torch.tensor([0.5, 0.5, 0.6], dtype=torch.float64)
    fig = plots.plot_kl_check(eps, {"toy": (kl, q)})
    left, right = fig.axes
    assert len(left.get_lines()) == 2 + 2  # KL = q, KL = q / 2, then one line per sample
    np.testing.assert_allclose(left.get_lines()[2].get_xdata(), q[0].numpy())
    np.testing.assert_allclose(left.get_lines()[3].get_ydata(), kl[1].numpy())
    ratio = right.get_lines()[:2]
    for line in ratio:
        np.testing.assert_allclose(line.get_xdata(), eps.numpy())
        np.testing.assert_allclose(line.get_ydata(), [0.5, 0.5, 0.6])
    assert list(right.get_lines()[2].get_ydata()) == [0.5, 0.5]
    assert (left.get_xscale(), left.get_yscale(), right.get_xscale()) == ("log", "log", "log")
    assert right.get_ylabel() == "KL / q"


def test_plot_plane_fields_draws_squares_and_the_lifted_circle():
    fig = plots.plot_plane_fields(grid=2, radius=0.5)
    assert [ax.get_title() for ax in fig.axes] == [f.name for f in PLANE_FIELDS.values()]
    for ax, field in zip(fig.axes, PLANE_FIELDS.values()):
        lines = ax.get_lines()
        assert len(lines) == 2 * 2 + 1  # one outline per grid point, then the lifted circle
        curve = field.lift(circle(0.5)).numpy()
        xs, ys, zs = lines[-1].get_data_3d()
        np.testing.assert_allclose(np.stack([xs, ys, zs], -1), curve)
        assert len(ax.collections) == 2 * 2 + 2  # the squares, the start dot and the end cross


def test_plot_involutivity_survey_draws_every_residual():
    table = Table([{"architecture": "MLP", "activation": "relu", "weights": "random",
                    "residuals": torch.tensor([1e-15, 0.0])},
                   {"architecture": "MLP", "activation": "tanh", "weights": "trained",
                    "residuals": torch.tensor([0.3, 0.1, 0.2])}])
    ax = plots.plot_involutivity_survey(table, floor=1e-17)
    relu, tanh = ax.collections[:2]
    np.testing.assert_allclose(relu.get_offsets()[:, 0], [1e-15, 1e-17])  # zero drawn at floor
    np.testing.assert_allclose(tanh.get_offsets()[:, 0], [0.3, 0.1, 0.2])
    np.testing.assert_allclose(tanh.get_offsets()[:, 1], [0.75, 1.0, 1.25])  # row 1, spread
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["MLP relu (random)",
                                                            "MLP tanh (trained)"]


def test_plot_trace_curve_draws_the_log():
    log = [{"step": s, "trace_mean": 10.0 * (s + 1), "trace_median": 5.0 * (s + 1),
            "rtols": [1e-2, 1e-3], "rank_G_by_rtol": [1 + s, 2 + s], "rank_J_by_rtol": [9, 9],
            "train_accuracy": 0.1 * s, "test_accuracy": 0.05 * s} for s in (0, 100, 200)]
    fig = plots.plot_trace_curve(log, steps_per_epoch=100, reference_step=100)
    trace, rank, acc = fig.axes[:3]
    mean, median = trace.get_lines()[:2]
    np.testing.assert_allclose(mean.get_xdata(), [0, 100, 200])
    np.testing.assert_allclose(mean.get_ydata(), [10, 1010, 2010])
    np.testing.assert_allclose(median.get_ydata(), [5, 505, 1005])
    assert trace.get_yscale() == "log"
    np.testing.assert_allclose(rank.get_lines()[1].get_ydata(), [2, 102, 202])
    assert len(acc.get_lines()) == 3  # train, test, and the dashed reference step
    assert list(acc.get_lines()[-1].get_xdata()) == [100, 100]
    assert rank.get_title() == "(b) rank of G by tolerance"


def test_plot_walk_draws_distance_and_probability():
    steps = torch.tensor([0, 10, 20])
    dist = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.5, 1.5]])
    prob = torch.tensor([[1.0, 0.9, 0.4], [1.0, 1.0, 0.9]])
    fig = plots.plot_walk(steps, {"across": (dist, prob), "control": (dist * 2, prob)},
                          labels=["3", "7"])
    ax_d, ax_p = fig.axes
    assert len(ax_d.get_lines()) == len(ax_p.get_lines()) == 4
    np.testing.assert_allclose(ax_d.get_lines()[1].get_ydata(), dist[1].numpy())
    np.testing.assert_allclose(ax_d.get_lines()[2].get_ydata(), 2 * dist[0].numpy())
    np.testing.assert_allclose(ax_p.get_lines()[0].get_ydata(), prob[0].numpy())
    assert ax_d.get_lines()[2].get_linestyle() == "--"
    assert ax_d.get_lines()[0].get_label() == "across, 3"


def test_plot_path_distances_draws_distances_and_class_changes():
    probs = torch.tensor([[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]],
                          [[0.7, 0.3], [0.8, 0.2], [0.9, 0.1]]])
    result = SimpleNamespace(record_steps=torch.tensor([0, 5, 10]), probs=probs,
                             distance=torch.tensor([[4.0, 3.0, 2.0, 0.9, 0.9, 0.9],
                                                    [4.0, 3.5, 3.0, 2.5, 2.0, 1.5]]),
                             steps_taken=torch.tensor([3, 5]))
    fig = plots.plot_path_distances(result, ["0 -> 1", "0 -> 1"], ["exact", "authors"], tol=1.0)
    ax_d, ax_p = fig.axes
    first, second, tol = ax_d.get_lines()
    np.testing.assert_allclose(first.get_ydata(), [4.0, 3.0, 2.0, 0.9])  # up to its last step
    np.testing.assert_allclose(second.get_ydata(), result.distance[1].numpy())
    assert second.get_linestyle() == "--" and first.get_color() == second.get_color()
    assert list(tol.get_ydata()) == [1.0, 1.0]
    confidence, change = ax_p.get_lines()[:2]
    np.testing.assert_allclose(confidence.get_ydata(), [0.9, 0.6, 0.8])
    np.testing.assert_allclose(change.get_xdata(), [5])  # the first path turns from 0 to 1
    assert [t.get_text() for t in ax_p.texts] == ["1"]
    assert ax_p.get_xscale() == "symlog"
