"""Where leafkit keeps downloads and checkpoints: one folder, never the repository."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LEAFKIT_CACHE"


def cache_dir(sub: str | None = None) -> Path:
    """Return (and create) the cache folder, or a sub-folder of it.

    The folder is ``$LEAFKIT_CACHE`` when that variable is set, else ``~/.cache/leafkit``.
    """
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "leafkit").expanduser()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device():
    """CUDA when present, else CPU. Every leafkit routine otherwise follows its input tensors."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
