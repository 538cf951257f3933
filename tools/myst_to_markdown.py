"""MyST Markdown to the plain (CommonMark + MathJax) Markdown that Colab and JupyterLab render.

``tools/make_notebooks.py`` turns the chapters into ``.ipynb`` files; this module rewrites their
markdown cells, which would otherwise show the book's MyST syntax literally:

* roles: ``{cite}``/``{cite:p}``/``{cite:t}`` become author-year text read from the book's BibTeX
  files (and the chapter gets a "References" cell), ``{doc}`` the linked page's title (a link when
  ``html: baseurl`` is set in ``_config.yml``), ``{ref}``/``{numref}``/``{prf:ref}``/``{eq}`` and
  ``[](label)`` the section heading, "Theorem 3.1", "Exercise 2" or the equation's number,
  ``{func}``/``{class}``/... inline code, ``{glue:text}`` a note that the value is computed on
  the page;
* directives: ``prf:*`` become a bold heading and the body (a proof ends with ∎), ``{math}``
  ``$$ ... $$``, admonitions a block quote, ``{exercise}`` "**Exercise N**", and the content
  between ``{solution-start}`` and ``{solution-end}`` (which may span several cells) is folded in
  ``<details>`` (code cells: ``source_hidden``);
* ``(label)=`` targets and option lines are dropped; ``$$ ... $$ (label)`` gets a ``\\tag``;
* the MathJax macros of ``_config.yml`` are expanded in place (Colab renders each cell on its
  own, so a ``\\newcommand`` in a first cell is not reliably seen by the others).

Whatever MyST remains is reported by :func:`leftover_myst`, which the tests require to be empty.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

# A comment for Jupyter; for Colab a form title: with cellView "form" it shows the title and hides
# the code until the reader opens it
CHECK_COMMENT = "#@title Check of the claim above (hidden on the website)"
SOLUTION_COMMENT = "#@title Solution"
GLUE_TEXT = "*(computed on the page)*"
EXEC_TABLE = ("*(The table of execution times is filled in on the website, from the book's "
              "execution cache; it has no counterpart in a notebook.)*")
ADMONITIONS = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important",
               "warning": "Warning", "caution": "Caution", "attention": "Attention",
               "danger": "Danger", "error": "Error", "seealso": "See also"}
CODE_ROLES = {"func", "class", "meth", "mod", "attr", "obj", "data", "exc", "const"}
CITE_ROLES = {"cite": False, "cite:p": False, "cite:ps": False, "cite:t": True, "cite:ts": True}
REF_ROLES = {"ref", "numref", "prf:ref", "eq", "doc"}
# MyST constructs: the opening line of a directive, a role, a target, an equation label
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})\s*(?:\{(?P<name>[^}\s]+)\}\s*(?P<arg>.*?)"
                   r"|[^`{]*?)\s*$")  # a directive, or a code block (```python)
ROLE = r"\{(?P<role>[A-Za-z][\w:.+-]*)\}`(?P<content>[^`]*)`"
TARGET = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")
OPTION = re.compile(r"^:(?P<name>[\w-]+):(?:\s+(?P<value>.*?))?\s*$")
EQ_LABEL = re.compile(r"^\$\$[ \t]*\((?P<label>[^()\s]+)\)[ \t]*$")
# inline tokens of a markdown paragraph: a role, a code span, display and inline math
NO_BLANK = r"(?!\n[ \t]*\n)"  # code spans and inline math do not cross paragraphs
INLINE = re.compile(ROLE + rf"|(?P<code>(?P<ticks>`+)(?:{NO_BLANK}.)+?(?P=ticks)(?!`))"
                    r"|(?P<dmath>(?<!\\)\$\$.+?\$\$)"
                    rf"|(?P<math>(?<!\\)\$(?![\s$])(?:{NO_BLANK}(?:\\.|[^$\\]))+?(?<!\s)\$"
                    r"(?!\d))", re.S)
REF_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\(#?(?P<label>[\w-]+)\)")


# --------------------------------------------------------------------------- BibTeX, minimal

ACCENTS = {"'": "\u0301", '"': "\u0308", "`": "\u0300", "^": "\u0302", "~": "\u0303",
           "=": "\u0304", ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306",
           "H": "\u030b"}


def latex_to_text(value: str) -> str:
    """BibTeX field text as plain Unicode: accents, dashes, quotes; braces removed."""
    def accent(m):
        return unicodedata.normalize("NFC", m["letter"] + ACCENTS[m["accent"]])
    value = re.sub(r"\\(?P<accent>['\"`^~=.]|[cvuH](?=[{\s]))\s*\{?(?P<letter>[A-Za-z])\}?",
                   accent, value)
    for old, new in (("---", "—"), ("--", "–"), ("``", "“"), ("''", "”"), ("\\&", "&"),
                     ("~", " "), ("{", ""), ("}", "")):
        value = value.replace(old, new)
    return re.sub(r"\s+", " ", value).strip()


def parse_bibtex(text: str) -> dict[str, dict[str, str]]:
    """``{key: {"type": ..., field: raw value}}`` for the ``@type{key, field = {...}, ...}``
    entries of a BibTeX file (braced, quoted or bare values; no ``@string`` macros)."""
    entries, field_start = {}, re.compile(r"\s*,?\s*([\w-]+)\s*=\s*")
    for m in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        entry, pos = {"type": m[1].lower()}, m.end()
        while f := field_start.match(text, pos):
            value, pos = _bib_value(text, f.end())
            entry[f[1].lower()] = value
        entries[m[2]] = entry
    return entries


def _bib_value(text: str, pos: int) -> tuple[str, int]:
    """A field value starting at ``pos`` without its delimiters, and the position after it."""
    if text[pos] not in "{\"":
        bare = re.compile(r"[^,}\s]+").match(text, pos)
        return bare[0], bare.end()
    depth = 0
    for end in range(pos, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if (text[pos] == "{" and depth == 0) or (
                text[pos] == '"' and end > pos and text[end] == '"' and depth == 0):
            return text[pos + 1:end], end + 1
    raise ValueError(f"unterminated BibTeX value at character {pos}")


def _names(entry: dict) -> list[tuple[str, str]]:
    """``(first names, last name)`` of each author ("Last, First" or "First Last");
    ``("", "others")`` for ``and others``."""
    names = []
    for name in re.split(r"\s+and\s+", entry.get("author", entry.get("editor", "")).strip()):
        name = latex_to_text(name)
        if "," in name:
            last, first = name.split(",", 1)
        elif " " in name:
            first, last = name.rsplit(" ", 1)
        else:
            first, last = "", name
        names.append((first.strip(), last.strip()))
    return names


def cite_text(entries: list[dict], textual: bool) -> str:
    """Author-year citation: "(Grementieri and Fioresi, 2022)", or "Tron et al. (2022)" when
    ``textual`` (the ``{cite:t}`` role); several entries are separated by semicolons."""
    parts = []
    for entry in entries:
        last = [n[1] for n in _names(entry)]
        who = (f"{last[0]} et al." if len(last) > 2 or "others" in last
               else " and ".join(last))
        year = latex_to_text(entry.get("year", "n.d."))
        parts.append(f"{who} ({year})" if textual else f"{who}, {year}")
    return ", ".join(parts) if textual else f"({'; '.join(parts)})"


def reference_text(entry: dict) -> str:
    """A bibliography line: authors (year). Title. *Venue*, volume(number), pages. Link."""
    names = [f"{first} {last}".strip() for first, last in _names(entry) if last != "others"]
    authors = (", ".join(names[:-1]) + " and " + names[-1]) if len(names) > 1 else names[0]
    if len(names) < len(_names(entry)):
        authors = ", ".join(names) + " et al."
    get = {k: v if k in ("doi", "url", "eprint") else latex_to_text(v) for k, v in entry.items()}
    title = get.get("title", "")
    text = f"{authors} ({get.get('year', 'n.d.')}). {title}{'' if title[-1:] in '.?!' else '.'}"
    venue = get.get("journal") or get.get("booktitle")
    if venue:
        text += f" {'In ' if 'booktitle' in get else ''}*{venue}*"
        if "volume" in get:
            text += f", {get['volume']}" + (f"({get['number']})" if "number" in get else "")
        text += (f", {get['pages']}" if "pages" in get else "") + "."
    for key in ("series", "institution", "publisher"):
        if key in get:
            text += f" {get[key]}" + (f", vol. {get['volume']}" if key == "series"
                                       and "volume" in get and not venue else "") + "."
    if "edition" in get:
        text += f" Edition {get['edition']}."
    if "note" in get:
        text += f" {get['note']}."
    if "doi" in get:
        text += f" [doi:{get['doi']}](https://doi.org/{get['doi']})"
    elif "url" in get:
        text += f" <{get['url']}>"
    if get.get("archiveprefix", "").lower() == "arxiv" and "eprint" in get:
        text += f" [arXiv:{get['eprint']}](https://arxiv.org/abs/{get['eprint']})"
    return text


# --------------------------------------------------------------------------- MyST blocks

@dataclass
class Directive:
    """A fenced directive: ``name``, its argument, options and the raw lines of its body."""
    name: str
    arg: str
    options: dict
    body: list[str]


def parse_blocks(lines: list[str]) -> list:
    """Split markdown lines into ``str`` lines, code fences (``list[str]``, verbatim) and
    :class:`Directive` s, ```` ``` ```` or ``:::`` fenced (closed by a fence at least as long)."""
    return [node for node, _, _ in blocks(lines)]


def blocks(lines: list[str]):
    """:func:`parse_blocks`, each node with the range ``start, end`` of its lines."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or (m["fence"][0] == ":" and not m["name"]):
            yield lines[i], i, i + 1
            i += 1
            continue
        end = _closing(lines, i + 1, m["fence"])
        if m["name"]:
            yield _directive(m["name"], m["arg"], lines[i + 1:end]), i, end + 1
        else:  # a plain code block: kept as it is
            yield lines[i:end + 1], i, end + 1
        i = end + 1


def _closing(lines: list[str], i: int, fence: str) -> int:
    """Index of the line closing ``fence`` (skipping code blocks inside a ``:::`` directive)."""
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    while i < len(lines):
        if closing.match(lines[i]):
            return i
        inner = FENCE.match(lines[i])
        if fence[0] == ":" and inner and inner["fence"][0] == "`":
            i = _closing(lines, i + 1, inner["fence"])
        i += 1
    return len(lines)


def _directive(name: str, arg: str, body: list[str]) -> Directive:
    options = {}
    if body[:1] == ["---"] and "---" in body[1:]:
        end = body.index("---", 1)
        options, body = yaml.safe_load("\n".join(body[1:end])) or {}, body[end + 1:]
    else:
        while body and (opt := OPTION.match(body[0])):
            options[opt["name"]], body = opt["value"] or "", body[1:]
    while body and not body[0].strip():
        body = body[1:]
    return Directive(name, arg, options, body)


def walk(nodes: list):
    """Every node of a block tree in document order, directives' bodies included."""
    for node in nodes:
        yield node
        if isinstance(node, Directive):
            yield from walk(parse_blocks(node.body))


# --------------------------------------------------------------------------- the book's index

@dataclass
class Label:
    kind: str  # "section", "equation", "exercise" or "prf"
    text: str  # what a reference to it shows: a heading, "(3.2)", "Exercise 2", "Theorem 3.1"
    doc: str   # the page that defines it, e.g. "book/foliation"


def scan_labels(text: str, doc: str) -> dict[str, Label]:
    """The labels a page defines. Equation ``eq-3-2`` is numbered (3.2), as in the paper; other
    labelled equations 1, 2, ... in their order on the page; exercises 1, 2, ... likewise."""
    labels, counts, pending = {}, {"equation": 0, "exercise": 0}, None

    def equation(label):
        if m := re.fullmatch(r"eq-(\d+(?:-\d+)*)", label):
            number = m[1].replace("-", ".")
        else:
            counts["equation"] += 1
            number = str(counts["equation"])
        labels[label] = Label("equation", f"({number})", doc)

    for node in walk(parse_blocks(text.splitlines())):
        if isinstance(node, Directive):
            label = str(node.options.get("label", ""))
            if node.name == "exercise":
                counts["exercise"] += 1
                labels[label] = Label("exercise", f"Exercise {counts['exercise']}", doc)
            elif node.name.startswith("prf:") and label:
                number = re.match(r"[\d.]*", node.arg)[0]
                title = node.name[4:].capitalize() + (f" {number}" if number else "")
                labels[label] = Label("prf", title if number or not node.arg else node.arg, doc)
            elif node.name == "math" and label:
                equation(label)
        elif isinstance(node, str):
            if pending and node.strip():
                heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", node)
                labels[pending] = Label("section", heading[1] if heading else pending, doc)
                pending = None
            if m := TARGET.match(node):
                pending = m["label"]
            elif m := EQ_LABEL.match(node):
                equation(m["label"])
    labels.pop("", None)
    return labels


@dataclass
class BookIndex:
    """What the conversion needs from the whole book: page titles, labels, macros, BibTeX."""
    titles: dict[str, str] = field(default_factory=dict)    # "book/setup" -> its "# " heading
    labels: dict[str, list[Label]] = field(default_factory=dict)
    macros: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)
    bib: dict[str, dict] = field(default_factory=dict)
    baseurl: str | None = None

    @classmethod
    def load(cls, root: Path) -> BookIndex:
        config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
        tex = (((config.get("sphinx") or {}).get("config") or {}).get("mathjax3_config")
               or {}).get("tex") or {}
        macros = {}
        for name, value in (tex.get("macros") or {}).items():
            value = value if isinstance(value, list) else [value, 0]
            macros[name] = (value[0], int(value[1]), value[2] if len(value) > 2 else None)
        bib = {}
        for path in config.get("bibtex_bibfiles") or []:
            bib.update(parse_bibtex((root / path).read_text(encoding="utf-8")))
        index = cls(macros=macros, bib=bib, baseurl=(config.get("html") or {}).get("baseurl"))
        for page in sorted(root.glob("book/**/*.md")):
            doc, text = page.relative_to(root).with_suffix("").as_posix(), page.read_text("utf-8")
            if heading := re.search(r"^# +(.+?)\s*$", text, re.M):
                index.titles[doc] = heading[1]
            for label, target in scan_labels(text, doc).items():
                index.labels.setdefault(label, []).append(target)
        return index


# --------------------------------------------------------------------------- TeX macros

def _tex_argument(tex: str, pos: int) -> tuple[str, int]:
    """The TeX argument starting at ``pos`` (a brace group, a control sequence or one
    character) and the position after it."""
    while pos < len(tex) and tex[pos].isspace():
        pos += 1
    if pos >= len(tex):
        return "", pos
    if tex[pos] == "{":
        depth, end = 0, pos
        while end < len(tex):
            depth += {"{": 1, "}": -1}.get(tex[end], 0) if tex[end - 1] != "\\" else 0
            if depth == 0:
                return tex[pos + 1:end], end + 1
            end += 1
        return tex[pos + 1:], len(tex)
    if m := re.compile(r"\\(?:[A-Za-z]+|.)").match(tex, pos):
        return m[0], m.end()
    return tex[pos], pos + 1


def expand_macros(tex: str, macros: dict[str, tuple[str, int, str | None]]) -> str:
    """``tex`` with each ``\\name`` of ``macros`` replaced by its definition, ``#1``... by its
    arguments (``(body, nargs, default of an optional first argument)``), recursively."""
    if not macros:
        return tex
    command = re.compile(r"\\(?:\\|(?P<name>[A-Za-z]+))")
    pos, expansions = 0, 0
    while (m := command.search(tex, pos)) and expansions < 10_000:
        if m["name"] not in macros:
            pos = m.end()
            continue
        body, nargs, default = macros[m["name"]]
        args, end = [], m.end()
        for k in range(nargs):
            if k == 0 and default is not None:
                opt = re.compile(r"\s*\[([^\]]*)\]").match(tex, end)
                args.append(opt[1] if opt else default)
                end = opt.end() if opt else end
            else:
                arg, end = _tex_argument(tex, end)
                args.append(arg)
        for k in range(nargs, 0, -1):
            body = body.replace(f"#{k}", args[k - 1])
        tex, pos, expansions = tex[:m.start()] + body + tex[end:], m.start(), expansions + 1
    return tex


# --------------------------------------------------------------------------- one chapter

class ChapterConverter:
    """Converts the cells of one chapter, in order (solutions may span several cells)."""

    def __init__(self, index: BookIndex, doc: str):
        self.index, self.doc = index, doc
        self.cited: list[str] = []
        self.exercises = 0
        self.solution: str | None = None  # the summary of the open solution, if any

    # ----- references
    def label(self, label: str) -> Label | None:
        targets = self.index.labels.get(label, [])
        own = [t for t in targets if t.doc == self.doc]
        return (own or targets or [None])[0]

    def page(self, doc: str, text: str | None = None, anchor: str = "") -> str:
        title = text or self.index.titles.get(doc, doc.rsplit("/", 1)[-1])
        if self.index.baseurl:
            return f"[{title}]({self.index.baseurl.rstrip('/')}/{doc}.html{anchor})"
        return f"*{title}*"

    def reference(self, role: str, content: str) -> str:
        """``{doc}``, ``{ref}``, ``{eq}``...: ``text <target>`` shows the text, ``target`` what
        the target is (a page or section title, "(3.2)", "Theorem 3.1", "Exercise 2")."""
        m = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", content)
        text, target = (m[1], m[2]) if m else (None, content)
        if role == "doc":
            base = Path(self.doc).parent
            doc = target.lstrip("/") if target.startswith("/") else (base / target).as_posix()
            return self.page(doc.removesuffix(".md"), text)
        found = self.label(target.lstrip("#"))
        if found is None:
            raise ValueError(f"{self.doc}: unknown label {target!r} in {{{role}}}")
        if found.kind == "section":
            return self.page(found.doc, text or found.text, f"#{target}")
        elsewhere = f" of {self.page(found.doc)}" if found.doc != self.doc else ""
        return (text or found.text) + elsewhere

    def cite(self, content: str, textual: bool) -> str:
        keys = [k.strip() for k in content.split(",") if k.strip()]
        missing = [k for k in keys if k not in self.index.bib]
        if missing:
            raise ValueError(f"{self.doc}: no BibTeX entry for {', '.join(missing)}")
        self.cited += [k for k in keys if k not in self.cited]
        return cite_text([self.index.bib[k] for k in keys], textual)

    def role(self, role: str, content: str) -> str | None:
        """What a ``{role}`content``` shows in a notebook; ``None``: unknown, left as it is."""
        if role in CITE_ROLES:
            return self.cite(content, CITE_ROLES[role])
        if role in REF_ROLES:
            return self.reference(role, content)
        if role.removeprefix("py:") in CODE_ROLES:
            text = re.sub(r"^(.*?)\s*<[^<>]+>$", r"\1", content).lstrip("~")
            return f"`{text}`"
        if role.startswith("glue"):
            return GLUE_TEXT
        if role == "math":
            return f"${content}$"
        return {"sub": f"<sub>{content}</sub>", "sup": f"<sup>{content}</sup>",
                "kbd": f"<kbd>{content}</kbd>", "term": content, "abbr": content}.get(role)

    # ----- text
    def inline(self, text: str) -> str:
        """A run of markdown lines: targets dropped, equation labels tagged, roles and
        reference links resolved, macros expanded in math; code spans kept as they are."""
        lines = []
        for line in text.split("\n"):
            if TARGET.match(line):
                continue
            if m := EQ_LABEL.match(line):
                found = self.label(m["label"])
                line = f"\\tag{{{found.text.strip('()')}}}\n$$" if found else "$$"
            lines.append(line)
        text, out, pos = "\n".join(lines), [], 0
        for m in INLINE.finditer(text):
            out.append(self.links(text[pos:m.start()]))
            if m["role"]:
                shown = self.role(m["role"], m["content"]) or m[0]
                if CITE_ROLES.get(m["role"]) is False and out[-1].endswith("("):
                    shown = shown[1:-1]  # "({cite}`x`, Chapter 19)": one pair of parentheses
                out.append(shown)
            else:
                out.append(m[0])
            pos = m.end()
        out.append(self.links(text[pos:]))
        # second pass, so that math in the titles shown for references is expanded too
        text = "".join(out)
        return INLINE.sub(lambda m: expand_macros(m[0], self.index.macros)
                          if m["math"] or m["dmath"] else m[0], text)

    def links(self, text: str) -> str:
        """``[](label)`` and ``[text](label)`` MyST references (not ordinary links)."""
        def link(m):
            found = self.label(m["label"])
            if found is None:
                return m[0]
            return m["text"] or self.reference("ref", m["label"])
        return REF_LINK.sub(link, text)

    def render(self, lines: list[str]) -> str:
        """Markdown lines with their directives converted (solution markers excluded)."""
        out, run = [], []
        for node in parse_blocks(lines) + [None]:
            if isinstance(node, str):
                run.append(node)
                continue
            if run:
                out.append(self.inline("\n".join(run)))
                run = []
            if isinstance(node, list):
                out.append("\n".join(node))
            elif isinstance(node, Directive):
                out.append(self.directive(node))
        return "\n".join(out)

    def directive(self, d: Directive) -> str:
        """A directive as plain Markdown; an unknown one is left as MyST (and reported)."""
        if d.name == "math":
            label = self.label(str(d.options.get("label", "")))
            tag = f"\n\\tag{{{label.text.strip('()')}}}" if label else ""
            return f"$$\n{expand_macros(chr(10).join(d.body), self.index.macros)}{tag}\n$$"
        body = self.render(d.body).strip("\n")
        if d.name.startswith("prf:"):
            kind = d.name[4:]
            if kind == "proof":
                return _lead("*Proof.*", body) + ("\n\n∎" if body.endswith("$$") else " ∎")
            title = f"{kind.capitalize()} {self.inline(d.arg)}".strip()
            return f"**{title}{'' if title[-1] in '.?!' else '.'}**\n\n{body}"
        if d.name == "exercise":
            self.exercises += 1
            title = f" ({self.inline(d.arg)})" if d.arg else ""
            return f"**Exercise {self.exercises}**{title}\n\n{body}"
        if d.name == "solution":
            return _details(self.solution_summary(d.arg), body)
        if d.name in ADMONITIONS or d.name == "admonition":
            title = self.inline(d.arg) if d.arg and d.name == "admonition" else ADMONITIONS.get(
                d.name, "Note")
            if "dropdown" in str(d.options.get("class", "")):
                return _details(title, body)
            return blockquote(_lead(f"**{title}{'' if title[-1] in '.?!:' else '.'}**", body))
        if d.name == "nb-exec-table":
            return EXEC_TABLE
        fence = "```"  # unknown: left as it is, for leftover_myst to report
        return "\n".join([f"{fence}{{{d.name}}} {d.arg}".rstrip(), *d.body, fence])

    def solution_summary(self, label: str) -> str:
        found = self.label(label.strip()) if label.strip() else None
        return f"Solution to {found.text}" if found and found.kind == "exercise" else "Solution"

    # ----- cells
    def markdown(self, source: str) -> str:
        """A markdown cell; the parts inside a solution are folded in ``<details>``."""
        parts, current = [], []

        def flush():
            text = self.render(current).strip("\n")
            if text.strip():
                parts.append(_details(self.solution, text) if self.solution else text)
            current.clear()

        lines = source.split("\n")
        for node, start, end in blocks(lines):
            if isinstance(node, Directive) and node.name in ("solution-start", "solution-end"):
                flush()
                self.solution = (self.solution_summary(node.arg)
                                 if node.name == "solution-start" else None)
            else:
                current.extend(lines[start:end])
        flush()
        if self.solution and not self.solution.endswith("(continued)"):
            self.solution += " (continued)"
        return "\n\n".join(parts)

    def code(self, cell) -> None:
        """A code cell: hidden (and marked by a first comment line) when the website hides it
        (``remove-cell``) or it belongs to a solution; ``remove-input``: hidden only."""
        tags = cell.metadata.get("tags", [])
        comment = (CHECK_COMMENT if "remove-cell" in tags
                   else SOLUTION_COMMENT if self.solution else None)
        if comment:
            cell.source = f"{comment}\n{cell.source}"
        if comment or "remove-input" in tags:
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
            cell.metadata["cellView"] = "form"  # Colab's "hide code" view

    def references(self):
        """The "References" cell for the entries cited so far, or ``None``."""
        if not self.cited:
            return None
        keys = sorted(self.cited, key=lambda k: (_names(self.index.bib[k])[0][1],
                                                 self.index.bib[k].get("year", ""), k))
        items = "\n".join(f"- {reference_text(self.index.bib[k])}" for k in keys)
        return nbformat.v4.new_markdown_cell(f"## References\n\n{items}")


def _lead(lead: str, body: str) -> str:
    """``lead`` at the start of the first paragraph of ``body`` (or above it, before a block)."""
    if not body or re.match(r"(\$\$|```|[-*+>|#<]|\d+\.|\\tag)", body):
        return f"{lead}\n\n{body}".strip()
    return f"{lead} {body}"


def _details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def blockquote(text: str) -> str:
    """``text`` as a block quote: ``> `` before every line that does not start inside math (a
    ``> `` inside a multi-line formula would become part of the TeX)."""
    inside = [(m.start(), m.end()) for m in INLINE.finditer(text)
              if m["dmath"] or m["math"] or m["code"]]
    out, pos = [], 0
    for line in text.split("\n"):
        in_math = any(s < pos < e for s, e in inside)
        out.append(line if in_math else (f"> {line}" if line.strip() else ">"))
        pos += len(line) + 1
    return "\n".join(out)


def convert_cells(cells: list, index: BookIndex, doc: str) -> list:
    """The chapter's cells as plain-Markdown notebook cells, plus a final "References" cell when
    the chapter cites. Markdown cells left empty (e.g. only ``{solution-end}``) are dropped."""
    converter, out = ChapterConverter(index, doc), []
    for cell in cells:
        if cell.cell_type == "markdown":
            cell.source = converter.markdown(cell.source)
            if not cell.source.strip():
                continue
        elif cell.cell_type == "code":
            converter.code(cell)
        out.append(cell)
    if (refs := converter.references()) is not None:
        out.append(refs)
    return out


# --------------------------------------------------------------------------- leftovers

def leftover_myst(nb) -> list[str]:
    """MyST constructs still in the markdown cells of ``nb`` (outside code), one line each:
    directive fences, roles, ``(label)=`` targets, equation labels, option lines, ``[](x)``."""
    found = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = []
        for node in parse_blocks(cell.source.split("\n")):
            if isinstance(node, Directive):  # ```{name} or :::{name}
                found.append(f"cell {number}: directive {{{node.name}}}")
            elif isinstance(node, str):  # (code blocks are skipped)
                text.append(node)
                if TARGET.match(node) or EQ_LABEL.match(node) or OPTION.match(node):
                    found.append(f"cell {number}: {node.strip()}")
        joined = "\n".join(text)
        for m in INLINE.finditer(joined):
            if m["role"]:
                found.append(f"cell {number}: role {m[0]}")
        plain = INLINE.sub("", joined)
        found += [f"cell {number}: reference {m[0]}" for m in re.finditer(r"\[\]\([^)]*\)", plain)]
    return found
