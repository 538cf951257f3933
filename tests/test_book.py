"""The book builds into ``_build/html`` with every Sphinx warning an error.

The chapters were executed earlier in this same test run by nbval (see ``conftest.py``), which
stored their outputs in the book's execution cache; this build therefore renders them without
executing any notebook a second time, and the test checks that it did not. Run on its own
(``pytest tests/test_book.py``), the build executes the chapters itself.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"


@pytest.mark.site
def test_book_builds_without_warnings(pytestconfig):
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
    proc = subprocess.run([jb, "build", str(ROOT), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True, timeout=3600, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"book build failed:\n{log[-6000:]}"
    toc = (ROOT / "_toc.yml").read_text()
    for page in ["index.html", *(f"{p}.html" for p in re.findall(r"file: (\S+)", toc))]:
        assert (HTML / page).is_file(), f"missing page {page}"
    # the chapters nbval ran in this session were rendered from its outputs, not executed again
    executed = [line for line in log.splitlines() if "Executing notebook" in line]
    again = [c for c in pytestconfig.leafkit_cached_chapters if any(f"/{c}." in e for e in executed)]
    assert not again, f"the build re-executed chapters that nbval had run: {again}\n{executed}"
    assert "Grementieri" in (HTML / "book" / "bibliography.html").read_text()
