"""Seeds and a record of the software a run used."""

from __future__ import annotations

import platform
import random
from importlib import metadata

import numpy as np
import torch

from .cache import default_device

__all__ = ["environment_summary", "seed_everything"]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); every chapter calls this first."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment_summary() -> dict[str, str]:
    """Versions and device of this run, for the pages that report what they ran on
    (``leafkit device``: where :func:`leafkit.default_device` puts training and data)."""
    try:
        version = metadata.version("leafkit")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "leafkit": version, "device": device,
            "leafkit device": str(default_device()), "threads": str(torch.get_num_threads())}
