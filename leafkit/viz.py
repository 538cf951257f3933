"""Image plots of the chapters: digits, path strips and frames, in pixel intensities (not
normalized units), and a kernel-free player of one path.

Two kinds of image are drawn: normalized MNIST digits ``(1, 28, 28)`` (mapped back to ``[0, 1]``,
gray) and CIFAR-10 images ``(3, 32, 32)``, RGB intensities in ``[0, 1]`` (leafkit's CIFAR-10
units, :mod:`leafkit.cifar`), drawn in color; both on the fixed scale ``[0, 1]``.

Line plots (spectra, distances, the trace of ``G``) are in :mod:`leafkit.plots`.

Paper: Figures 3-6 (the paths, frame by frame).
"""

from __future__ import annotations

import html as _html
import re
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .checks import eval_mode
from .data import denormalize
from .path_metrics import linear_interpolation

__all__ = ["frame_figure", "path_and_interpolation", "path_scrubber", "path_strip",
           "show_images"]


def _pixels(images: torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` gray intensities of normalized MNIST ``(N, 1, 28, 28)`` / ``(N, 28, 28)``, or
    ``(N, H, W, 3)`` RGB of CIFAR-10 images ``(N, 3, H, W)`` (clipped to ``[0, 1]``, where color
    imshow has no vmin/vmax)."""
    images = images.detach().cpu().float()
    if images.dim() == 4 and images.shape[1] == 3:
        return images.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    return denormalize(images.reshape(len(images), 28, 28)).numpy()  # imshow's vmin/vmax clip


def _imshow(ax, pixels: np.ndarray):
    """Draw one image of :func:`_pixels` on a fixed scale, without ticks."""
    artist = ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 10,
                size: float = 1.2, suptitle: str | None = None):
    """Show normalized MNIST images ``(N, 1, 28, 28)`` (or ``(N, 28, 28)``), or CIFAR-10 images
    ``(N, 3, 32, 32)``, in a grid.

    Pixels are mapped back to ``[0, 1]`` and drawn with a fixed gray scale, so noise outside the
    valid box shows as saturated black or white rather than being rescaled away.

    Returns:
        The matplotlib figure.
    """
    images = _pixels(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, n)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            _imshow(ax, images[k])
            if titles is not None:
                ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def path_strip(points: torch.Tensor, record_steps: Sequence[int] | torch.Tensor,
               probs: torch.Tensor | None = None, *, every: int | None = None,
               row_labels: Sequence[str] | None = None, size: float = 1.1):
    """Image strips of a batch of paths: one row per path, one column per shown frame.

    Args:
        points: ``(B, K, *image_shape)`` recorded points (``PathResult.points``), MNIST
            ``(1, 28, 28)`` or CIFAR-10 ``(3, 32, 32)`` images; a single path
            ``(K, *image_shape)`` is shown as one row.
        record_steps: ``(K,)`` the step of each recorded point (``PathResult.record_steps``).
        probs: ``(B, K, C)`` class probabilities at those points (``PathResult.probs``); each frame
            is then titled with its step, predicted class and that class's probability.
        every: show only the frames whose step is a multiple of ``every``, plus the last frame;
            ``None`` shows every recorded frame.
        row_labels: one label per path, written at the left of its row.
        size: inches per image.

    Returns:
        The matplotlib figure. Pixels are drawn as in :func:`show_images` (fixed gray scale, in
        ``[0, 1]`` intensities).
    """
    if points.dim() == 4:
        points = points.unsqueeze(0)
        probs = None if probs is None else probs.unsqueeze(0)
    steps = [int(s) for s in record_steps]
    if len(steps) != points.shape[1]:
        raise ValueError(f"record_steps has {len(steps)} entries for {points.shape[1]} frames")
    cols = [k for k, s in enumerate(steps)
            if every is None or s % every == 0 or k == len(steps) - 1]
    B = points.shape[0]
    fig, axes = plt.subplots(B, len(cols), figsize=(size * len(cols), size * B * 1.3),
                             squeeze=False)
    frames = _pixels(points.flatten(0, 1))
    images = frames.reshape(B, -1, *frames.shape[1:])
    for b in range(B):
        for j, k in enumerate(cols):
            ax = axes[b, j]
            _imshow(ax, images[b, k])
            title = f"t={steps[k]}"
            if probs is not None:
                p, c = probs[b, k].max(-1)
                title += f"\n{int(c)}: {float(p):.2f}"
            ax.set_title(title, fontsize=7)
        if row_labels is not None:
            axes[b, 0].set_ylabel(row_labels[b], fontsize=8)
    fig.tight_layout()
    return fig


def frame_figure(image: torch.Tensor, probs: torch.Tensor, *, title: str = "",
                 highlight: int | None = None, curve: tuple[Sequence, Sequence] | None = None,
                 marker: float | None = None, curve_label: str = ""):
    """One frame of a path: the image, a bar chart of the class probabilities beside it, and
    optionally a curve along the path with the current step marked (used by the explorers).

    Args:
        image: ``(1, 28, 28)`` or ``(28, 28)`` normalized MNIST image, or a ``(3, 32, 32)``
            CIFAR-10 image.
        probs: ``(C,)`` class probabilities at this frame.
        title: title over the image.
        highlight: a class whose bar is drawn in a second color (e.g. the starting class).
        curve: ``(xs, ys)`` drawn in a third panel on ``[0, 1]``, e.g. steps and a probability.
        marker: the x position of the current frame on ``curve``.
        curve_label: the y label of the curve panel.

    Returns:
        The matplotlib figure.
    """
    ncols = 3 if curve is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 2.8),
                             gridspec_kw={"width_ratios": [1, 1.3, 1.6][:ncols]})
    _imshow(axes[0], _pixels(image[None])[0])
    axes[0].set_title(title, fontsize=9)
    probs = probs.detach().cpu().numpy()
    colors = ["C0"] * len(probs)
    if highlight is not None:
        colors[highlight] = "C1"
    axes[1].bar(range(len(probs)), probs, color=colors)
    axes[1].set_xticks(range(len(probs)))
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("class")
    axes[1].set_title("p(y | x)", fontsize=9)
    if curve is not None:
        axes[2].plot(*(torch.as_tensor(c).numpy() for c in curve))
        axes[2].set_ylim(0, 1.02)
        if marker is not None:
            axes[2].axvline(marker, color="C1", lw=1)
        axes[2].set_xlabel("step")
        axes[2].set_ylabel(curve_label, fontsize=8)
    fig.tight_layout()
    return fig


def _top_title(probs: torch.Tensor) -> str:
    """``"c: p"``: the predicted class and its probability, for a `(C,)` distribution."""
    p, c = probs.max(-1)
    return f"{int(c)}: {float(p):.2f}"


def path_and_interpolation(model, result, rows: Sequence[int], source: torch.Tensor,
                           target: torch.Tensor, *, frames: int = 9,
                           row_labels: Sequence[str] | None = None, size: float = 1.0):
    """Paths between one pair of images beside the straight line between them.

    One row per path in ``rows`` (``frames`` recorded points evenly spread over the path, each
    titled with its step, predicted class and that class's probability), then a last row with
    the linear interpolation ``(1 - s) source + s target`` at ``frames`` evenly spaced ``s``,
    titled the same way.

    Args:
        model: the classifier, to label the interpolation's frames; it runs in eval mode (its
            modes are restored).
        result: a :class:`~leafkit.paths.PathResult` whose paths ``rows`` join ``source`` to
            ``target``.
        rows: indices of the paths to show.
        source: `(1, 28, 28)` (MNIST) or `(3, 32, 32)` (CIFAR-10) the common source.
        target: the common target, of the same shape.
        frames: images per row.
        row_labels: one label per row of ``rows`` (the interpolation row is labelled for you).
        size: inches per image.

    Returns:
        The matplotlib figure.

    Paper: Figures 4 and 5 (paths beside linear interpolation).
    """
    K = result.points.shape[1]
    cols = torch.linspace(0, K - 1, frames).round().long()
    steps = result.record_steps[cols]
    images, titles = [], []
    for b in rows:
        images.append(result.points[b, cols])
        titles.append([f"t={int(t)}\n{_top_title(p)}"
                       for t, p in zip(steps, result.probs[b, cols])])
    line = linear_interpolation(source[None].cpu(), target[None].cpu(), frames)[0]
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        probs = model(line.to(device)).softmax(-1).cpu()
    images.append(line)
    titles.append([f"s={s:.2f}\n{_top_title(p)}"
                   for s, p in zip(torch.linspace(0, 1, frames).tolist(), probs)])
    labels = list(row_labels or [f"path {b}" for b in rows]) + ["interpolation"]
    fig, axes = plt.subplots(len(images), frames,
                             figsize=(size * frames, size * 1.35 * len(images)), squeeze=False)
    for r, (row, row_titles) in enumerate(zip(images, titles)):
        pixels = _pixels(row)
        for j in range(frames):
            ax = axes[r, j]
            _imshow(ax, pixels[j])
            ax.set_title(row_titles[j], fontsize=7)
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
    fig.tight_layout()
    return fig


def path_scrubber(result, index: int = 0, *, frames: int = 40, title: str = "",
                  dpi: int = 60, alt: str | None = None):
    """A kernel-free scrubber of one path: an HTML/JavaScript animation with a slider.

    Pre-renders at most ``frames`` of the recorded points (image, class probabilities, and the
    distance curve with the current step marked) with ``matplotlib.animation`` and
    ``to_jshtml``, so the slider works on a static web page where no kernel can recompute.

    Args:
        result: a :class:`~leafkit.paths.PathResult`.
        index: which path of the batch.
        frames: the most frames to embed (evenly spread over the recorded points).
        title: a line shown above the image.
        dpi: resolution of the embedded frames (keeps the page small).
        alt: the alt text of the player's image; ``None``: a description made from the path
            (what each frame shows, the steps, the predicted class at the first and at the last
            frame).

    Returns:
        ``IPython.display.HTML``; display it (it is the value of a cell). Its ``<img>`` carries
        the ``alt`` attribute (the slider swaps only the image's ``src``).

    Raises:
        ValueError: ``index`` out of range or ``frames < 2``.

    Paper: Figures 3-6 (the paths, frame by frame).
    """
    from IPython.display import HTML
    from matplotlib import animation

    if not 0 <= index < result.points.shape[0]:
        raise ValueError(f"index must be in [0, {result.points.shape[0]}), got {index}")
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    K = result.points.shape[1]
    cols = torch.linspace(0, K - 1, min(frames, K)).round().long().unique()
    steps = result.record_steps[cols]
    pixels = _pixels(result.points[index, cols])
    probs = result.probs[index, cols]
    dist = result.distance[index].numpy()
    label = "distance to target" if result.kind == "horizontal" else "distance from start"
    fig, (ax_i, ax_p, ax_d) = plt.subplots(1, 3, figsize=(7.5, 2.2), dpi=dpi,
                                           gridspec_kw={"width_ratios": [1, 1.3, 1.8]})
    image = _imshow(ax_i, pixels[0])
    caption = ax_i.set_title("", fontsize=8)
    bars = ax_p.bar(range(probs.shape[1]), probs[0].tolist())
    ax_p.set_ylim(0, 1)
    ax_p.set_xticks(range(probs.shape[1]))
    ax_p.tick_params(labelsize=7)
    ax_p.set_title("p(y | x)", fontsize=8)
    ax_d.plot(dist, lw=1)
    ax_d.set_title(label, fontsize=8)
    ax_d.tick_params(labelsize=7)
    marker = ax_d.axvline(0, color="C1", lw=1)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()

    def draw(k: int):
        image.set_data(pixels[k])
        for bar, p in zip(bars, probs[k].tolist()):
            bar.set_height(p)
        caption.set_text(f"step {int(steps[k])}, {_top_title(probs[k])}")
        marker.set_xdata([int(steps[k])] * 2)
        return (image, caption, marker, *bars)

    anim = animation.FuncAnimation(fig, draw, frames=len(cols), interval=200, blit=False)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    if alt is None:
        alt = _scrubber_alt(result, index, cols, title=title)
    return HTML(_with_alt(html, alt))


def _scrubber_alt(result, index: int, cols: torch.Tensor | None = None, *, title: str = "") -> str:
    """The default alt text of :func:`path_scrubber`: what a frame shows, the frames' steps and
    the predicted class (with its probability) at the first and at the last frame.

    Args:
        result: a :class:`~leafkit.paths.PathResult`.
        index: which path of the batch.
        cols: the recorded points the player shows; ``None``: all of them.
        title: the player's title, quoted in the text when given.
    """
    if cols is None:
        cols = torch.arange(result.points.shape[1])
    steps = result.record_steps[cols]
    probs = result.probs[index, cols]
    horizontal = result.kind == "horizontal"
    what = "a horizontal path" if horizontal else "a walk across leaves"
    label = "distance to the target" if horizontal else "distance from the start"
    p0, c0 = probs[0].max(-1)
    p1, c1 = probs[-1].max(-1)
    return (f"Player of {what}" + (f" ({title})" if title else "") + f", with a slider over "
            f"{len(cols)} frames from step {int(steps[0])} to step {int(steps[-1])}. Each frame "
            f"shows the image, a bar chart of the class probabilities and the {label} along the "
            f"path with the current step marked. The predicted class is {int(c0)} with "
            f"probability {float(p0):.2f} at the first frame and {int(c1)} with probability "
            f"{float(p1):.2f} at the last.")


def _with_alt(html: str, alt: str) -> str:
    """``html`` with ``alt`` set on every ``<img>`` that has no ``alt`` attribute (the frame of
    matplotlib's ``to_jshtml`` player has none)."""
    tag = re.compile(r"<img\b(?![^>]*\salt=)")
    out, n = tag.subn(f'<img alt="{_html.escape(alt, quote=True)}"', html)
    if n == 0 and "<img" in html and " alt=" not in html:
        warnings.warn("path_scrubber: found no <img> to put the alt text on", stacklevel=3)
    return out
