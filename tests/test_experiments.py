"""Tests of leafkit.experiments (the examples and measurements of Figures 4-6) and of the path
plots, scrubber and explorer built on them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leafkit.data import MNISTData
from leafkit.experiments import (PAPER_PAIRS, Transition, classes_visited, entropy,
                                 example_pairs, first_of_class, interpolation_gap,
                                 kernel_fraction, linear_interpolation, mirror, plateau_change,
                                 segment_distance, settling_step, transitions)
from leafkit.models import MnistCNN
from leafkit.paths import horizontal_path


@pytest.fixture
def data() -> MNISTData:
    """A fake data set: 30 random test images, labels 0..9 three times (first of c is c)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 1, 28, 28, generator=gen)
    y = torch.arange(30) % 10
    return MNISTData(x[:0], y[:0], x, y, source="offline", description="fake")


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return MnistCNN(channels=(4, 8), hidden=32).eval()


def test_first_of_class_and_mirror():
    labels = torch.tensor([3, 1, 3, 0, 1])
    assert [first_of_class(labels, c) for c in (0, 1, 3)] == [3, 1, 0]
    with pytest.raises(ValueError, match="no image of class 7"):
        first_of_class(labels, 7)
    x = torch.arange(6.0).view(1, 2, 3)
    assert mirror(x).tolist() == [[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]
    torch.testing.assert_close(mirror(mirror(x)), x)


def test_example_pairs_offline_rule(data):
    fig4 = example_pairs(data, "fig4")
    assert fig4.source_index == (0, 4) and fig4.target_index == (1, 9)
    assert fig4.source_label == (0, 4) and fig4.target_label == (1, 9)
    torch.testing.assert_close(fig4.targets, data.test_x[[1, 9]])
    fig5 = example_pairs(data, "fig5")
    assert fig5.mirrored and fig5.target_label == (3, 9)
    torch.testing.assert_close(fig5.targets, data.test_x[[3, 9]].flip(-1))
    assert "mirror of 3" in fig5.labels()[0]
    with pytest.raises(ValueError, match="unknown figure"):
        example_pairs(data, "fig7")


def test_example_pairs_full_uses_the_papers_indices():
    y = torch.arange(10000) % 10
    x = torch.zeros(10000, 1, 1, 2)
    x[:, 0, 0, 0] = torch.arange(10000.0)  # pixel 0 holds the index, pixel 1 is 0
    full = MNISTData(x[:0], y[:0], x, y, source="full", description="fake full")
    pairs = example_pairs(full, "fig5")
    assert (pairs.source_index, pairs.target_index) == ((125, 4200), (6349, 9792))
    assert pairs.sources[:, 0, 0, 0].tolist() == [125.0, 4200.0]
    assert pairs.targets[:, 0, 0, 1].tolist() == [6349.0, 9792.0]  # mirrored: index moved right
    assert example_pairs(full, "fig6").source_index == tuple(i for i, _ in PAPER_PAIRS["fig6"])


def test_linear_interpolation_and_segment_distance():
    a = torch.zeros(2, 3)
    b = torch.tensor([[3.0, 0, 0], [0, 4.0, 0]])
    line = linear_interpolation(a, b, 5)
    assert line.shape == (2, 5, 3)
    torch.testing.assert_close(line[:, 0], a)
    torch.testing.assert_close(line[:, -1], b)
    torch.testing.assert_close(segment_distance(line, a, b), torch.zeros(2, 5))
    # a point off the segment's middle, one beyond its end
    pts = torch.tensor([[[1.5, 2.0, 0.0], [5.0, 0.0, 0.0]], [[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(segment_distance(pts, a, b), torch.tensor([[2.0, 2.0], [1.0, 0.0]]))
    torch.testing.assert_close(interpolation_gap(pts, a, b), torch.tensor([2.0 / 3.0, 0.25]))
    with pytest.raises(ValueError):
        linear_interpolation(a, b, 1)


def test_entropy_transitions_and_classes():
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))
    assert float(entropy(torch.tensor([1.0, 0.0]))) == 0.0
    probs = torch.tensor([[[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.0, 0.1, 0.9]]])
    steps = torch.tensor([0, 10, 20, 25])
    (found,) = transitions(probs, steps)
    assert [(t.step, t.before, t.after) for t in found] == [(20, 0, 1), (25, 1, 2)]
    assert found[0].max_prob == pytest.approx(0.6)
    assert found[0].entropy == pytest.approx(float(entropy(torch.tensor([0.6, 0.4, 0.0]))))
    assert isinstance(found[1], Transition) and found[1].max_prob == pytest.approx(0.7)
    assert classes_visited(probs) == [[0, 1, 2]]


def test_kernel_fraction_on_a_linear_model():
    torch.manual_seed(1)
    model = nn.Linear(12, 4).double()
    x = torch.randn(2, 12, dtype=torch.float64)
    A = model.weight.detach()
    c = torch.tensor([[1.0, -1.0, 0.5, -0.5], [2.0, 0.0, -1.0, -1.0]], dtype=torch.float64)
    along = x + c @ A  # sum(c) = 0: inside D_x = {A^T c : sum c = 0}
    zeros, ones = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(kernel_fraction(model, x, along), zeros, atol=1e-12, rtol=0)
    q = torch.linalg.qr(A.T, mode="complete").Q[:, 4:]  # orthogonal to every row of A
    across = x + (q @ torch.randn(8, 2, dtype=torch.float64)).T
    torch.testing.assert_close(kernel_fraction(model, x, across), ones)


def test_plateau_change_and_settling_step():
    distance = torch.tensor([[10.0, 8.0, 7.0, 7.0, 7.0], [10.0, 9.0, 8.0, 7.0, 6.0]])
    torch.testing.assert_close(plateau_change(distance, 2), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError):
        plateau_change(distance, 5)
    target = torch.zeros(1, 2)
    points = torch.tensor([[[4.0, 0.0], [2.0, 0.0], [1.05, 0.0], [1.0, 0.0]]])
    steps, change = settling_step(points, target, torch.tensor([0, 100, 200, 300]), rtol=0.1)
    assert steps.tolist() == [200]
    torch.testing.assert_close(change[0], torch.tensor([3.0, 1.0, 0.05, 0.0]))


def test_path_plots_scrubber_and_explorer(cnn, data):
    import matplotlib.pyplot as plt

    from leafkit.viz import path_and_interpolation, path_scrubber, plot_path_distances
    from leafkit.widgets import path_explorer

    src, tgt = data.test_x[:2], data.test_x[2:4]
    res = horizontal_path(cnn, src, tgt, max_steps=6, tol=None, record_every=2, progress=False,
                          projection=["exact", "authors"])
    fig = path_and_interpolation(cnn, res, [0], src[0], tgt[0], frames=3)
    assert len(fig.axes) == 6
    fig2 = plot_path_distances(res, ["a", "b"], ["exact", "authors"])
    plt.close(fig)
    plt.close(fig2)
    html = path_scrubber(res, 1, frames=3).data
    assert "<script" in html and "anim" in html
    with pytest.raises(ValueError):
        path_scrubber(res, 2)
    box = path_explorer(cnn, data, source=0, target=5, max_steps=20, record_every=5)
    assert box.result.points.shape[:2] == (1, 5)
    assert len(box.children[-1].value) > 0  # the default frame is rendered
    with pytest.raises(ValueError, match="projection"):
        path_explorer(cnn, data, projection="svd")


def test_path_summary_verdicts():
    from leafkit.experiments import path_summary

    distance = torch.tensor([[10.0, 6.0, 6.0, 5.99], [10.0, 8.0, 6.0, 4.0], [10.0, 5.0, 0.9, 0.9]])
    rows = path_summary(distance, torch.tensor([3, 3, 2]), torch.tensor([False, False, True]),
                        window=2)
    assert [r["verdict"] for r in rows] == ["stalled", "closing", "arrived"]
    assert rows[0]["fraction"] == pytest.approx(0.599)
    assert rows[1]["drop"] == pytest.approx(4.0)
