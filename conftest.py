"""Test set-up for the whole repository (pytest reads this file first).

* Tests and chapters run on the offline MNIST subset unless ``LEAFKIT_DATA`` says otherwise, so a
  test run gives the same results on every machine, with or without internet.
* The chapters in ``book/`` are MyST-Markdown notebooks. nbval only collects ``.ipynb`` files, so
  this file reads each chapter through jupytext and hands the notebook to nbval's collector: no
  generated ``.ipynb`` is needed. ``pytest --nbval-lax`` checks that every cell runs and that the
  claims asserted in the cells hold.
* Each chapter is executed once per test run. When all of a chapter's cells pass, its outputs (and
  the state of its widgets) are stored in the book's execution cache, ``_build/.jupyter_cache``,
  exactly as ``jupyter-book build`` would have stored them. The book build that runs last
  (``tests/test_book.py``, marker ``site``) then finds every chapter in the cache and renders the
  website without executing anything a second time.
* The test command runs on every CPU core (pytest-xdist, ``-n auto`` in ``pyproject.toml``): each
  chapter runs whole on one worker (``--dist loadscope``, as nbval asks), each worker's kernels
  get an equal share of the cores as torch threads (two kernels of two threads each on two
  cores ran 2.5 times slower than one thread each, measured), and the website checks, queued
  after everything else, wait until every chapter of the run has finished on all workers
  (:func:`wait_for_marks`).
* That bridge relies on internals of nbval and jupyter-cache (listed in :data:`BRIDGE_NEEDS`).
  ``requirements.txt`` bounds both to the tested versions, and :func:`check_bridge` refuses to
  start, naming the package, when one of those internals has moved.
"""

from __future__ import annotations

import base64
import inspect
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("LEAFKIT_DATA", "offline")
os.environ.setdefault("LEAFKIT_CHECKPOINTS", "off")  # never fetch published checkpoints here

import jupytext  # noqa: E402
import nbformat  # noqa: E402
import nbval.plugin  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from make_notebooks import is_myst_notebook  # noqa: E402
from parallel_execution import by_length, store_in_cache, threads_per_worker  # noqa: E402

BOOK = ROOT / "book"
EXECUTION_CACHE = ROOT / "_build" / ".jupyter_cache"  # where `jupyter-book build .` looks
CHAPTER_MARKS = ROOT / "_build" / ".leafkit_chapters"  # one file a chapter run: stored or failed
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
TESTED = {"nbval": ">=0.11,<0.12", "jupyter-cache": ">=1.0,<1.1"}  # as in requirements.txt


def _nbval_needs() -> list[tuple[str, bool]]:
    plugin = nbval.plugin
    get_message = getattr(getattr(plugin, "IPyNbFile", None), "get_kernel_message", None)
    runtest = getattr(getattr(plugin, "IPyNbCell", None), "runtest", None)
    return [
        ("nbval.plugin.IPyNbFile", hasattr(plugin, "IPyNbFile")),
        ("nbval.plugin.IPyNbFile.get_kernel_message(timeout=, stream=)",
         get_message is not None and _takes(get_message, "timeout", "stream")),
        ("nbval.plugin.nbformat (module attribute, replaced while collecting)",
         getattr(getattr(plugin, "nbformat", None), "read", None) is not None),
        ("nbval.plugin.IPyNbCell.runtest setting item.test_outputs",
         runtest is not None and "test_outputs" in inspect.getsource(runtest)),
    ]


def _jupyter_cache_needs() -> list[tuple[str, bool]]:
    try:
        import jupyter_cache
        from jupyter_cache import base
        from jupyter_cache.cache.main import JupyterCacheBase
    except ImportError as err:
        return [(f"import ({err})", False)]
    bundle = getattr(base, "CacheBundleIn", None)
    store = getattr(JupyterCacheBase, "cache_notebook_bundle", None)
    return [
        ("jupyter_cache.get_cache(path)", hasattr(jupyter_cache, "get_cache")),
        ("jupyter_cache.base.CacheBundleIn(nb, uri, data=)",
         bundle is not None and _takes(bundle, "nb", "uri", "data")),
        ("JupyterCacheBase.cache_notebook_bundle(bundle, check_validity=, overwrite=)",
         store is not None and _takes(store, "bundle", "check_validity", "overwrite")),
    ]


BRIDGE_NEEDS = {"nbval": _nbval_needs, "jupyter-cache": _jupyter_cache_needs}


def _takes(func, *names: str) -> bool:
    try:
        return set(names) <= set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return False


def check_bridge() -> None:
    """Fail at start, naming the package, its version and the tested range, when an internal of
    nbval or jupyter-cache that this file relies on has moved."""
    for package, needs in BRIDGE_NEEDS.items():
        missing = [name for name, present in needs() if not present]
        if missing:
            try:
                version = metadata.version(package)
            except metadata.PackageNotFoundError:
                version = "not installed"
            raise pytest.UsageError(
                f"conftest.py stores executed chapters through internals of {package}, and "
                f"{package} {version} lacks {'; '.join(missing)}. This bridge is tested with "
                f"{package}{TESTED[package]}: install that, e.g. pip install -r "
                f"requirements.txt")


def is_chapter_notebook(path: Path) -> bool:
    """A chapter is a MyST notebook under ``book/`` (front matter with a jupytext kernelspec)."""
    return path.suffix == ".md" and BOOK in path.resolve().parents and is_myst_notebook(path)


class MystNotebook(getattr(nbval.plugin, "IPyNbFile", pytest.File)):  # checked: check_bridge
    """nbval's notebook collector, fed by jupytext, that keeps what the kernel produced."""

    def collect(self):
        self.notebook = jupytext.read(self.path)
        self.widget_state: dict[str, dict] = {}
        self.widget_buffers: dict[str, dict[tuple, dict]] = {}
        self.failed = False
        self.ran_cells: list[list] = []  # outputs of each code cell, in order
        self.seconds = 0.0  # total execution time of the cells, reported by {nb-exec-table}
        reader = SimpleNamespace(read=lambda *args, **kwargs: self.notebook)
        original = nbval.plugin.nbformat
        nbval.plugin.nbformat = reader
        try:
            return list(super().collect())
        finally:
            nbval.plugin.nbformat = original

    def get_kernel_message(self, timeout=None, stream="iopub"):
        msg = super().get_kernel_message(timeout=timeout, stream=stream)
        if msg["msg_type"] in ("comm_open", "comm_msg"):
            self._record_widget_state(msg)
        return msg

    def _record_widget_state(self, msg) -> None:
        """Track widget models as nbclient does, so the static page can render them."""
        content = msg["content"]
        data = content.get("data", {})
        if "state" not in data:
            return
        self.widget_state.setdefault(content["comm_id"], {}).update(data["state"])
        for path, buffer in zip(data.get("buffer_paths") or [], msg.get("buffers") or []):
            self.widget_buffers.setdefault(content["comm_id"], {})[tuple(path)] = {
                "path": path, "encoding": "base64",
                "data": base64.b64encode(bytes(buffer)).decode("ascii")}

    def teardown(self):
        super().teardown()
        stored = not self.failed and store_in_execution_cache(self)
        CHAPTER_MARKS.mkdir(parents=True, exist_ok=True)
        (CHAPTER_MARKS / Path(self.path).stem).write_text("stored" if stored else "failed")


def store_in_execution_cache(chapter: MystNotebook) -> bool:
    """Write the executed chapter into the book's jupyter-cache, as myst-nb would; ``False`` when
    some of its cells did not run."""
    executed = nbformat.from_dict(chapter.notebook)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    items = chapter.ran_cells
    if len(items) != len(code_cells):
        return False
    for count, (cell, outputs) in enumerate(zip(code_cells, items), start=1):
        cell.execution_count = count
        cell.outputs = [out for out in outputs
                        if not (out.output_type == "execute_result" and ends_quietly(cell.source))]
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = count
    state = {model_id: {"model_name": s.get("_model_name"), "model_module": s.get("_model_module"),
                        "model_module_version": s.get("_model_module_version"), "state": s}
             for model_id, s in chapter.widget_state.items() if "_model_name" in s}
    for model_id, buffers in chapter.widget_buffers.items():
        if model_id in state:
            state[model_id]["buffers"] = list(buffers.values())
    if state:
        executed.metadata["widgets"] = {
            WIDGET_STATE_MIME: {"state": state, "version_major": 2, "version_minor": 0}}
    store_in_cache(executed, chapter.path, chapter.seconds, EXECUTION_CACHE)
    return True


def ends_quietly(source: str) -> bool:
    """IPython hides a cell's result when its last line ends with ';'. nbval runs cells with
    ``store_history=False``, which defeats that check, so the result is dropped here instead."""
    lines = [line.split("#")[0].rstrip() for line in source.strip().splitlines()]
    return bool(lines) and lines[-1].endswith(";")


def pytest_configure(config):
    worker = getattr(config, "workerinput", None)  # set in pytest-xdist's workers only
    if worker is None:  # the controller, or a run without workers: a fresh record of chapters
        for mark in CHAPTER_MARKS.glob("*"):
            mark.unlink()
    else:
        share_the_cores(int(worker["workercount"]))
    opt = config.option
    if getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False):
        check_bridge()


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and is_chapter_notebook(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    chapter = item.parent
    if isinstance(chapter, MystNotebook) and call.when == "call":
        report = outcome.get_result()
        if report.failed or report.skipped:
            chapter.failed = True
        else:
            chapter.ran_cells.append(list(item.test_outputs))
            chapter.seconds += report.duration


def share_the_cores(workers: int) -> None:
    """Give each worker's torch (and the kernels it starts, through ``OMP_NUM_THREADS``) an
    equal share of the CPU cores, unless the user set ``OMP_NUM_THREADS``."""
    threads = os.environ.setdefault("OMP_NUM_THREADS", threads_per_worker(workers))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def chapter_of(item) -> MystNotebook | None:
    return item.parent if isinstance(item.parent, MystNotebook) else None


BOOK_BUILD = "tests/test_book.py::test_book_builds_without_warnings"
BOOK_BUILT = "@book"  # the mark its teardown writes


def pytest_collection_modifyitems(config, items):
    """The long chapters first (``LONG_CHAPTERS`` of ``tools/parallel_execution.py``), then the
    other chapters, the unit tests,
    and last every test module holding website checks (marker ``site``). pytest-xdist's
    ``--dist loadscope`` runs each chapter, and each test module, whole on one worker."""
    site_modules = {item.path for item in items if item.get_closest_marker("site")}

    def rank(item) -> tuple:
        if item.path in site_modules:
            return (2,)
        chapter = chapter_of(item)
        return (1,) if chapter is None else (0, *by_length(chapter.path))

    items.sort(key=rank)


def pytest_runtest_setup(item):
    """A website check waits until every chapter of this run has finished, on whichever worker
    ran it, and, unless it is the book build itself, until the book build has finished."""
    if not item.get_closest_marker("site"):
        return
    items = item.session.items
    chapters = sorted({Path(chapter_of(i).path).stem for i in items if chapter_of(i)})
    builds = item.nodeid != BOOK_BUILD and any(i.nodeid == BOOK_BUILD for i in items)
    wait_for_marks([*chapters, *([BOOK_BUILT] if builds else [])])
    if not hasattr(item.config, "leafkit_cached_chapters"):
        item.config.leafkit_cached_chapters = {
            n for n in chapters if (CHAPTER_MARKS / n).read_text() == "stored"}


def pytest_runtest_teardown(item):
    if item.nodeid == BOOK_BUILD:
        CHAPTER_MARKS.mkdir(parents=True, exist_ok=True)
        (CHAPTER_MARKS / BOOK_BUILT).write_text("done")


def wait_for_marks(names: list[str], timeout: float = 3 * 3600) -> None:
    """Wait until each of ``names`` (chapters, or :data:`BOOK_BUILT`) has its mark in
    :data:`CHAPTER_MARKS`: it finished in this run, on whichever worker."""
    start = time.monotonic()
    while missing := [n for n in names if not (CHAPTER_MARKS / n).is_file()]:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"still running after {timeout:.0f} s: {missing}")
        time.sleep(2)
