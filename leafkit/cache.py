"""Where leafkit keeps downloads, checkpoints and computed results (one folder, never the
repository), which device it computes on, what else a training run's bits depend on (its
environment), and the fingerprint of its own code that keys cached results."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path

__all__ = ["CACHE_ENV", "DEVICE_ENV", "RECORDS_FORMAT", "cache_dir", "cached_records",
           "code_fingerprint", "default_device", "records_key", "training_environment"]

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
    return _source_fingerprint(Path(__file__).resolve().parent)


def _source_fingerprint(folder: Path) -> str:
    """sha256 of every ``*.py`` file below ``folder``: relative path and bytes, in path order."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


#: The version of the files :func:`cached_records` writes; changing it computes everything again.
RECORDS_FORMAT = 1


def records_key(config: Mapping, tensors: Iterable) -> str:
    """The key a computation's records are stored under: ``config`` (JSON-serializable), the bytes
    of ``tensors``, leafkit's code (:func:`code_fingerprint`) and torch's version."""
    import torch

    h = hashlib.sha256(json.dumps({"format": RECORDS_FORMAT, **config, "code": code_fingerprint(),
                                   "torch": torch.__version__}, sort_keys=True).encode())
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def cached_records(folder: str, config: Mapping, tensors: Iterable,
                   compute: Callable[[], list[dict]]) -> list[dict]:
    """``compute()``'s records, stored in ``cache_dir(folder)`` under :func:`records_key` and read
    back instead of computed when that file exists (an unreadable one is computed again). Each
    file also holds ``config`` and the seconds ``compute`` took."""
    path = cache_dir(folder) / f"{records_key(config, tensors)}.json"
    try:
        stored = json.loads(path.read_text())
        if stored["format"] == RECORDS_FORMAT and isinstance(stored["records"], list):
            return stored["records"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not there, or not a file of this format: compute it
    start = time.perf_counter()
    records = compute()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": RECORDS_FORMAT, "config": config,
                               "seconds": round(time.perf_counter() - start, 1),
                               "records": records}))
    tmp.replace(path)
    return records


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


def _cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`): two CPUs
    with different instruction sets round a run differently."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_environment(device: torch.device) -> dict:
    """What a run's exact bits depend on beyond its configuration."""
    import torch

    env = {"torch": str(torch.__version__), "device": str(device),
           "threads": torch.get_num_threads(), "cpu": _cpu_name()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env
