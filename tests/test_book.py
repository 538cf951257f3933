"""The book builds, with every Sphinx warning an error.

nbval (``pytest --nbval-lax``, see ``conftest.py``) has already executed every chapter and checked its
assertions in this same test run, so this build does not execute them a second time: it renders the
sources with ``execute_notebooks: off`` into a temporary folder. That proves the markup, the table of
contents, the cross-references, the citations and the API page (autodoc imports leafkit) are sound.
The README's first command is the real, executing build.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_book_builds_without_warnings(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config_path = tmp_path / "_config.yml"
    config_path.write_text(yaml.safe_dump(config))
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
    proc = subprocess.run(
        [jb, "build", str(ROOT), "--config", str(config_path), "--path-output", str(tmp_path),
         "--warningiserror", "--keep-going", "--quiet"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    html = tmp_path / "_build" / "html"
    for page in ["index.html", "book/intro.html", "book/setup.html", "book/api.html"]:
        assert (html / page).is_file(), f"missing page {page}"
    assert "grementieri2022model" in (html / "book/bibliography.html").read_text() or \
        "Grementieri" in (html / "book/bibliography.html").read_text()
