"""Unit tests of leafkit.widgets: the explorers render a default, and refuse arguments their
controls would clamp."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leafkit.data import MNISTData
from leafkit.models import MnistCNN

pytest.importorskip("ipywidgets")

from leafkit.widgets import cross_leaf_explorer, involutivity_explorer, path_explorer


@pytest.fixture
def data(fake_test_set) -> MNISTData:
    return fake_test_set


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return MnistCNN(channels=(4, 8), hidden=32).eval()


def test_path_explorer_renders_a_default(cnn, data):
    box = path_explorer(cnn, data, source=0, target=5, max_steps=20, record_every=5)
    assert box.result.points.shape[:2] == (1, 5)
    torch.testing.assert_close(box.result.points[0, 0], data.test_x[0])
    assert box.target_class == 5 and box.frame_png[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="projection"):
        path_explorer(cnn, data, projection="svd")


@pytest.mark.parametrize("kwargs, message", [
    ({"source": 99999}, r"source must be in \[0, 30\), got 99999"),
    ({"source": -1}, r"source must be in \[0, 30\), got -1"),
    ({"target": 30}, r"target must be in \[0, 30\), got 30"),
    ({"step_size": 5.0}, r"step_size must be in \[0.001, 1.0\], got 5.0"),
    ({"step_size": 1e-4}, r"step_size must be in \[0.001, 1.0\], got 0.0001"),
    ({"max_steps": 20000}, r"max_steps must be in \[10, 10000\], got 20000"),
    ({"max_steps": 5}, r"max_steps must be in \[10, 10000\], got 5"),
    ({"record_every": 0}, "record_every must be a positive integer, got 0"),
])
def test_path_explorer_refuses_what_a_slider_would_clamp(cnn, data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        path_explorer(cnn, data, **kwargs)


def test_cross_leaf_explorer_renders_a_default(cnn, data):
    box = cross_leaf_explorer(cnn, data, index=3, steps=20, record_every=10)
    assert box.result.points.shape[:2] == (1, 3) and box.index == 3
    torch.testing.assert_close(box.result.points[0, 0], data.test_x[3])
    assert box.frame_png[:4] == b"\x89PNG"


@pytest.mark.parametrize("kwargs, message", [
    ({"index": 30}, r"index must be in \[0, 30\), got 30"),
    ({"index": -2}, r"index must be in \[0, 30\), got -2"),
    ({"step_size": 2.0}, r"step_size must be in \[0.001, 1.0\], got 2.0"),
    ({"steps": 6000}, r"steps must be in \[10, 5000\], got 6000"),
    ({"steps": 20, "record_every": 50}, r"steps must be in \[50, 5000\], got 20"),
    ({"record_every": -1}, "record_every must be a positive integer, got -1"),
])
def test_cross_leaf_explorer_refuses_what_a_slider_would_clamp(cnn, data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cross_leaf_explorer(cnn, data, **kwargs)


def test_involutivity_explorer_renders_a_default(capsys):
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    box = involutivity_explorer(x, num_classes=3, widths=(4, 8), depths=(1, 2))
    printed = capsys.readouterr().out
    assert "default setting: relu MLP, 2 x 8 hidden, float64" in printed
    assert "over 2 inputs" in printed and len(box.children) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"depths": ()}, "at least one choice"),
    ({"activations": ("relu", "swish")}, r"activations \['swish'\] are unknown"),
    ({"depths": (0, 2)}, r"depths must be positive integers, got \[0\]"),
    ({"widths": (8, -4)}, r"widths must be positive integers, got \[-4\]"),
    ({"num_classes": 1}, "num_classes must be at least 2, got 1"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
])
def test_involutivity_explorer_refuses_bad_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        involutivity_explorer(torch.randn(2, 6), **kwargs)
