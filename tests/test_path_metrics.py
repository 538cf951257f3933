"""Unit tests of leafkit.path_metrics: what the chapters measure on a path (Figures 4-6)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from leafkit.path_metrics import (
    Transition,
    classes_visited,
    entropy,
    interpolation_gap,
    kernel_fraction,
    linear_interpolation,
    path_summary,
    plateau_change,
    segment_distance,
    settling_step,
    transitions,
)


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


def test_path_summary_verdicts():
    distance = torch.tensor([[10.0, 6.0, 6.0, 5.99], [10.0, 8.0, 6.0, 4.0], [10.0, 5.0, 0.9, 0.9]])
    rows = path_summary(distance, torch.tensor([3, 3, 2]), torch.tensor([False, False, True]),
                        window=2)
    assert [r["verdict"] for r in rows] == ["stalled", "closing", "arrived"]
    assert rows[0]["fraction"] == pytest.approx(0.599)
    assert rows[1]["drop"] == pytest.approx(4.0)


def test_path_summary_measures_each_path_over_its_own_last_steps():
    # the first path stopped at step 2 (its distance stays put after): over steps 0..2 it fell 4
    distance = torch.tensor([[10.0, 8.0, 6.0, 6.0, 6.0], [10.0, 9.99, 9.98, 9.97, 9.96]],
                            dtype=torch.float64)
    rows = path_summary(distance, torch.tensor([2, 4]), torch.tensor([False, False]), window=2,
                        frozen=torch.tensor([True, False]))
    assert [r["drop"] for r in rows] == pytest.approx([4.0, 0.02])
    assert [r["verdict"] for r in rows] == ["frozen", "stalled"]
    assert rows[0]["stalled"] and rows[0]["frozen"] and not rows[1]["frozen"]


def test_kernel_fraction_runs_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 4)).double()
    x, target = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    expected = kernel_fraction(model.eval(), x, target)
    model.train()
    torch.testing.assert_close(kernel_fraction(model, x, target), expected)
    assert model.training and model[2].training


def test_path_summary_is_a_labelled_table():
    distance = torch.tensor([[10.0, 6.0, 6.0, 5.99], [10.0, 8.0, 6.0, 4.0]])
    table = path_summary(distance, torch.tensor([3, 3]), torch.tensor([False, False]), window=2,
                         projection=["exact", "random"], pair=["4 -> 9", "4 -> 9"])
    lines = str(table).splitlines()
    assert lines[0].split()[:4] == ["projection", "pair", "verdict", "steps"]
    assert "fall over the last 2 steps" in lines[0] and "end / start" in lines[0]
    assert lines[2].split() == ["exact", "4", "->", "9", "stalled", "3", "10.00", "5.99", "60%",
                                "0.01"]
    page = re.sub(r' style="[^"]*"', "", table._repr_html_())
    assert "<td>random</td><td>4 -&gt; 9</td><td>closing</td>" in page
    with pytest.raises(ValueError, match=r"pair needs one label per path \(2\), got 1"):
        path_summary(distance, torch.tensor([3, 3]), torch.tensor([False, False]), window=2,
                     pair=["4 -> 9"])
