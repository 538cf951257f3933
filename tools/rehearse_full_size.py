"""Rehearse the published build at full-data size, offline: every cell's time against the timeout.

The workflow ``.github/workflows/book.yml`` builds the book with ``LEAFKIT_DATA=full``: full
MNIST, so 10 epochs are 10000 SGD steps (667 offline), Figure 2's run is 30000 steps with 301
evaluations of Tr G on 1000 images, and the chapters take the authors' test indices. Full MNIST
cannot be downloaded here, so this script stands it in with ``LEAFKIT_DATA=standin``
(:func:`leafkit.load_mnist`: the offline digits tiled with small shifts to 60000/10000 images,
labelled as a stand-in wherever it is printed). Then it

1. runs the workflow's long steps (the ``python -c`` steps of the ``build`` job that call
   leafkit, with ``load_mnist('full')`` read as the stand-in), each timed, into a fresh
   ``LEAFKIT_CACHE`` (or ``--cache``);
2. executes every chapter of ``_toc.yml`` with nbclient as the book build does (cell timeout from
   ``_config.yml``, working directory ``book/``), and records each cell's time;
3. prints, per chapter, the total, the slowest cell against the timeout and any cell that failed
   (the stand-in's digits are not the paper's, so a claim check may fail here where it would hold
   on MNIST: the time is what is rehearsed), and writes everything to ``--out`` as JSON.

The robustness chapter's full grid (36 cells, 80 paths of up to 5000 steps each), which the
workflow computes in 36 jobs of its own before the build (``python -m leafkit.robustness cell
K``), is not run unless ``--grid full``: by default the chapter runs its reduced grid and
``--estimate-grid`` times a few steps of each dtype to estimate the cost of a cell.

Usage::

    python tools/rehearse_full_size.py [--cache DIR] [--chapters book/a.md ...] [--grid full]
        [--estimate-grid] [--skip-step Trace ...] [--out rehearsal.json]

Exits non-zero when a cell ran past the timeout or a long step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbclient
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def long_steps(workflow: Path = WORKFLOW) -> list[tuple[str, str]]:
    """``(name, python code)`` of the ``build`` job's ``python -c`` steps that call leafkit,
    full MNIST read as the stand-in; the download step is skipped (nothing to download)."""
    steps = yaml.safe_load(workflow.read_text())["jobs"]["build"]["steps"]
    found = []
    for step in steps:
        run = step.get("run", "")
        m = re.fullmatch(r'python -c "(.*)"', run.strip())
        if not m or "leafkit" not in m.group(1) or "Download" in step.get("name", ""):
            continue
        found.append((step["name"], m.group(1).replace("load_mnist('full')", "load_mnist()")))
    return found


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapters of ``_toc.yml`` in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return [root / f"{f}.md" for f in files]


def cell_seconds(cell) -> float:
    """Wall time of an executed cell from nbclient's timing metadata."""
    meta = cell.get("metadata", {}).get("execution", {})
    start, end = meta.get("iopub.execute_input"), meta.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    from datetime import datetime
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run_chapter(path: Path, timeout: int) -> dict:
    """Execute one chapter with nbclient; its total and per-cell times, and the failed cells."""
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     allow_errors=True, record_timing=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as err:  # a timeout or a dead kernel: keep what ran
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    total = time.perf_counter() - t0
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        failed = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        cells.append({"index": i, "seconds": round(cell_seconds(cell), 2), "first_line": first[:70],
                      "error": (f"{failed[0]['ename']}: {failed[0]['evalue'][:160]}"
                                if failed else None)})
    return {"chapter": path.stem, "seconds": round(total, 1), "cells": cells, "error": error}


def estimate_grid(steps: int = 20) -> dict:
    """Seconds per step of one full-grid cell's batch (20 pairs x 4 projections) in float32 and
    float64 on the stand-in's reference checkpoint, and the full grid's cost if no path stopped
    early (an upper bound: 36 cells of up to 5000 steps)."""
    import torch

    import leafkit
    from leafkit import robustness

    data = leafkit.load_mnist()
    pairs = robustness.class_pairs(data)
    out = {}
    model = robustness.checkpoint_model(data, "reference", progress=False)
    for dtype in (torch.float32, torch.float64):
        cell = robustness.GridCell("reference", 0.1, dtype, steps)
        t0 = time.perf_counter()
        robustness.run_cell(model, pairs, cell, bounds=leafkit.pixel_bounds(), progress=False)
        out[str(dtype).removeprefix("torch.")] = (time.perf_counter() - t0) / steps
    cells = robustness.full_grid()
    per_dtype = {str(c.dtype).removeprefix("torch."): 0 for c in cells}
    for c in cells:
        per_dtype[str(c.dtype).removeprefix("torch.")] += c.max_steps
    out["full_grid_hours_upper_bound"] = sum(out[k] * n for k, n in per_dtype.items()) / 3600
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="LEAFKIT_CACHE (default: a fresh folder)")
    parser.add_argument("--chapters", nargs="*", type=Path, help="default: all, in _toc.yml order")
    parser.add_argument("--grid", choices=("reduced", "full"), default="reduced")
    parser.add_argument("--estimate-grid", action="store_true")
    parser.add_argument("--skip-step", nargs="*", default=[], metavar="WORDS",
                        help="skip the long steps whose name contains any of these words "
                             "(their results must then be in --cache already, or a chapter "
                             "computes them in a cell)")
    parser.add_argument("--out", type=Path, default=Path("rehearsal-full-size.json"))
    args = parser.parse_args()

    cache = args.cache or Path(tempfile.mkdtemp(prefix="leafkit-standin-"))
    os.environ.update(LEAFKIT_DATA="standin", LEAFKIT_CACHE=str(cache.resolve()),
                      LEAFKIT_GRID=args.grid, MPLBACKEND="Agg")
    timeout = int(yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["timeout"])
    report = {"cache": str(cache), "grid": args.grid, "timeout": timeout, "long_steps": [],
              "chapters": []}
    print(f"stand-in rehearsal: cache {cache}, grid {args.grid}, cell timeout {timeout} s",
          flush=True)
    failed = False
    for name, code in long_steps():
        if any(word in name for word in args.skip_step):
            print(f"[step] {name}: skipped", flush=True)
            report["long_steps"].append({"step": name, "skipped": True})
            continue
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode
        seconds = time.perf_counter() - t0
        report["long_steps"].append({"step": name, "seconds": round(seconds, 1), "rc": rc})
        print(f"[step] {name}: {seconds:.0f} s (rc {rc})", flush=True)
        failed |= rc != 0
    if args.estimate_grid:
        report["grid_estimate"] = estimate_grid()
        print("[grid estimate]", json.dumps(report["grid_estimate"]), flush=True)
    for path in (args.chapters or chapters()):
        result = run_chapter(path.resolve(), timeout)
        report["chapters"].append(result)
        slowest = max(result["cells"], key=lambda c: c["seconds"], default=None)
        errors = [c for c in result["cells"] if c["error"]]
        print(f"[chapter] {result['chapter']}: {result['seconds']:.0f} s; slowest cell "
              f"{slowest['seconds'] if slowest else 0:.0f} s of {timeout} "
              f"({slowest['first_line'] if slowest else ''!r}); {len(errors)} failed cells"
              + (f"; {result['error']}" if result["error"] else ""), flush=True)
        for c in errors:
            print(f"    cell {c['index']}: {c['error']}", flush=True)
        failed |= bool(result["error"]) or any(c["seconds"] > timeout for c in result["cells"])
        args.out.write_text(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}; {'a cell ran past the timeout or a step failed' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
