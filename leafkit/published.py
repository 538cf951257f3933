"""Published checkpoints: fetch a trained run instead of training it, when one matches exactly.

The workflow that builds the book trains the long runs (the reference checkpoint, Figure 2's run,
the robustness checkpoints) on full MNIST and publishes the files it cached, with an
``index.json`` that gives, for each, the configuration key (:meth:`TrainConfig.key`, which covers
the data's fingerprint), the configuration itself, the file's size and its sha256.
:func:`leafkit.train` asks :func:`fetch_checkpoint` before it trains a run that is not in the
local cache; it gets the file only when the index holds that very key and the bytes match their
sha256, and the loaded file must pass :func:`leafkit.training.load_checkpoint`'s checks as any
cached run does. No network, no index, no entry for the key, or a failed check: one line says so
and the run trains here, as it would have without this module.

Where from: ``$LEAFKIT_CHECKPOINTS``, a base URL (``https://...`` or ``file://...``) holding
``index.json`` and the files, else :data:`DEFAULT_URL`. ``LEAFKIT_CHECKPOINTS=off`` never
fetches (the repository's test command sets it: nothing downloads there).

To publish: ``python -m leafkit.published index <cache>/checkpoints <folder>`` copies every
checkpoint of a cache into ``<folder>`` with its ``index.json`` (:func:`write_index`). To fetch
everything published into the cache ahead of time (Binder's ``postBuild``):
``python -m leafkit.published fetch`` (:func:`fetch_all`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

from .cache import cache_dir

__all__ = ["CHECKPOINTS_ENV", "DEFAULT_URL", "INDEX_FORMAT", "checkpoints_url", "fetch_all",
           "fetch_checkpoint", "file_sha256", "write_index"]

CHECKPOINTS_ENV = "LEAFKIT_CHECKPOINTS"
#: The release asset folder the book's workflow publishes to.
DEFAULT_URL = "https://github.com/leafkit/leafkit/releases/download/checkpoints"
INDEX_FORMAT = 1
TIMEOUT = 10.0  # seconds without an answer before a request gives up

# the index read in this process, per base URL (None: it could not be had)
_indices: dict[str, dict | None] = {}


def checkpoints_url() -> str | None:
    """The base URL to fetch from, or ``None`` when fetching is off (``LEAFKIT_CHECKPOINTS=off``,
    ``0``, ``no`` or ``false``)."""
    value = os.environ.get(CHECKPOINTS_ENV, "").strip()
    if value.lower() in ("off", "0", "no", "false"):
        return None
    return (value or DEFAULT_URL).rstrip("/")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.read()


def _index(base: str) -> dict | None:
    """The published index at ``base`` (read once per process), or ``None`` with one line
    saying why it could not be had."""
    if base not in _indices:
        try:
            index = json.loads(_get(f"{base}/index.json"))
            if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
                raise ValueError(f"not a leafkit checkpoint index of format {INDEX_FORMAT}")
            _indices[base] = index
        except (OSError, ValueError, urllib.error.URLError) as err:
            print(f"leafkit: no published checkpoints from {base} ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:120]}); training here", flush=True)
            _indices[base] = None
    return _indices[base]


def fetch_checkpoint(key: str, path: Path) -> bool:
    """Download the published checkpoint of configuration ``key`` to ``path``; whether it did.

    ``False`` (and nothing at ``path``) when fetching is off, the index cannot be had or has no
    entry for ``key``, or the download fails or does not match its size and sha256; each case
    but the first prints one line. The caller still checks the file as a cached run.
    """
    base = checkpoints_url()
    if base is None:
        return False
    index = _index(base)
    if index is None:
        return False
    entry = index.get("checkpoints", {}).get(key)
    if entry is None:
        print(f"leafkit: no published checkpoint for this configuration (key {key[:12]}...) at "
              f"{base}; training here", flush=True)
        return False
    return _download(base, entry, path)


def fetch_all(folder: Path | None = None) -> list[Path]:
    """Download every published checkpoint that ``folder`` (default: the cache's
    ``checkpoints``) does not hold yet, each checked against its sha256; the paths fetched.
    For a ready-to-run environment (Binder's ``postBuild``); nothing happens when fetching is
    off or the index cannot be had."""
    base = checkpoints_url()
    index = _index(base) if base is not None else None
    if index is None:
        return []
    folder = Path(folder) if folder is not None else cache_dir("checkpoints")
    fetched = []
    for entry in index.get("checkpoints", {}).values():
        name = str(entry.get("file", ""))
        if Path(name).name != name or not name.endswith(".pt"):
            print(f"leafkit: skipped the index entry {name!r}: not a checkpoint file name",
                  flush=True)
            continue
        if not (folder / name).exists() and _download(base, entry, folder / name):
            fetched.append(folder / name)
    return fetched


def _download(base: str, entry: dict, path: Path) -> bool:
    """Fetch ``entry["file"]`` from ``base`` to ``path`` if its size and sha256 match the
    entry; else one line, nothing at ``path``, and ``False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".download")
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.write_bytes(_get(f"{base}/{entry['file']}"))
        found, size = file_sha256(tmp), tmp.stat().st_size
        if size != entry.get("bytes") or found != entry.get("sha256"):
            print(f"leafkit: the published checkpoint {entry['file']} has sha256 {found[:12]}... "
                  f"and {size} bytes, not the index's {str(entry.get('sha256'))[:12]}... and "
                  f"{entry.get('bytes')}; training here", flush=True)
            return False
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, urllib.error.URLError, KeyError) as err:
        print(f"leafkit: could not fetch the published checkpoint {entry.get('file')!r} "
              f"({type(err).__name__}: {' '.join(str(err).split())[:120]}); training here",
              flush=True)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    print(f"leafkit: fetched the published checkpoint {entry['file']} (sha256 verified) from "
          f"{base}", flush=True)
    return True


def write_index(checkpoints: Path, out: Path) -> dict:
    """Copy every leafkit checkpoint (``*.pt``) of the folder ``checkpoints`` into ``out`` and
    write ``out/index.json``: for each file its configuration key and configuration (as stored
    in the file), size and sha256. Files that are not leafkit checkpoints are skipped.

    Returns:
        The index.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for path in sorted(Path(checkpoints).glob("*.pt")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - skip anything unreadable, say so
            print(f"skipped {path.name}: unreadable ({type(err).__name__})", file=sys.stderr)
            continue
        if not (isinstance(payload, dict)
                and {"format", "key", "config", "checksum"} <= set(payload)):
            print(f"skipped {path.name}: not a leafkit checkpoint", file=sys.stderr)
            continue
        shutil.copyfile(path, out / path.name)
        entries[payload["key"]] = {"file": path.name, "bytes": path.stat().st_size,
                                   "sha256": file_sha256(path), "config": payload["config"]}
    index = {"format": INDEX_FORMAT, "checkpoints": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


def _main(argv: list[str]) -> int:
    """``index <cache>/checkpoints <folder>`` (publish) or ``fetch`` (everything, into the
    cache)."""
    if argv[:1] == ["index"] and len(argv) == 3:
        written = write_index(Path(argv[1]), Path(argv[2]))
        print(f"{len(written['checkpoints'])} checkpoints and index.json in {argv[2]}")
        return 0
    if argv == ["fetch"]:
        print(f"leafkit: {len(fetch_all())} published checkpoints fetched")
        return 0
    print("usage: python -m leafkit.published index <cache>/checkpoints <folder>\n"
          "       python -m leafkit.published fetch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
