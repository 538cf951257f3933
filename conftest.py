"""Test set-up for the whole repository (pytest reads this file first).

* The chapters in ``book/`` are MyST-Markdown notebooks. nbval only collects ``.ipynb`` files, so
  this file reads each chapter through jupytext and hands the notebook to nbval's collector: no
  generated ``.ipynb`` is needed (``pytest --nbval-lax`` checks that every cell runs and that the
  claims asserted in the cells hold).
* Tests and chapters run on the offline MNIST subset unless ``LEAFKIT_DATA`` says otherwise, so a
  test run is the same on every machine, with or without internet.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("LEAFKIT_DATA", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")
# torch's per-op thread pools: keep the 2-core CI machine from oversubscribing when kernels run
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import jupytext  # noqa: E402
import nbval.plugin  # noqa: E402

BOOK = Path(__file__).resolve().parent / "book"


def is_myst_notebook(path: Path) -> bool:
    """A chapter is a notebook when its front matter carries a jupytext kernelspec."""
    if path.suffix != ".md" or BOOK not in path.resolve().parents:
        return False
    head = path.read_text(encoding="utf-8")[:1000]
    return head.startswith("---") and "kernelspec:" in head


class MystNotebook(nbval.plugin.IPyNbFile):
    """nbval's notebook collector, fed by jupytext instead of nbformat."""

    def collect(self):
        notebook = jupytext.read(self.path)
        reader = SimpleNamespace(read=lambda *args, **kwargs: notebook)
        original = nbval.plugin.nbformat
        nbval.plugin.nbformat = reader
        try:
            return list(super().collect())
        finally:
            nbval.plugin.nbformat = original


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and is_myst_notebook(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None
