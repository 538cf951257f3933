"""Where leafkit keeps downloads, checkpoints and computed results (one folder, never the
repository), which device it computes on, and the fingerprint of its own code that keys cached
results."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

__all__ = ["CACHE_ENV", "DEVICE_ENV", "cache_dir", "code_fingerprint", "default_device"]

CACHE_ENV = "LEAFKIT_CACHE"
DEVICE_ENV = "LEAFKIT_DEVICE"


def cache_dir(sub: str | None = None) -> Path:
    """Return (and create) the cache folder, or a sub-folder of it.

    The folder is ``$LEAFKIT_CACHE`` when that variable is set, else ``~/.cache/leafkit``.

    Raises:
        OSError: naming the folder and ``LEAFKIT_CACHE`` when the folder cannot be created or
            written (the path is a file, lies below a file, or is read-only).
    """
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "leafkit").expanduser()
    path = root / sub if sub else root
    where = (f"{CACHE_ENV}={os.environ[CACHE_ENV]!r}" if os.environ.get(CACHE_ENV)
             else f"the default {root} ({CACHE_ENV} is not set)")
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OSError(f"leafkit cannot use the cache folder {path}: {blocker} is a file, not a "
                      f"folder (from {where}); set {CACHE_ENV} to a writable folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"leafkit cannot create the cache folder {path}: {err.strerror or err} "
                      f"(from {where}); set {CACHE_ENV} to a writable folder") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"leafkit cannot write to the cache folder {path} (from {where}); "
                      f"set {CACHE_ENV} to a writable folder")
    return path


@cache
def code_fingerprint() -> str:
    """sha256 of leafkit's own source: every ``*.py`` file of the package, by path and content.

    Results cached under a key that includes it are computed again after any change to the code
    (read once per process)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def default_device():
    """The device leafkit trains and loads data on when none is given.

    The rule, used by :func:`leafkit.train`, :func:`leafkit.load_mnist` and
    :meth:`leafkit.TrainResult.model` when their ``device`` argument is ``None``
    (:func:`leafkit.reference_model` follows the device of its data):

    1. ``$LEAFKIT_DEVICE`` when it is set (any torch device string: ``cpu``, ``cuda``,
       ``cuda:1``, ``mps``...), checked: an unknown string, or a CUDA/MPS device that is not
       available here, raises :class:`ValueError`;
    2. else the first CUDA GPU when one is available;
    3. else the CPU.

    Every other leafkit routine follows the device of its input tensors and model.
    Checkpoints are always stored on the CPU, so they load on any machine.
    """
    import torch

    requested = os.environ.get(DEVICE_ENV, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(f"{DEVICE_ENV}={requested!r} is not a device; use 'cpu', 'cuda', "
                         f"'cuda:1' or 'mps', or unset {DEVICE_ENV}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={requested!r} asks for CUDA, but CUDA is not available "
                             f"here (torch {torch.__version__}); set {DEVICE_ENV}=cpu or unset it")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{DEVICE_ENV}={requested!r} asks for GPU {device.index}, but this "
                             f"machine has {torch.cuda.device_count()}; unset {DEVICE_ENV} or "
                             f"choose another")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{DEVICE_ENV}={requested!r} asks for MPS, which is not available here; "
                         f"set {DEVICE_ENV}=cpu or unset it")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{DEVICE_ENV}={requested!r}: leafkit supports the devices cpu, cuda and "
                         f"mps; set {DEVICE_ENV}=cpu or unset it")
    return device
