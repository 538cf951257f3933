"""Notebooks for Colab and Binder, generated from the MyST chapters, and the links that open them.

Colab opens only ``.ipynb`` files from GitHub, while the chapters are MyST-Markdown notebooks in
``book/``. The publishing workflow (``.github/workflows/book.yml``) therefore, after building the
website:

1. writes ``book/<chapter>.ipynb`` for every notebook chapter of ``_toc.yml`` (no outputs), with a
   first cell that installs leafkit from the repository when it is missing (on Colab; on Binder
   it is already installed by ``binder/requirements.txt``, so the cell does nothing), and with
   its markdown converted from MyST to the plain Markdown that Colab and JupyterLab render
   (``tools/myst_to_markdown.py``: citations, cross-references, directives, the book's TeX
   macros, solutions folded away; the website's hidden check cells are hidden there too);
2. commits them on top of the published commit to the branch ``notebooks`` (force-pushed; the
   generated files are never committed to ``main``);
3. points each page's Colab and Binder buttons at ``<branch>/book/<chapter>.ipynb``;
4. makes each page's ".ipynb" download button serve that notebook.

Usage::

    python tools/make_notebooks.py                    # step 1, into book/
    python tools/make_notebooks.py --site _build/html # step 1, and steps 3-4 on the built site

The tests (``tests/test_notebooks.py``) generate every notebook and check it, offline.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import myst_to_markdown  # noqa: E402  (tools/ is not a package)
from myst_to_markdown import leftover_myst  # noqa: E402, F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "notebooks"  # the branch the workflow pushes the generated notebooks to
INSTALL_TAG = "install-leafkit"

INSTALL_CELL = '''\
# Colab: install leafkit (this book's package) when it is missing; elsewhere this does nothing.
import importlib, importlib.util, subprocess, sys
if importlib.util.find_spec("leafkit") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "leafkit[data,widgets] @ git+{repo}@{branch}"], check=True)
    importlib.invalidate_caches()'''


def book_config(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def notebook_chapters(root: Path = ROOT) -> list[Path]:
    """The chapters of ``_toc.yml`` that are MyST notebooks (jupytext front matter), in order."""
    toc = (root / "_toc.yml").read_text(encoding="utf-8")
    files = re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)", toc, re.M)
    chapters = [root / f"{f.removesuffix('.md')}.md" for f in files]
    return [c for c in chapters if c.is_file() and is_myst_notebook(c)]


def is_myst_notebook(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:1000]
    return head.startswith("---") and "kernelspec:" in head


def install_source(root: Path = ROOT, ref: str | None = None) -> str:
    """The first cell of every generated notebook: pip-installs leafkit from the repository at
    ``ref`` (the workflow passes the commit it publishes, so notebook and package match)."""
    repo = book_config(root)["repository"]
    return INSTALL_CELL.format(repo=repo["url"].rstrip("/"),
                               branch=ref or repo.get("branch", "main"))


@functools.lru_cache(maxsize=4)
def book_index(root: Path = ROOT) -> myst_to_markdown.BookIndex:
    """Titles, labels, macros and BibTeX entries of the book at ``root`` (read once)."""
    return myst_to_markdown.BookIndex.load(root)


def make_notebook(chapter: Path, root: Path = ROOT,
                  ref: str | None = None) -> nbformat.NotebookNode:
    """The chapter as an ``.ipynb`` without outputs, the install cell (leafkit at ``ref``) first,
    its markdown in plain Jupyter Markdown and a "References" cell last when it cites."""
    nb = jupytext.read(chapter)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    doc = chapter.resolve().relative_to(root.resolve()).with_suffix("").as_posix()
    nb.cells = myst_to_markdown.convert_cells(nb.cells, book_index(root), doc)
    install = nbformat.v4.new_code_cell(install_source(root, ref), metadata={"tags": [INSTALL_TAG]})
    nb.cells.insert(0, install)
    nb.metadata.pop("jupytext", None)  # a plain notebook, not paired with the .md
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nbformat.validate(nb)
    return nb


def write_notebooks(root: Path = ROOT, ref: str | None = None) -> list[Path]:
    """Step 1: write ``book/<chapter>.ipynb`` next to each notebook chapter."""
    written = []
    for chapter in notebook_chapters(root):
        target = chapter.with_suffix(".ipynb")
        nbformat.write(make_notebook(chapter, root, ref), target)
        written.append(target)
    return written


def launch_links(html: str, org_repo: str, branch: str = BRANCH) -> str:
    """Step 3 on one page: Colab and Binder buttons open ``<branch>/book/<chapter>.ipynb``.

    sphinx-book-theme writes ``colab.research.google.com/github/<org>/<repo>/blob/<b>/<path>.md``
    and ``mybinder.org/v2/gh/<org>/<repo>/<b>?urlpath=tree/<path>.md`` for a MyST chapter.
    """
    org_repo = re.escape(org_repo)
    html = re.sub(rf"(colab\.research\.google\.com/github/{org_repo}/blob/)[^/]+/([^\"'?#]+)\.md\b",
                  rf"\g<1>{branch}/\g<2>.ipynb", html)
    return re.sub(rf"(/v2/gh/{org_repo}/)[^?\"']+\?urlpath=(tree|lab/tree)/([^\"'&#]+)\.md\b",
                  rf"\g<1>{branch}?urlpath=\g<2>/\g<3>.ipynb", html)


def relink_site(site: Path, root: Path = ROOT, branch: str = BRANCH) -> int:
    """Step 3: rewrite the launch buttons of every built page; returns the pages changed."""
    org_repo = book_config(root)["repository"]["url"].rstrip("/").split("github.com/")[-1]
    changed = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = launch_links(text, org_repo, branch)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def publish_downloads(site: Path, notebooks: list[Path], root: Path = ROOT) -> int:
    """Step 4: the ".ipynb" download button of each page serves the generated notebook.

    sphinx-book-theme links it to ``_sources/<chapter>.ipynb``, which myst-nb writes as the raw
    MyST chapter in notebook form; it is replaced by the plain-Markdown notebook of step 1.
    Returns how many were replaced; a missing target (a theme that links elsewhere) is an error.
    """
    for notebook in notebooks:
        target = site / "_sources" / notebook.resolve().relative_to(root.resolve())
        if not target.is_file():
            raise FileNotFoundError(f"the site has no download target {target} for {notebook}")
        target.write_bytes(notebook.read_bytes())
    return len(notebooks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="built website whose launch buttons to rewrite")
    parser.add_argument("--branch", default=BRANCH, help="branch holding the generated notebooks")
    parser.add_argument("--ref", default=os.environ.get("GITHUB_SHA"),
                        help="commit or branch the install cell installs leafkit from "
                             "(default: $GITHUB_SHA, else the branch in _config.yml)")
    args = parser.parse_args()
    written = write_notebooks(ref=args.ref)
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    if args.site:
        print(f"launch buttons now open the '{args.branch}' notebooks on "
              f"{relink_site(args.site, branch=args.branch)} pages; "
              f"{publish_downloads(args.site, written)} pages download them")


if __name__ == "__main__":
    main()
