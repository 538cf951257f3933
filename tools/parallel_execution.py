"""A Sphinx extension that executes the book's uncached chapters on every CPU core at once.

myst-nb (``execute_notebooks: cache`` in ``_config.yml``) executes each chapter that is not in
the execution cache when Sphinx reads it, one after the other. Before Sphinx reads anything,
this extension executes those chapters in parallel, one process a core, each kernel with an
equal share of the cores as torch threads (``OMP_NUM_THREADS``, unless set), and stores every
chapter that ran without error in the execution cache, exactly where myst-nb looks. myst-nb then
finds them cached and renders them without executing them again. A chapter that failed is not
stored: myst-nb executes it once more, itself, and reports the error as it always does. With one
core, one chapter to execute, or ``LEAFKIT_BUILD_JOBS=1``, the extension does nothing
(``LEAFKIT_BUILD_JOBS=k`` runs at most ``k`` chapters at once).

Measured on two CPU cores: two chapter kernels with one thread each did 1.76 times the work of
one kernel with two threads (the Jacobian of 8 images: 55 ms each, side by side, against 48.5 ms
alone); two kernels with two threads each ran 2.5 times slower than one thread each.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import is_myst_notebook  # noqa: E402  (tools/ is not a package)

try:
    import fcntl
except ImportError:  # not on Windows: there two processes may store at the same moment
    fcntl = None

logger = logging.getLogger(__name__)

#: The longest chapters, queued before everything else so that the short chapters and the unit
#: tests fill the end of the run on every worker. Seconds measured in a cold book build with two
#: workers (one torch thread each): trace of G 214, noisy leaf 281 (of which 44 s train the
#: reference checkpoint), horizontal paths 249, robustness 188, beyond 141, mirrored digits 115,
#: across leaves 32; every other chapter took under 31 s. The trace chapter goes first although
#: it is not the longest: it starts with a training run of its own, while the first chapter of
#: the other worker trains the reference checkpoint that every later chapter loads. Two chapters
#: that both start by loading it train it twice at once (seen in a CI rehearsal: 54 s and 52 s).
#: Only an order: a chapter missing here just runs later.
LONG_CHAPTERS = ("trace_of_g", "noisy_leaf", "horizontal_paths", "robustness", "beyond",
                 "mirrored_digits", "across_leaves")


def by_length(path: Path) -> tuple[int, str]:
    """Sort key: the chapters of :data:`LONG_CHAPTERS` first, longest first, then the others."""
    name = Path(path).stem
    return (LONG_CHAPTERS.index(name), "") if name in LONG_CHAPTERS else (len(LONG_CHAPTERS), name)


def threads_per_worker(workers: int) -> str:
    """``OMP_NUM_THREADS`` for each of ``workers`` processes side by side: an equal share of the
    CPU cores, at least one."""
    return str(max(1, (os.cpu_count() or 1) // workers))


def store_in_cache(notebook, path: str | Path, seconds: float, cache_path: str | Path) -> None:
    """Store an executed chapter in the execution cache at ``cache_path`` as myst-nb would, with
    its execution time (the reproducibility page's table), one process at a time (a file lock
    beside the cache's sqlite database). Also used by ``conftest.py`` for the chapters nbval
    ran."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache_path = Path(cache_path)
    cache_path.mkdir(parents=True, exist_ok=True)
    with open(cache_path.parent / ".jupyter_cache.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        get_cache(str(cache_path)).cache_notebook_bundle(
            CacheBundleIn(notebook, str(Path(path).resolve()), data={"execution_seconds": seconds}),
            check_validity=False, overwrite=True)


def chapters_to_execute(app: Sphinx, docnames: list[str]) -> list[Path]:
    """The MyST notebooks among ``docnames`` that the execution cache does not hold."""
    import jupytext
    from jupyter_cache import get_cache

    cache = get_cache(app.env.mystnb_config.execution_cache_path)
    todo = []
    for doc in sorted(docnames):
        path = Path(app.env.doc2path(doc))
        if path.suffix != ".md" or not is_myst_notebook(path):
            continue
        try:
            cache.match_cache_notebook(jupytext.read(path))
        except KeyError:
            todo.append(path)
    return sorted(todo, key=by_length)


def execute_chapter(path: str, cache_path: str, timeout: int) -> tuple[str, float, str | None]:
    """Execute one chapter in its folder and store it in the execution cache when no cell
    failed; ``(path, seconds, error or None)``."""
    import jupytext
    from nbclient import NotebookClient

    start = time.perf_counter()
    notebook = jupytext.read(path)
    run = copy.deepcopy(notebook)
    try:
        NotebookClient(run, timeout=timeout, allow_errors=False,
                       resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    except Exception as err:  # noqa: BLE001 - myst-nb runs the chapter again and reports it
        return path, time.perf_counter() - start, f"{type(err).__name__}: {str(err)[-300:]}"
    seconds = time.perf_counter() - start
    # the outputs (and widget state) on the notebook as read: nbclient also writes timings into
    # the cells' metadata, which would change the hash myst-nb looks the chapter up by
    for cell, ran in zip(notebook.cells, run.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    if "widgets" in run.metadata:
        notebook.metadata["widgets"] = run.metadata["widgets"]
    store_in_cache(notebook, path, seconds, cache_path)
    return path, seconds, None


def build_jobs(env=None) -> int:
    """How many chapters run at once: ``LEAFKIT_BUILD_JOBS`` (1 turns the extension off, as the
    publishing workflow does), else the number of CPU cores."""
    env = os.environ if env is None else env
    value = env.get("LEAFKIT_BUILD_JOBS", "").strip()
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LEAFKIT_BUILD_JOBS must be a whole number of at least 1, got {value!r}")
    return int(value)


def execute_in_parallel(app: Sphinx, env, docnames: list[str]) -> None:
    """``env-before-read-docs``: execute the uncached chapters, one process a core. Reads
    myst-nb's configuration as myst-nb resolved it when the builder started (the execution
    cache's path, the mode, the timeout)."""
    config = app.env.mystnb_config
    if config.execution_mode != "cache":
        return
    todo = chapters_to_execute(app, docnames)
    workers = min(build_jobs(), len(todo))
    if workers < 2:
        return
    threads = os.environ.get("OMP_NUM_THREADS") or threads_per_worker(workers)  # the user's first
    logger.info(f"leafkit: executing {len(todo)} chapters, {workers} at a time "
                f"({threads} torch thread(s) each)")
    cache_path = str(config.execution_cache_path)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(execute_chapter, str(p), cache_path,
                                   int(config.execution_timeout)) for p in todo]
            for done, future in enumerate(as_completed(futures), start=1):
                path, seconds, error = future.result()
                name = Path(path).relative_to(app.srcdir)
                if error is None:
                    logger.info(f"leafkit: [{done}/{len(todo)}] executed {name} in {seconds:.0f} s")
                else:
                    logger.info(f"leafkit: [{done}/{len(todo)}] {name} failed after "
                                f"{seconds:.0f} s ({error}); the build executes it again")
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def setup(app: Sphinx) -> dict:
    app.connect("env-before-read-docs", execute_in_parallel)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
