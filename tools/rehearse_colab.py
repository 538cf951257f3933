"""Rehearse the Colab path offline: generated notebooks install leafkit from git and run.

What it rehearses. A reader opens ``book/<chapter>.ipynb`` from the ``notebooks`` branch in Colab:
a fresh runtime with Colab's own torch and ipywidgets and no leafkit, working directory /content.
The first cell (``tools/make_notebooks.py``, tag ``install-leafkit``) runs
``pip install "leafkit[data,widgets] @ git+<repo>@<commit>"``, then every cell runs. This script

1. clones the repository at its current commit into a temporary folder (``file://`` git URL);
2. generates the notebooks of the chosen chapters with ``make_notebooks.make_notebook(..., ref=
   <commit>)`` and points their install cell at the clone instead of GitHub;
3. makes a venv outside the repository with only what Colab already has (a current pip, torch,
   torchvision, numpy, matplotlib, ipykernel, nbclient, nbformat, ipywidgets 7.7.1 or
   ``--ipywidgets``; pip is upgraded because the pip that ``venv`` bundles, 23.2, rejects a
   ``git+file:///`` direct reference that Colab's newer pip accepts);
4. runs each notebook with nbclient in that venv, from a folder outside the repository, with
   ``LEAFKIT_DATA=offline`` and an empty ``LEAFKIT_CACHE`` (the reference checkpoint trains from
   scratch), each notebook on a "fresh runtime" (packages added by the previous one removed);
   when no chosen chapter has a widget, a small third notebook shows ``leafkit.path_explorer``;
5. checks that the install cell installed leafkit from the clone at that commit into the venv,
   that ``import leafkit`` resolves there, that widget outputs exist, and prints the timings.

What it cannot rehearse: the real Colab (its preinstalled packages beyond the list above, its
pip, ipykernel and front end, which renders the widgets), a GPU, GitHub and the network (the git
URL is local; only the package index is reached), nor the ``notebooks`` branch of the workflow.

Usage::

    python tools/rehearse_colab.py [--repo PATH] [--chapters book/a.md ...] [--ipywidgets 8]

Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
COLAB = ["torch==2.14.1", "torchvision==0.29.1", "numpy", "matplotlib", "ipykernel", "nbclient",
         "nbformat"]
WIDGET = "application/vnd.jupyter.widget-view+json"
RUNNER = """import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3").execute()
finally:
    nbformat.write(nb, sys.argv[2])
"""
CHECK = """import importlib.metadata as md, json, sys, leafkit
print(json.dumps({"python": sys.executable, "leafkit_file": leafkit.__file__,
                  "direct_url": json.loads(md.distribution("leafkit").read_text("direct_url.json")),
                  "versions": {p: md.version(p) for p in ("leafkit", "torch", "ipywidgets")}}))"""
EXPLORER = """import leafkit
data = leafkit.load_mnist()
model = leafkit.reference_model(data)
box = leafkit.path_explorer(model, data, source=0, max_steps=60)
assert len(box.children) == 6 and box.result.points.shape[1] > 1  # 4 rows of controls, frame, view
box"""


def sh(*cmd, **kw) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, stdout=subprocess.PIPE,
                          **kw).stdout


def notebooks(clone: Path, sha: str, chapters: list[str]) -> list[tuple[str, object, bool]]:
    """(name, notebook, has widgets) for each chapter, install cell pointed at the clone."""
    sys.path.insert(0, str(clone / "tools"))
    import make_notebooks  # the generator of the commit being rehearsed
    url = make_notebooks.book_config(clone)["repository"]["url"].rstrip("/")
    out = []
    for chapter in chapters:
        nb = make_notebooks.make_notebook(clone / chapter, clone, ref=sha)
        cell = nb.cells[0]
        assert make_notebooks.INSTALL_TAG in cell.metadata.get("tags", []), "no install cell"
        if cell.source.count(f"git+{url}@{sha}") != 1:
            raise SystemExit(f"FAIL: the install cell of {chapter} does not name git+{url}@{sha}:"
                             f"\n{cell.source}")
        cell.source = cell.source.replace(f"git+{url}@", f"git+file://{clone}@")
        assert f"git+file://{clone}@{sha}" in cell.source and url not in cell.source
        code = " ".join(c.source for c in nb.cells if c.cell_type == "code")
        out.append((Path(chapter).stem, nb, "explorer(" in code or "ipywidgets" in code))
    if not any(w for *_, w in out):  # no chapter shows a widget: a small explorer notebook
        first = out[0][1]
        cells = [first.cells[0].copy(), nbformat.v4.new_code_cell(EXPLORER)]
        out.append(("explorer", nbformat.v4.new_notebook(metadata=first.metadata, cells=cells),
                    True))
    for _, nb, _ in out:
        nb.cells.append(nbformat.v4.new_code_cell(CHECK, metadata={"tags": ["rehearsal-check"]}))
    return out


def installed(py: Path) -> set[str]:
    return {p["name"].lower() for p in json.loads(sh(py, "-m", "pip", "list", "--format=json"))}


def cell_seconds(cell) -> float:
    t = cell.metadata.get("execution", {})
    if "iopub.status.busy" not in t or "shell.execute_reply" not in t:
        return float("nan")
    start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                  for k in ("iopub.status.busy", "shell.execute_reply"))
    return (end - start).total_seconds()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="repository to clone (its HEAD)")
    ap.add_argument("--chapters", nargs="+", default=["book/setup.md", "book/intuition.md"])
    ap.add_argument("--ipywidgets", default="7.7.1", help="version preinstalled (Colab: 7.7.1)")
    ap.add_argument("--python", default="python3", help="interpreter the venv is made from")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    repo = args.repo.resolve()
    sha = sh("git", "-C", repo, "rev-parse", "HEAD").strip()
    if sh("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").strip():
        print("note: uncommitted changes in the repository are not rehearsed, only", sha)
    tmp = Path(tempfile.mkdtemp(prefix="rehearse-colab-")).resolve()
    assert not tmp.is_relative_to(repo), "the rehearsal must run outside the repository"
    failures, report = [], {}
    try:
        clone = tmp / "leafkit"
        sh("git", "clone", "--quiet", repo, clone)
        sh("git", "-C", clone, "checkout", "--quiet", sha)
        nbs = notebooks(clone, sha, args.chapters)
        print(f"rehearsing {sha[:12]} from file://{clone}: {', '.join(n for n, *_ in nbs)}")

        venv, t0 = tmp / "venv", time.perf_counter()
        sh(args.python, "-m", "venv", venv)
        py = venv / "bin" / "python"
        t1 = time.perf_counter()
        sh(py, "-m", "pip", "install", "--quiet", "--upgrade", "pip", stderr=subprocess.STDOUT)
        widgets_spec = f"ipywidgets=={args.ipywidgets}" + (".*" * (args.ipywidgets.count(".") < 2))
        sh(py, "-m", "pip", "install", "--quiet", *COLAB, widgets_spec, stderr=subprocess.STDOUT)
        t2 = time.perf_counter()
        baseline = installed(py)
        assert "leafkit" not in baseline
        pip = sh(py, "-m", "pip", "--version").split()[1]
        print(f"venv {t1 - t0:.1f} s, preinstall {t2 - t1:.1f} s "
              f"({len(baseline)} packages, pip {pip})")

        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
                    and not k.startswith(("JUPYTER", "LEAFKIT", "MPL"))}
        base_env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                        VIRTUAL_ENV=str(venv), LEAFKIT_DATA="offline")
        for name, nb, widgets in nbs:
            extra = sorted(installed(py) - baseline)  # a fresh runtime per notebook
            if extra:
                sh(py, "-m", "pip", "uninstall", "--quiet", "-y", *extra)
            content = tmp / f"content-{name}"  # Colab's /content
            content.mkdir()
            env = dict(base_env, LEAFKIT_CACHE=str(tmp / f"cache-{name}"),
                       IPYTHONDIR=str(tmp / f"ipython-{name}"),
                       JUPYTER_DATA_DIR=str(tmp / f"jupyter-{name}"))
            src, dst = content / f"{name}.ipynb", content / f"{name}.executed.ipynb"
            nbformat.write(nb, src)
            t = time.perf_counter()
            with open(content / f"{name}.log", "w") as log:  # the kernel's own output (pip's)
                rc = subprocess.run([py, "-c", RUNNER, src, dst], cwd=content, env=env,
                                    stdout=log, stderr=subprocess.STDOUT).returncode
            seconds = time.perf_counter() - t
            done = nbformat.read(dst, as_version=4) if dst.exists() else nb
            errors = [o for c in done.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if o.output_type == "error"]
            if rc or errors:
                failures.append(f"{name}: runner exit {rc}, " + "; ".join(
                    f"{o.ename}: {o.evalue}" for o in errors)
                    + "\n" + (content / f"{name}.log").read_text()[-2000:])
            r = report[name] = {"seconds": seconds, "cells": done.cells}
            r["install"] = cell_seconds(done.cells[0])
            r["warnings"] = sorted({line.strip()[:160] for c in done.cells
                                    for o in c.get("outputs", []) if o.get("name") == "stderr"
                                    for line in o.text.splitlines() if "Warning" in line})
            try:
                r["check"] = json.loads("".join(o.get("text", "") for o in done.cells[-1].outputs
                                                if o.output_type == "stream"))
            except (ValueError, AttributeError):
                failures.append(f"{name}: the check cell printed no result")
                continue
            show = dict(line.split(": ", 1) for line in
                        sh(py, "-m", "pip", "show", "leafkit").splitlines() if ": " in line)
            r["pip_show"] = show
            c = r["check"]
            for ok, what in [
                (Path(show.get("Location", "/")).resolve().is_relative_to(venv),
                 f"pip show leafkit: Location {show.get('Location')} is not in the venv"),
                (Path(c["leafkit_file"]).resolve().is_relative_to(venv),
                 f"import leafkit resolves to {c['leafkit_file']}, not the venv"),
                (Path(c["python"]).parent == venv / "bin", f"the kernel ran {c['python']}"),
                (c["direct_url"].get("url") == f"file://{clone}"
                 and c["direct_url"].get("vcs_info", {}).get("commit_id") == sha,
                 f"leafkit was not installed from the clone at {sha}: {c['direct_url']}"),
                (c["versions"]["ipywidgets"] == sh(py, "-c", "import ipywidgets as w; "
                                                           "print(w.__version__)").strip(),
                 "the kernel's ipywidgets differs from the venv's"),
                (not widgets or any(WIDGET in o.get("data", {}) for cell in done.cells
                                    for o in cell.get("outputs", [])),
                 f"no {WIDGET} output although the notebook shows a widget"),
            ]:
                if not ok:
                    failures.append(f"{name}: {what}")
            r["widget_outputs"] = sum(WIDGET in o.get("data", {}) for cell in done.cells
                                      for o in cell.get("outputs", []))
            if widgets:
                r["widget_state"] = len(done.metadata.get("widgets", {}).get(
                    "application/vnd.jupyter.widget-state+json", {}).get("state", {}))

        print(f"\n== summary ({sha[:12]}, ipywidgets spec {args.ipywidgets}) ==")
        print(f"venv creation {t1 - t0:.1f} s, preinstall (pip {pip} and Colab's packages) "
              f"{t2 - t1:.1f} s; load average now %.1f (timings are of a shared CPU)"
              % os.getloadavg()[0])
        for name, r in report.items():
            c = r.get("check", {})
            print(f"{name}: notebook {r['seconds']:.1f} s, install cell {r['install']:.1f} s, "
                  f"versions {c.get('versions')}, widget outputs {r.get('widget_outputs')}"
                  + (f", widget models saved {r['widget_state']}" if "widget_state" in r else ""))
            if "pip_show" in r:
                print(f"  pip show leafkit: {r['pip_show'].get('Version')} at "
                      f"{r['pip_show'].get('Location')}; import leafkit -> {c['leafkit_file']}")
            timed = sorted(((cell_seconds(cell), i, cell.source.splitlines()[0][:60])
                            for i, cell in enumerate(r["cells"]) if cell.cell_type == "code"
                            and cell_seconds(cell) >= 0), reverse=True)
            for s, i, line in timed[:4]:
                print(f"  cell {i:3d}: {s:7.1f} s  {line}")
            for line in r["warnings"]:
                print(f"  warning in the notebook: {line}")
    except subprocess.CalledProcessError as err:
        failures.append(f"{' '.join(map(str, err.cmd))[:200]} exited {err.returncode}:\n"
                        f"{(err.stdout or '')[-3000:]}")
    finally:
        if args.keep or failures:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("rehearsal", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
