"""Unit tests of leafkit.examples: the source and target images of the path figures."""

from __future__ import annotations

import pytest
import torch

from leafkit.data import MNISTData
from torch import nn

from leafkit.examples import example_pairs, first_of_class, mirror, unsure_pairs


@pytest.fixture
def data(fake_test_set) -> MNISTData:
    return fake_test_set


def test_first_of_class_and_mirror():
    labels = torch.tensor([3, 1, 3, 0, 1])
    assert [first_of_class(labels, c) for c in (0, 1, 3)] == [3, 1, 0]
    with pytest.raises(ValueError, match="no image of class 7"):
        first_of_class(labels, 7)
    x = torch.arange(6.0).view(1, 2, 3)
    assert mirror(x).tolist() == [[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]
    torch.testing.assert_close(mirror(mirror(x)), x)


def test_example_pairs_offline_rule(data):
    fig4 = example_pairs(data, paper=((4185, 5874), (3898, 9709)), offline=((0, 1), (4, 9)))
    assert fig4.source_index == (0, 4) and fig4.target_index == (1, 9)
    assert fig4.source_label == (0, 4) and fig4.target_label == (1, 9)
    torch.testing.assert_close(fig4.sources, data.test_x[[0, 4]])
    torch.testing.assert_close(fig4.targets, data.test_x[[1, 9]])
    assert not fig4.mirrored
    assert fig4.rule == "offline substitute: the first test image of each class 0->1 and 4->9"
    assert fig4.labels() == ["0 (#0) -> 1 (#1)", "4 (#4) -> 9 (#9)"]
    fig5 = example_pairs(data, paper=((125, 6349),), offline=((2, 3), (7, 9)), mirrored=True)
    assert fig5.mirrored and fig5.target_label == (3, 9)
    torch.testing.assert_close(fig5.targets, data.test_x[[3, 9]].flip(-1))
    assert fig5.labels()[0] == "2 (#2) -> mirror of 3 (#3)"
    assert fig5.rule.endswith(", targets mirrored left to right")


def test_example_pairs_full_uses_the_papers_indices():
    y = torch.arange(10000) % 10
    x = torch.zeros(10000, 1, 1, 2)
    x[:, 0, 0, 0] = torch.arange(10000.0)  # pixel 0 holds the index, pixel 1 is 0
    full = MNISTData(x[:0], y[:0], x, y, source="full", description="fake full")
    pairs = example_pairs(full, paper=((125, 6349), (4200, 9792)), offline=((2, 3), (7, 9)),
                          mirrored=True)
    assert (pairs.source_index, pairs.target_index) == ((125, 4200), (6349, 9792))
    assert pairs.sources[:, 0, 0, 0].tolist() == [125.0, 4200.0]
    assert pairs.targets[:, 0, 0, 1].tolist() == [6349.0, 9792.0]  # mirrored: index moved right
    assert pairs.source_label == (5, 0) and pairs.rule.startswith("the authors' test indices")
    with pytest.raises(ValueError, match=r"paper indices \[10000\] are out of range"):
        example_pairs(full, paper=((1, 10000),), offline=((0, 1),))


def test_example_pairs_rejects_malformed_tables(data):
    with pytest.raises(ValueError, match="offline must be a non-empty sequence"):
        example_pairs(data, paper=((1, 2),), offline=())
    with pytest.raises(ValueError, match="paper must be a non-empty sequence"):
        example_pairs(data, paper=((1, 2, 3),), offline=((0, 1),))
    with pytest.raises(ValueError, match="no image of class 11"):
        example_pairs(data, paper=((1, 2),), offline=((0, 11),))


class _ScoresAreTheInput(nn.Module):
    def forward(self, x):
        return x


def test_unsure_pairs_pairs_the_unsure_images_in_order_across_classes():
    sure, unsure = [10.0, 0.0, 0.0], [0.0, 0.0, 0.0]  # p_max 0.9999 and 1/3
    x = torch.tensor([unsure, sure, unsure, unsure, unsure, unsure])
    y = torch.tensor([0, 1, 0, 2, 1, 1])
    pairs = unsure_pairs(_ScoresAreTheInput(), x, y)
    # 0 (class 0) skips 2 (class 0 too) for 3; 2 then takes 4; 5 is left alone; 1 is too sure
    assert (pairs.source_index, pairs.target_index) == ((0, 2), (3, 4))
    assert (pairs.source_label, pairs.target_label) == ((0, 0), (2, 1))
    torch.testing.assert_close(pairs.sources, x[[0, 2]])
    torch.testing.assert_close(pairs.targets, x[[3, 4]])
    assert unsure_pairs(_ScoresAreTheInput(), x, y, count=1).source_index == (0,)
    assert "max p <= 0.99" in pairs.rule
    with pytest.raises(ValueError, match="no pair"):
        unsure_pairs(_ScoresAreTheInput(), x, y, max_p=0.3)
    with pytest.raises(ValueError, match="labels must have shape"):
        unsure_pairs(_ScoresAreTheInput(), x, y[:3])
