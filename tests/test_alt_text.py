"""Every picture of the book has alt text, not the file path Sphinx falls back to.

* A code cell of a chapter that draws a figure (``plt.``, a ``plot_*`` call, ``show_images``,
  ``path_strip``, ``path_and_interpolation``, ``frame_figure``, ``imshow``, or a ``mystnb.figure``
  entry) carries a non-empty ``mystnb.image.alt`` that does not look like a file path; myst-nb puts
  it on the ``<img>`` of the cell's image output. Cells whose output is removed are exempt.
* The pictures leafkit renders as HTML, the kernel-free player (``path_scrubber``) and the frames
  of the path explorers, carry an ``alt`` attribute themselves.

The browser test (``tests/test_site_browser.py``) checks the same on the built pages.
``LEAFKIT_BOOK_DIR=<folder>`` points the chapter check at another copy of ``book/``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from cases import MYST_FRONT_MATTER

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
BOOK = Path(os.environ.get("LEAFKIT_BOOK_DIR", ROOT / "book")).resolve()
FIGURE_CALL = re.compile(r"\bplt\.|\bplot_\w*\(|\bshow_images\(|\bpath_strip\(|"
                         r"\bpath_and_interpolation\(|\bframe_figure\(|\.imshow\(")
IMG_TAG = re.compile(r"<img\b[^>]*>")


def looks_like_path(alt: str) -> bool:
    """An alt that reads like a file name (what Sphinx writes when a figure has none)."""
    alt = alt.strip()
    return (bool(re.search(r"\.(png|svg|jpe?g|gif)$", alt, re.I)) or alt.startswith("_images/")
            or "/" in alt)


def alt_problems(alt) -> str | None:
    if not isinstance(alt, str) or not alt.strip():
        return "no mystnb.image.alt"
    if looks_like_path(alt):
        return f"alt looks like a file path: {alt[:60]!r}"
    return None


def missing_alt(book: Path) -> list[str]:
    """``"page cell N: problem (first line)"`` for every figure cell of ``book/*.md`` without a
    usable alt text."""
    problems = []
    for path in sorted(book.glob("*.md")):
        nb = jupytext.read(path)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            tags = cell.metadata.get("tags") or []
            if "remove-output" in tags or "remove-cell" in tags:
                continue
            mystnb = cell.metadata.get("mystnb") or {}
            if not (FIGURE_CALL.search(cell.source) or "figure" in mystnb):
                continue
            problem = alt_problems((mystnb.get("image") or {}).get("alt"))
            if problem:
                first = next((s for s in cell.source.splitlines() if s.strip()), "")
                problems.append(f"{path.name} cell {i}: {problem} ({first.strip()[:60]})")
    return problems


def img_alts(html: str) -> list[str | None]:
    """The alt attribute of every ``<img>`` tag in ``html`` (None where it has none)."""
    alts = []
    for tag in IMG_TAG.findall(html):
        m = re.search(r'\salt="([^"]*)"', tag)
        alts.append(m.group(1) if m else None)
    return alts


def test_every_figure_cell_has_alt_text():
    assert BOOK.is_dir(), f"no book at {BOOK}"
    problems = missing_alt(BOOK)
    assert not problems, "figure cells without alt text:\n" + "\n".join(problems)


CHAPTER = MYST_FRONT_MATTER + """
# A chapter

```{code-cell} ipython3
---
mystnb:
  image:
    alt: "A line rising from left to right"
---
plt.plot([1, 2]);
```

```{code-cell} ipython3
:tags: [hide-input]
leafkit.plot_walk(steps, curves);
```

```{code-cell} ipython3
---
mystnb:
  image:
    alt: _images/0123abcd.png
  figure:
    caption: A figure.
    name: fig-a
---
show(x)
```

```{code-cell} ipython3
:tags: [remove-output]
plt.plot([3, 4]);
```

```{code-cell} ipython3
print(1 / 2)
```
"""


def test_the_check_flags_missing_and_path_like_alts(tmp_path):
    (tmp_path / "chapter.md").write_text(CHAPTER)
    problems = missing_alt(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("chapter.md cell 2: no mystnb.image.alt (leafkit.plot_walk")
    assert problems[1].startswith("chapter.md cell 3: alt looks like a file path")
    assert looks_like_path("figure.SVG") and looks_like_path("a/b")
    assert not looks_like_path("Two rows of ten digit images")


def test_the_check_fails_on_a_copy_of_the_book_missing_one_alt(tmp_path):
    for md in BOOK.glob("*.md"):
        shutil.copy(md, tmp_path / md.name)
    for path in sorted(tmp_path.glob("*.md")):
        nb = jupytext.read(path)
        hit = next((i for i, c in enumerate(nb.cells)
                    if ((c.metadata.get("mystnb") or {}).get("image") or {}).get("alt")), None)
        if hit is not None:
            break
    else:
        pytest.skip("no chapter has an alt text yet (run the alt-text script on book/)")
    before = missing_alt(tmp_path)
    image = nb.cells[hit].metadata["mystnb"]["image"]
    del image["alt"]
    jupytext.write(nb, path, fmt="md:myst")
    after = missing_alt(tmp_path)
    assert [p for p in after if p not in before] == [
        p for p in after if p.startswith(f"{path.name} cell {hit}: no mystnb.image.alt")], after
    assert len(after) == len(before) + 1


@pytest.fixture
def cnn():
    from leafkit.models import MnistCNN

    torch.manual_seed(0)
    return MnistCNN(channels=(4, 8), hidden=32).eval()


def test_the_kernel_free_player_has_alt_text(cnn):
    from leafkit.paths import horizontal_path
    from leafkit.viz import path_scrubber

    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    res = horizontal_path(cnn, x[:1], x[1:], max_steps=4, tol=None, record_every=2,
                          progress=False)
    alts = img_alts(path_scrubber(res, 0, frames=3, title="a test path").data)
    assert alts and all(alt_problems(a) is None for a in alts), alts
    assert "horizontal path (a test path)" in alts[0] and "3 frames" in alts[0]
    assert img_alts(path_scrubber(res, 0, frames=2, alt="My text").data)[0] == "My text"


def test_the_explorer_frames_have_alt_text(cnn, fake_test_set):
    pytest.importorskip("ipywidgets")
    from leafkit.widgets import cross_leaf_explorer, path_explorer

    for box in (path_explorer(cnn, fake_test_set, source=0, target=5, max_steps=10,
                              record_every=5),
                cross_leaf_explorer(cnn, fake_test_set, index=3, steps=10, record_every=5)):
        view = box.children[-1]
        alts = img_alts(view.value)
        assert len(alts) == 1 and alt_problems(alts[0]) is None, alts
        assert alts[0].startswith("Frame 3 of 3 of a ")
        assert base64.b64encode(box.frame_png).decode() in view.value  # the frame shown is the PNG
