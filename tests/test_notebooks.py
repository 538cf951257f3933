"""Colab and Binder: the generated notebooks and the environment files, checked offline.

The publishing workflow turns every notebook chapter into ``book/<chapter>.ipynb`` on the branch
``notebooks`` (``tools/make_notebooks.py``) and points the pages' Colab and Binder buttons at it.
These tests generate each notebook in memory and check that it is a valid notebook without outputs,
holds exactly the chapter's code cells, and starts with a cell that installs leafkit when it is
missing (run here with leafkit present and with leafkit "missing", pip stubbed out); that its
markdown is plain Jupyter Markdown (no MyST left, citations and a "References" cell, the book's TeX
macros expanded, solutions folded away, hidden check cells hidden); that the launch links are
rewritten as the theme writes them; and that Binder's files install what the chapters need.
They import no torch and run no kernel.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest
from cases import MYST_FRONT_MATTER

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_notebooks  # noqa: E402
import myst_to_markdown as myst  # noqa: E402

CHAPTERS = make_notebooks.notebook_chapters()
ADDED_COMMENTS = (myst.CHECK_COMMENT, myst.SOLUTION_COMMENT)
# the TeX commands the chapters use that MathJax knows; the book's own macros must not be here
STANDARD_TEX = set("""
    alpha beta gamma delta epsilon varepsilon lambda mu pi sigma tau theta phi ell infty partial
    nabla sum prod int oint frac tfrac dfrac sqrt log exp cos sin max min arg ker det left right
    big Big bigg lVert rVert Vert langle rangle mid cdot cdots dots ldots times top perp in notin
    subseteq subset cup cap approx sim ne neq le ge ll gg pm to mapsto implies iff leftarrow
    rightarrow Rightarrow quad qquad text mathrm mathbf mathbb mathcal operatorname tag begin
    end hat tilde bar overline dot ast
""".split())
MYST_MARKERS = re.compile(r"^ {0,3}(?:`{3,}|:{3,})\{(solution-start|solution-end)\}", re.M)


def markdown_text(nb) -> str:
    """All markdown of ``nb``, fenced code blocks and inline code spans removed."""
    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    text = re.sub(r"(?ms)^ {0,3}```.*?^ {0,3}```\s*$", "", text)
    return re.sub(r"`[^`\n]*`", "", text)


def strip_added_comment(source: str) -> str:
    for comment in ADDED_COMMENTS:
        source = source.removeprefix(comment + "\n")
    return source


def solution_regions(chapter: Path) -> tuple[list[bool], list[tuple[str, bool]]]:
    """Independently of the converter: for each code cell of the chapter, whether it lies between
    ``{solution-start}`` and ``{solution-end}``; and each markdown line with that flag."""
    inside, code, lines = False, [], []
    for cell in jupytext.read(chapter).cells:
        if cell.cell_type == "code":
            code.append(inside)
            continue
        for line in cell.source.splitlines():
            if m := MYST_MARKERS.match(line):
                inside = m[1] == "solution-start"
            else:
                lines.append((line, inside))
    return code, lines


def run_install_cell(source: str, monkeypatch, *, leafkit_present: bool) -> list[list[str]]:
    """Execute the install cell with pip stubbed out; return the commands it would have run."""
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    if not leafkit_present:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "leafkit" else real(name, *a))
    exec(compile(source, "<install cell>", "exec"), {})
    return calls


def test_there_are_chapters():
    assert "setup.md" in [c.name for c in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_is_the_chapter_plus_install_cell(chapter):
    nb = make_notebooks.make_notebook(chapter)
    nbformat.validate(nb)
    source = jupytext.read(chapter)
    code = [c for c in nb.cells[1:] if c.cell_type == "code"]
    original = [c for c in source.cells if c.cell_type == "code"]
    assert len([c for c in nb.cells if c.cell_type == "code"]) == len(original) + 1
    # code runs exactly as in the chapter: at most one added first comment line
    assert [strip_added_comment(c.source) for c in code] == [c.source for c in original]
    assert [c.metadata.get("tags") for c in code] == [c.metadata.get("tags") for c in original]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert 0 < len(markdown) <= len([c for c in source.cells if c.cell_type == "markdown"]) + 1
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "code" and make_notebooks.INSTALL_TAG in first.metadata["tags"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_myst_is_left(chapter):
    assert make_notebooks.leftover_myst(make_notebooks.make_notebook(chapter)) == []


def test_leftover_myst_finds_myst():
    """The check above can fail: on the unconverted chapter it finds each kind of construct."""
    found = "\n".join(make_notebooks.leftover_myst(jupytext.read(ROOT / "book" / "foliation.md")))
    for expected in ("role {cite}`grementieri2022model`", "role {func}`", "directive {prf:proof}",
                     "directive {solution-start}", "(foliation)=", "(eq-3-4)="):
        assert expected in found
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "`{doc}` in code is fine\n\n```python\n{x}`y`\n```\n\n{foo}`bar` and [](eq-x)\n"
        ":label: x\n:::{weird}\n:::")])
    assert len(make_notebooks.leftover_myst(nb)) == 4


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_citations_become_author_year_with_references(chapter):
    nb = make_notebooks.make_notebook(chapter)
    md = "\n".join(c.source for c in jupytext.read(chapter).cells if c.cell_type == "markdown")
    keys = {k.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md)
            for k in group.split(",")}
    last = nb.cells[-1]
    if not keys:
        assert not last.source.startswith("## References")
        return
    assert last.cell_type == "markdown" and last.source.startswith("## References\n")
    bib = myst.parse_bibtex((ROOT / "book" / "references.bib").read_text(encoding="utf-8"))
    items = [ln for ln in last.source.splitlines() if ln.startswith("- ")]
    assert len(items) == len(keys)  # the chapter's citations, each once, and nothing else
    for key in keys:
        title = re.sub(r"\s+", " ", bib[key]["title"].replace("{", "").replace("}", ""))
        assert sum(title in item for item in items) == 1, key
        assert bib[key]["year"] in last.source
    if "grementieri2022model" in keys:
        assert "https://doi.org/10.1137/21M1437056" in last.source
        text = markdown_text(nb)
        assert "(Grementieri and Fioresi, 2022)" in text or "Grementieri and Fioresi (2022)" in text


def test_citation_forms():
    text = {c.stem: markdown_text(make_notebooks.make_notebook(c)) for c in CHAPTERS}
    assert "Section 3 of (Grementieri and Fioresi, 2022):" in text["foliation"]
    assert "Tron et al. (2022) treat" in text["foliation"]  # {cite:t}, three authors
    assert "(Lee, 2013, Chapter 19)" in text["foliation"]  # inside parentheses: no second pair
    assert "(Tron et al., 2022; Tron and Fioresi, 2024)" in text["beyond"]  # two keys


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_tex_macros_are_expanded(chapter):
    macros = make_notebooks.book_index().macros
    assert {"D", "KL", "rank", "Span", "Tr", "Jac"} <= set(macros)
    assert not STANDARD_TEX & set(macros)
    text = markdown_text(make_notebooks.make_notebook(chapter))
    unknown = set(re.findall(r"\\([A-Za-z]+)", text)) - STANDARD_TEX
    assert not unknown, f"TeX commands MathJax does not know: {sorted(unknown)}"
    if re.search(r"\\D(?![A-Za-z])", chapter.read_text(encoding="utf-8")):
        assert "\\mathcal{D}" in text


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_solutions_are_folded_and_hidden(chapter):
    nb = make_notebooks.make_notebook(chapter)
    in_solution, lines = solution_regions(chapter)
    code = [c for c in nb.cells[1:] if c.cell_type == "code"]
    for cell, inside in zip(code, in_solution, strict=True):
        tags = cell.metadata.get("tags", [])
        hidden = cell.metadata.get("jupyter", {}).get("source_hidden", False)
        assert hidden == (inside or "remove-cell" in tags or "remove-input" in tags), cell.source
        first = cell.source.split("\n", 1)[0]
        if "remove-cell" in tags:
            assert first == myst.CHECK_COMMENT
        elif inside:
            assert first == myst.SOLUTION_COMMENT
        else:
            assert first not in ADDED_COMMENTS
    # every distinctive piece of prose is inside <details> exactly when it is part of a solution
    cells = [c.source for c in nb.cells if c.cell_type == "markdown"]
    checked = 0
    for line, inside in lines:
        piece = max(re.split(r"[$\\{}`*]", line), key=len).strip()
        holders = [c for c in cells if piece in c]
        if len(piece) < 15 or len(holders) != 1 or holders[0].count(piece) != 1:
            continue
        before = holders[0][:holders[0].index(piece)]
        assert (before.count("<details>") > before.count("</details>")) == inside, line
        checked += inside
    starts = len(re.findall(r"\{solution-start\}", chapter.read_text(encoding="utf-8")))
    assert checked >= starts  # at least one line of prose checked per solution


def test_chapters_have_solutions_to_check():
    assert sum(any(solution_regions(c)[0]) for c in CHAPTERS) >= 5


SYNTHETIC_CONFIG = """\
repository:
  url: https://github.com/example/book
  branch: main
bibtex_bibfiles: [book/references.bib]
sphinx:
  config:
    mathjax3_config:
      tex:
        macros:
          R: "\\\\mathbb{R}"
          D: "\\\\mathcal{D}"
          KL: "\\\\operatorname{KL}"
          norm: ["\\\\lVert #1 \\\\rVert", 1]
          dist: ["d_{#1}(#2)", 2, "2"]
"""
SYNTHETIC_BIB = """\
@article{smith2020a,
  author = {Smith, Ann},
  title  = {A {C}af{\\'e} Study},
  journal = {Journal of Tests}, volume = {3}, number = {1}, pages = {1--9},
  year   = {2020},
  doi    = {10.1000/xyz}
}
@inproceedings{jones2021b,
  author    = {Bob Jones and Doe, Carl and Roe, Dan},
  title     = "Three Authors",
  booktitle = {Proceedings of Tests},
  year      = 2021
}
@misc{unused2000,
  author = {Nobody, N.}, title = {Never Cited}, year = {2000}
}
"""
SYNTHETIC_OTHER = """\
(other)=
# Other page on $\\R$

(sec-two)=
## Section two
"""
SYNTHETIC_CHAPTER = MYST_FRONT_MATTER + """
(ch)=
# A chapter on $\\D$

See {cite}`smith2020a`, {cite:t}`jones2021b` and {cite:p}`smith2020a, jones2021b`; {doc}`other`,
{doc}`the other page <other>`, {ref}`sec-two`, {ref}`a section <sec-two>`, {numref}`sec-two`,
{prf:ref}`thm-x`, {eq}`eq-1-2`, [](eq-local), {func}`~leafkit.x.y`, {class}`leafkit.Z`,
{meth}`leafkit.Z.m`, {mod}`leafkit.paths`, {glue:text}`other.md::v:s` and `{doc}` in code.

$$
\\KL(p \\| q) = \\norm{x} + \\norm y + \\dist{x} + \\dist[1]{y}
$$ (eq-1-2)

```{math}
:label: eq-local
\\D \\subseteq \\R^n
```

:::{prf:theorem} 1.1 — a theorem
:label: thm-x
:nonumber:

Body of the theorem with $\\R^n$.
:::

:::{prf:proof}
Short proof.
:::

:::{prf:algorithm} 2.1 — greedy walk
Steps.
:::

```{note}
A note with a formula $a +
b$ over two lines.
```

:::{admonition} Careful here
:class: tip
Admonition body.
:::

```{exercise}
:label: ex-one

Do it.
```

```{solution-start} ex-one
:class: dropdown
```

Solution text one.

```{code-cell} ipython3
answer = 42
```

```{code-cell} ipython3
:tags: [remove-cell]
assert answer == 42
```

Solution text two.

```{solution-end}
```

:::{exercise} With a title
:label: ex-two
Do more.
:::

:::{solution} ex-two
:class: dropdown
Solved inline.
:::

```{code-cell} ipython3
:tags: [remove-input]
print("hidden input")
```

```{code-cell} ipython3
:tags: [remove-cell]
assert True
```

```{code-cell} ipython3
print("plain")
```

```{solution-end}
```
"""


@pytest.fixture
def synthetic(tmp_path):
    """A tiny book with one chapter that uses every MyST construct the converter handles."""
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text(SYNTHETIC_CONFIG, encoding="utf-8")
    (tmp_path / "book" / "references.bib").write_text(SYNTHETIC_BIB, encoding="utf-8")
    (tmp_path / "book" / "other.md").write_text(SYNTHETIC_OTHER, encoding="utf-8")
    chapter = tmp_path / "book" / "ch.md"
    chapter.write_text(SYNTHETIC_CHAPTER, encoding="utf-8")
    return chapter


def test_synthetic_chapter_every_construct(synthetic):
    nb = make_notebooks.make_notebook(synthetic, root=synthetic.parent.parent)
    nbformat.validate(nb)
    assert make_notebooks.leftover_myst(nb) == []
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    text = "\n\n".join(md)
    for expected in (
            "# A chapter on $\\mathcal{D}$\n",
            "See (Smith, 2020), Jones et al. (2021) and (Smith, 2020; Jones et al., 2021); "
            "*Other page on $\\mathbb{R}$*,\n*the other page*, *Section two*, *a section*, "
            "*Section two*,\nTheorem 1.1, (1.2), (1), `leafkit.x.y`, `leafkit.Z`,\n"
            "`leafkit.Z.m`, `leafkit.paths`, *(computed on the page)* and `{doc}` in code.",
            "$$\n\\operatorname{KL}(p \\| q) = \\lVert x \\rVert + \\lVert y \\rVert + d_{2}(x) "
            "+ d_{1}(y)\n\\tag{1.2}\n$$",
            "$$\n\\mathcal{D} \\subseteq \\mathbb{R}^n\n\\tag{1}\n$$",
            "**Theorem 1.1 — a theorem.**\n\nBody of the theorem with $\\mathbb{R}^n$.",
            "*Proof.* Short proof. ∎",
            "**Algorithm 2.1 — greedy walk.**\n\nSteps.",
            "> **Note.** A note with a formula $a +\nb$ over two lines.",  # no "> " in the TeX
            "> **Careful here.** Admonition body.",
            "**Exercise 1**\n\nDo it.",
            "<details>\n<summary>Solution to Exercise 1</summary>\n\nSolution text one.\n\n"
            "</details>",
            "<details>\n<summary>Solution to Exercise 1 (continued)</summary>\n\n"
            "Solution text two.\n\n</details>",
            "**Exercise 2** (With a title)\n\nDo more.",
            "<details>\n<summary>Solution to Exercise 2</summary>\n\nSolved inline.\n\n"
            "</details>"):
        assert expected in text
    for gone in ("(ch)=", "(sec-two)", ":label:", ":nonumber:", ":class:", "$$ ("):
        assert gone not in text.replace("`{doc}`", "").replace("d_{", "").replace("\\tag{", "")
    assert not any(c.strip() == "" for c in md)  # the cell left empty by {solution-end} is gone
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 + 5  # the install cell and the chapter's five
    solution, check_in_solution, remove_input, check, plain = code[1:]
    assert solution.source == f"{myst.SOLUTION_COMMENT}\nanswer = 42"
    assert check_in_solution.source == f"{myst.CHECK_COMMENT}\nassert answer == 42"
    assert remove_input.source == 'print("hidden input")'
    assert check.source == f"{myst.CHECK_COMMENT}\nassert True"
    for cell in (solution, check_in_solution, remove_input, check):
        assert cell.metadata["jupyter"]["source_hidden"] is True
    assert plain.source == 'print("plain")' and "jupyter" not in plain.metadata
    refs = nb.cells[-1].source
    assert refs == ("## References\n\n"
                    "- Bob Jones, Carl Doe and Dan Roe (2021). Three Authors. In *Proceedings of "
                    "Tests*.\n"
                    "- Ann Smith (2020). A Café Study. *Journal of Tests*, 3(1), 1–9. "
                    "[doi:10.1000/xyz](https://doi.org/10.1000/xyz)")


def test_doc_links_to_the_site_when_it_has_a_base_url():
    index = myst.BookIndex(titles={"book/other": "Other"}, baseurl="https://example.org/site/",
                           labels={"sec": [myst.Label("section", "Sec", "book/other")]})
    converter = myst.ChapterConverter(index, "book/ch")
    assert converter.inline("{doc}`other`") == "[Other](https://example.org/site/book/other.html)"
    assert converter.inline("{ref}`sec`") == "[Sec](https://example.org/site/book/other.html#sec)"
    assert myst.ChapterConverter(myst.BookIndex(), "book/ch").inline("{doc}`x`") == "*x*"


def test_unknown_citation_or_label_is_an_error():
    converter = myst.ChapterConverter(myst.BookIndex(), "book/ch")
    with pytest.raises(ValueError, match="nokey"):
        converter.inline("{cite}`nokey`")
    with pytest.raises(ValueError, match="nolabel"):
        converter.inline("{ref}`nolabel`")


def test_install_cell_installs_leafkit_only_when_missing(monkeypatch):
    source = make_notebooks.install_source(ref="0123abc")
    assert run_install_cell(source, monkeypatch, leafkit_present=True) == []
    (cmd,) = run_install_cell(source, monkeypatch, leafkit_present=False)
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    url = make_notebooks.book_config()["repository"]["url"]
    assert cmd[-1] == f"leafkit[data,widgets] @ git+{url}@0123abc"
    # the extras named there exist in pyproject.toml (data: torchvision + mlxtend; widgets)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ("data", "widgets"):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra


def test_launch_links_open_the_generated_notebooks():
    html = ('<a href="https://mybinder.org/v2/gh/leafkit/leafkit/main?urlpath=tree/book/setup.md">'
            '<a href="https://colab.research.google.com/github/leafkit/leafkit/blob/main/'
            'book/setup.md">')
    new = make_notebooks.launch_links(html, "leafkit/leafkit")
    assert "mybinder.org/v2/gh/leafkit/leafkit/notebooks?urlpath=tree/book/setup.ipynb" in new
    assert "colab.research.google.com/github/leafkit/leafkit/blob/notebooks/book/setup.ipynb" in new
    assert make_notebooks.launch_links(new, "leafkit/leafkit") == new


@pytest.mark.site
def test_built_pages_have_rewritable_launch_buttons(tmp_path):
    """On the real build, each notebook chapter has Colab and Binder buttons to rewrite."""
    html_dir = ROOT / "_build" / "html"
    if not (html_dir / "index.html").is_file():
        pytest.skip("no built site")
    pages = {c: html_dir / c.relative_to(ROOT).with_suffix(".html") for c in CHAPTERS}
    if any(not p.is_file() or p.stat().st_mtime < c.stat().st_mtime for c, p in pages.items()):
        pytest.skip("the built site is older than the chapters (the book build runs first)")
    org_repo = make_notebooks.book_config()["repository"]["url"].split("github.com/")[-1]
    for chapter, page in pages.items():
        new = make_notebooks.launch_links(page.read_text(encoding="utf-8"), org_repo)
        path = chapter.relative_to(ROOT).with_suffix(".ipynb").as_posix()
        assert f"colab.research.google.com/github/{org_repo}/blob/notebooks/{path}" in new, page
        assert f"/v2/gh/{org_repo}/notebooks?urlpath=tree/{path}" in new, page


def test_download_button_serves_the_generated_notebook(tmp_path):
    site = tmp_path / "html"
    (site / "_sources" / "book").mkdir(parents=True)
    served = site / "_sources" / "book" / "setup.ipynb"
    served.write_text("{}")  # what myst-nb wrote: the raw chapter
    generated = tmp_path / "book" / "setup.ipynb"
    generated.parent.mkdir()
    nbformat.write(make_notebooks.make_notebook(ROOT / "book" / "setup.md"), generated)
    assert make_notebooks.publish_downloads(site, [generated], root=tmp_path) == 1
    assert served.read_bytes() == generated.read_bytes()
    with pytest.raises(FileNotFoundError, match="download target"):
        make_notebooks.publish_downloads(tmp_path / "elsewhere", [generated], root=tmp_path)


@pytest.mark.site
def test_built_pages_download_from_where_the_notebooks_go():
    """On the real build, each chapter's ".ipynb" button points at ``_sources/<chapter>.ipynb``."""
    html_dir = ROOT / "_build" / "html"
    if not (html_dir / "index.html").is_file():
        pytest.skip("no built site")
    for chapter in CHAPTERS:
        rel = chapter.relative_to(ROOT).with_suffix(".ipynb")
        page = (html_dir / rel.with_suffix(".html")).read_text(encoding="utf-8")
        link = re.search(r'href="([^"]+\.ipynb)"[^>]*\n?\s*class="[^"]*btn-download-notebook', page)
        assert link, f"no .ipynb download button on {rel.with_suffix('.html')}"
        assert (html_dir / rel.parent / link.group(1)).resolve() == \
            (html_dir / "_sources" / rel).resolve()


def test_binder_environment():
    lines = [ln.strip() for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "-e .[data,widgets]" in lines  # leafkit, its data sets and its explorers
    for needed in ("torch", "jupytext", "jupyterlab-myst"):  # .md opens and renders as a notebook
        assert any(re.match(rf"{needed}\b", ln) for ln in lines), needed
    for heavy in ("jupyter-book", "nbval", "playwright", "check-jsonschema", "pytest", "-r"):
        assert not any(ln.startswith(heavy) for ln in lines), f"Binder installs {heavy}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"data", "widgets"} <= set(project["optional-dependencies"])
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    assert not list((ROOT / "binder").glob("environment.y*ml"))
