"""Equation numbers on the pages are the paper's: a display of the paper's equation (N.M) carries
``\\tag{N.M}`` under the target ``(eq-N-M)=``; our own displays carry tags of their own (A.1,
B.1...). Sphinx's automatic numbering, which counts labelled displays across the whole book and
printed (9)-(17) beside the paper's (3.3)-(3.11), is never used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
PAGES = sorted(BOOK.glob("*.md"))


def targets_and_displays(text: str) -> list[tuple[str, str]]:
    """``(label, display)`` for every ``(eq-...)=`` target followed by a ``$$`` display."""
    return re.findall(r"^\((eq-[\w-]+)\)=\n\$\$\n((?:(?!\$\$).*\n)*?)\$\$$", text, re.M)


def tag_problems(text: str) -> list[str]:
    """What is wrong with the equation numbering of a page's source (nothing: ``[]``)."""
    problems = []
    if re.search(r"^\$\$[ \t]*\([\w-]+\)[ \t]*$", text, re.M):
        problems.append("a $$ ... $$ (label) display: Sphinx numbers it across the whole book")
    if re.search(r"^```\{math\}\n:label:", text, re.M):
        problems.append("a labelled {math} directive: Sphinx numbers it across the whole book")
    found = targets_and_displays(text)
    if len(found) != len(re.findall(r"^\(eq-[\w-]+\)=$", text, re.M)):
        problems.append("an equation target not right above its $$ display")
    for label, display in found:
        tags = re.findall(r"\\tag\{([^}]*)\}", display)
        if len(tags) != 1:
            problems.append(f"{label}: {len(tags)} tags")
        elif (m := re.fullmatch(r"eq-(\d)-(\d+)", label)) and tags[0] != f"{m[1]}.{m[2]}":
            problems.append(f"{label} is tagged ({tags[0]}), not the paper's ({m[1]}.{m[2]})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_numbered_displays_carry_their_own_tags(page):
    assert tag_problems(page.read_text()) == []


@pytest.mark.parametrize("bad", [
    "(eq-3-3)=\n$$\nx = y \\tag{3.4}\n$$\n",  # another number than the paper's
    "(eq-3-3)=\n$$\nx = y\n$$\n",  # no tag
    "$$\nx = y\n$$ (eq-3-3)\n",  # Sphinx numbering
    "(eq-3-3)=\n\nSome text.\n\n$$\nx = y \\tag{3.3}\n$$\n",  # target astray
])
def test_the_check_finds_bad_numbering(bad):
    assert tag_problems(bad)


def test_references_show_the_tag_they_point_to():
    tags = {label: re.search(r"\\tag\{([^}]*)\}", display)[1]
            for page in PAGES for label, display in targets_and_displays(page.read_text())}
    assert {"eq-2-9", "eq-3-3", "eq-3-11", "eq-4-1"} <= set(tags)
    refs = [(page.name, text, label) for page in PAGES
            for text, label in re.findall(r"\[([^\]]*)\]\((eq-[\w-]+)\)", page.read_text())]
    assert refs
    for page, text, label in refs:
        assert label in tags, f"{page}: [{text}]({label}) points to no target"
        assert text == f"({tags[label]})", f"{page}: [{text}]({label}) shows another number"
    assert not [p.name for p in PAGES if "{eq}`" in p.read_text()]
