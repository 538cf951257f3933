"""Plots shared by the chapters: image grids in pixel intensities, not normalized units."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .data import denormalize


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 10,
                size: float = 1.2, suptitle: str | None = None):
    """Show normalized MNIST images ``(N, 1, 28, 28)`` (or ``(N, 28, 28)``) in a grid.

    Pixels are mapped back to ``[0, 1]`` and drawn with a fixed gray scale, so noise outside the
    valid box shows as saturated black or white rather than being rescaled away.

    Returns:
        The matplotlib figure.
    """
    images = denormalize(images.detach().cpu().reshape(len(images), 28, 28))
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, n)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="gray", vmin=0.0, vmax=1.0)
            if titles is not None:
                ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
