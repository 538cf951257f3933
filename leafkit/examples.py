"""The source and target images of a path figure (Figures 4, 5 and 6).

:func:`example_pairs` takes a figure's pairs as arguments: the authors' MNIST test indices, used
on full MNIST, and ``(source class, target class)`` substitutes for the offline subset (whose 1000
test images the authors' indices cannot be mapped to), where each image is the first test image of
its class (:func:`first_of_class`). Figure 5's targets are horizontally mirrored digits
(:func:`mirror`). Figure 7's CIFAR-10 pairs are images the network is not over-confident on
(:func:`unsure_pairs`). The tables themselves live in the chapters that show each figure.

Paper: Section 4.3, Figures 4-7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checks import _scores, check_batch, check_model, eval_mode
from .data import MNISTData

__all__ = ["ExamplePairs", "example_pairs", "first_of_class", "mirror", "unsure_pairs"]


@dataclass(frozen=True)
class ExamplePairs:
    """The source/target pairs of one figure.

    Attributes:
        sources: `(P, *image_shape)` source images (normalized), `(P, 1, 28, 28)` for MNIST.
        targets: `(P, *image_shape)` target images (mirrored for Figure 5).
        source_index: the test-set index of each source.
        target_index: the test-set index of each target (of the image before mirroring).
        source_label: the true class of each source.
        target_label: the true class of each target's image (before mirroring).
        mirrored: whether the targets are mirrored.
        rule: one sentence saying how the pairs were chosen.
    """

    sources: torch.Tensor
    targets: torch.Tensor
    source_index: tuple[int, ...]
    target_index: tuple[int, ...]
    source_label: tuple[int, ...]
    target_label: tuple[int, ...]
    mirrored: bool
    rule: str

    def labels(self) -> list[str]:
        """One short label a pair, e.g. ``"0 (#0) -> 1 (#100)"``; ``"mirror of 3"`` if mirrored."""
        what = "mirror of " if self.mirrored else ""
        return [f"{a} (#{i}) -> {what}{b} (#{j})" for a, i, b, j in
                zip(self.source_label, self.source_index, self.target_label, self.target_index)]


def first_of_class(labels: torch.Tensor, digit: int) -> int:
    """The smallest index ``i`` with ``labels[i] == digit``.

    Raises:
        ValueError: no image of that class.
    """
    hits = (labels == digit).nonzero().flatten()
    if hits.numel() == 0:
        raise ValueError(f"no image of class {digit}")
    return int(hits[0])


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Images `(..., H, W)` flipped left to right (a horizontal mirror)."""
    return x.flip(-1)


def _check_pairs(name: str, pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    pairs = tuple(tuple(int(i) for i in pair) for pair in pairs)
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{name} must be a non-empty sequence of (source, target) pairs, "
                         f"got {pairs}")
    return pairs


def example_pairs(data: MNISTData, *, paper: Sequence[tuple[int, int]],
                  offline: Sequence[tuple[int, int]], mirrored: bool = False) -> ExamplePairs:
    """The source/target pairs of one figure on ``data``.

    Full MNIST (and the rehearsal stand-in of its shape, where they index other digits): the
    authors' test indices ``paper``. Offline subset: for each
    ``(source class, target class)`` of ``offline``, the first test image of each class.

    Args:
        data: an :class:`~leafkit.data.MNISTData`.
        paper: the authors' ``(source, target)`` test indices, e.g. ``((4185, 5874),)``.
        offline: ``(source class, target class)`` pairs, e.g. ``((0, 1), (4, 9))``.
        mirrored: whether the targets are mirrored left to right (Figure 5).

    Raises:
        ValueError: empty or malformed pairs, an index out of range, or a class without images.

    Paper: Figures 4, 5 and 6.
    """
    paper, offline = _check_pairs("paper", paper), _check_pairs("offline", offline)
    if data.full_size:  # full MNIST, or the rehearsal stand-in of its shape
        pairs = paper
        n = len(data.test_y)
        bad = [i for pair in pairs for i in pair if not 0 <= i < n]
        if bad:
            raise ValueError(f"paper indices {bad} are out of range [0, {n})")
        rule = "the authors' test indices"
    else:
        pairs = tuple((first_of_class(data.test_y, a), first_of_class(data.test_y, b))
                      for a, b in offline)
        rule = ("offline substitute: the first test image of each class "
                f"{' and '.join(f'{a}->{b}' for a, b in offline)}")
    src = [i for i, _ in pairs]
    tgt = [j for _, j in pairs]
    targets = data.test_x[tgt]
    if mirrored:
        targets = mirror(targets)
        rule += ", targets mirrored left to right"
    return ExamplePairs(sources=data.test_x[src].clone(), targets=targets.clone(),
                        source_index=tuple(src), target_index=tuple(tgt),
                        source_label=tuple(data.test_y[src].tolist()),
                        target_label=tuple(data.test_y[tgt].tolist()), mirrored=bool(mirrored),
                        rule=rule)


def unsure_pairs(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, max_p: float = 0.99,
                 count: int | None = None) -> ExamplePairs:
    """Pairs of the images on which ``model`` is not over-confident (Figure 7's CIFAR-10 walks).

    The images ``x[k]`` with ``max_y p(y | x_k) <= max_p`` are taken in order; each is paired
    with the next one left whose label differs, until ``count`` pairs are formed (all that can be,
    with ``None``). The threshold 0.99 is the authors' (their CIFAR-10 code walks only between
    such images); pairing in order is our rule.

    Args:
        model: classifier returning scores `(B, C)`; run in eval mode, without gradients.
        x: `(N, *image_shape)` images; the indices of the pairs are positions in ``x``.
        labels: `(N,)` their true classes.
        max_p: the largest probability of the predicted class an image may have.
        count: the most pairs to form.

    Raises:
        ValueError: labels that do not match ``x``, or fewer than one pair to form.
    """
    check_batch(x)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {tuple(labels.shape)}")
    check_model(model, x)
    with eval_mode(model), torch.no_grad():
        p_max = _scores(model, x).softmax(-1).amax(-1).cpu()
    y = labels.cpu().tolist()
    free = [k for k in range(len(x)) if p_max[k] <= max_p]
    pairs: list[tuple[int, int]] = []
    while len(free) > 1 and (count is None or len(pairs) < count):
        a = free.pop(0)
        b = next((k for k in free if y[k] != y[a]), None)
        if b is not None:
            free.remove(b)
            pairs.append((a, b))
    if not pairs:
        raise ValueError(f"no pair of images of different classes with max p <= {max_p}")
    src, tgt = [a for a, _ in pairs], [b for _, b in pairs]
    return ExamplePairs(sources=x[src].clone(), targets=x[tgt].clone(), source_index=tuple(src),
                        target_index=tuple(tgt), source_label=tuple(y[k] for k in src),
                        target_label=tuple(y[k] for k in tgt), mirrored=False,
                        rule=f"the images with max p <= {max_p:g} in order, each paired with the "
                             f"next one of another class")
