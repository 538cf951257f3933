"""Unit tests of leafkit.viz: the image plots of the path chapters and the kernel-free player."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from leafkit.data import denormalize
from leafkit.models import MnistCNN
from leafkit.paths import horizontal_path
from leafkit.viz import frame_figure, path_and_interpolation, path_scrubber, path_strip, show_images


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return MnistCNN(channels=(4, 8), hidden=32).eval()


def test_show_images_draws_pixel_intensities(images):
    fig = show_images(images[:3], ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4  # a 2 x 2 grid, the last panel empty
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in shown] == ["a", "b", "c"]
    np.testing.assert_allclose(shown[1].get_images()[0].get_array(),
                               denormalize(images[1]).reshape(28, 28).numpy())
    assert shown[0].get_images()[0].get_clim() == (0.0, 1.0)


def test_path_strip_shows_the_chosen_frames(images):
    points = images.view(1, 4, 1, 28, 28)
    probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]])
    fig = path_strip(points, [0, 10, 20, 25], probs, every=20, row_labels=["path"])
    assert [ax.get_title() for ax in fig.axes] == ["t=0\n0: 0.90", "t=20\n1: 0.70",
                                                   "t=25\n1: 0.80"]
    assert fig.axes[0].get_ylabel() == "path"
    with pytest.raises(ValueError, match="record_steps has 3 entries"):
        path_strip(points, [0, 10, 20])


def test_frame_figure_highlights_a_class(images):
    probs = torch.tensor([0.1, 0.7, 0.2])
    fig = frame_figure(images[0], probs, title="x", highlight=1, curve=([0, 1, 2], [1, .5, .2]),
                       marker=1)
    _, bars, curve = fig.axes
    assert [round(b.get_height(), 6) for b in bars.patches] == [0.1, 0.7, 0.2]
    assert bars.patches[1].get_facecolor() != bars.patches[0].get_facecolor()
    np.testing.assert_allclose(curve.get_lines()[0].get_ydata(), [1, 0.5, 0.2])


def test_path_and_interpolation_and_scrubber(cnn, images):
    src, tgt = images[:2], images[2:4]
    res = horizontal_path(cnn, src, tgt, max_steps=6, tol=None, record_every=2, progress=False,
                          projection=["exact", "authors"])
    cnn.train()
    fig = path_and_interpolation(cnn, res, [0], src[0], tgt[0], frames=3)
    assert cnn.training  # labelled in eval mode, mode restored
    assert len(fig.axes) == 6  # one path row and the interpolation row, three frames each
    last = fig.axes[-1]
    np.testing.assert_allclose(last.get_images()[0].get_array(),
                               denormalize(tgt[0]).reshape(28, 28).numpy(), atol=1e-6)
    assert last.get_title().startswith("s=1.00") and fig.axes[3].get_ylabel() == "interpolation"
    html = path_scrubber(res, 1, frames=3).data
    assert "<script" in html and "anim" in html
    with pytest.raises(ValueError, match=r"index must be in \[0, 2\)"):
        path_scrubber(res, 2)
    with pytest.raises(ValueError, match="frames must be at least 2"):
        path_scrubber(res, 0, frames=1)
