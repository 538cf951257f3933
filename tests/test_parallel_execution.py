"""tools/parallel_execution.py: the book build's chapters executed on every core and stored where
myst-nb looks, on a tiny book of real notebooks run by real kernels."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import jupytext
import pytest
from cases import MYST_FRONT_MATTER
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import parallel_execution  # noqa: E402

CHAPTERS = {
    "threads": "import os\nprint(os.environ.get('OMP_NUM_THREADS'))",
    "second": "x = 6 * 7\nprint(x)",
    "broken": "assert 1 + 1 == 3, 'a failed claim check'",
}


@pytest.fixture
def book(tmp_path):
    for name, code in CHAPTERS.items():
        (tmp_path / f"{name}.md").write_text(
            f"{MYST_FRONT_MATTER}\n# {name}\n\n```{{code-cell}} ipython3\n{code}\n```\n")
    (tmp_path / "prose.md").write_text("# Just prose\n")
    cache = tmp_path / "_build" / ".jupyter_cache"
    # what the extension reads of Sphinx: myst-nb's resolved configuration, as on app.env
    config = SimpleNamespace(execution_mode="cache", execution_cache_path=str(cache),
                             execution_timeout=60)
    app = SimpleNamespace(env=SimpleNamespace(mystnb_config=config,
                                              doc2path=lambda doc: str(tmp_path / f"{doc}.md")),
                          srcdir=tmp_path)
    return app, cache


def cached(cache: Path, path: Path):
    """The cached outputs of the chapter at ``path``, or None."""
    try:
        return get_cache(str(cache)).merge_match_into_notebook(jupytext.read(path))[1]
    except KeyError:
        return None


def test_chapters_run_side_by_side_and_land_in_the_cache(book, monkeypatch):
    app, cache = book
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(parallel_execution.os, "cpu_count", lambda: 4)
    root = Path(app.srcdir)
    assert parallel_execution.chapters_to_execute(app, ["prose", *CHAPTERS]) == sorted(
        root / f"{name}.md" for name in CHAPTERS)  # notebooks only
    parallel_execution.execute_in_parallel(app, None, ["prose", *CHAPTERS])
    threads = cached(cache, root / "threads.md")
    assert threads is not None and threads.cells[1].outputs[0]["text"].strip() == "1"  # 4 cores / 3
    assert cached(cache, root / "second.md").cells[1].outputs[0]["text"].strip() == "42"
    assert cached(cache, root / "broken.md") is None  # left to myst-nb, which reports the error
    assert "OMP_NUM_THREADS" not in os.environ  # restored
    # what is cached now is not executed again
    assert parallel_execution.chapters_to_execute(app, list(CHAPTERS)) == [root / "broken.md"]


def test_a_failing_chapter_reports_its_error(book):
    app, cache = book
    path, seconds, error = parallel_execution.execute_chapter(
        str(Path(app.srcdir) / "broken.md"), str(cache), 60)
    assert "a failed claim check" in error and seconds > 0


def test_nothing_runs_with_one_core_one_job_or_another_execution_mode(book, monkeypatch):
    app, cache = book
    monkeypatch.setattr(parallel_execution.os, "cpu_count", lambda: 1)
    parallel_execution.execute_in_parallel(app, None, list(CHAPTERS))
    monkeypatch.setattr(parallel_execution.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("LEAFKIT_BUILD_JOBS", "1")
    parallel_execution.execute_in_parallel(app, None, list(CHAPTERS))
    monkeypatch.delenv("LEAFKIT_BUILD_JOBS")
    monkeypatch.setattr(parallel_execution.os, "cpu_count", lambda: 4)
    app.env.mystnb_config.execution_mode = "force"
    parallel_execution.execute_in_parallel(app, None, list(CHAPTERS))
    assert all(cached(cache, Path(app.srcdir) / f"{n}.md") is None for n in CHAPTERS)


def test_the_myst_nb_settings_it_reads_exist():
    """The extension reads myst-nb's resolved configuration (``app.env.mystnb_config``); the
    build's own run of it is the end-to-end check, this one names the fields if they move."""
    import dataclasses

    from myst_nb.core.config import NbParserConfig

    fields = {f.name for f in dataclasses.fields(NbParserConfig)}
    assert {"execution_mode", "execution_cache_path", "execution_timeout"} <= fields


def test_build_jobs_reads_the_environment(monkeypatch):
    monkeypatch.setattr(parallel_execution.os, "cpu_count", lambda: 6)
    assert parallel_execution.build_jobs({}) == 6
    assert parallel_execution.build_jobs({"LEAFKIT_BUILD_JOBS": " 2 "}) == 2
    for bad in ("0", "two", "-1", "1.5"):
        with pytest.raises(ValueError, match="LEAFKIT_BUILD_JOBS"):
            parallel_execution.build_jobs({"LEAFKIT_BUILD_JOBS": bad})
