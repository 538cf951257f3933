"""Rows of numbers that print as text and render as HTML, and Table 1 of the paper computed.

:class:`Table` is what the chapters show their small results in (Table 1, the involutivity
survey); :func:`memory_table` is Table 1: the size of a dense local data matrix ``G`` per data set
against the factored form ``(J, p)`` leafkit works with.

Paper: Table 1, Proposition 2.1.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

__all__ = ["DATASET_SHAPES", "Table", "format_bytes", "memory_table"]


class Table:
    """Rows of named values that print as text and render as HTML in a notebook.

    Args:
        rows: one ``dict`` per row, the same keys in every row.
        columns: the keys to show, in order (default: all keys of the first row); other keys
            stay available through :meth:`column` (e.g. per-point tensors behind a summary).
        formats: per column, a format spec (``".2e"``) or a function value -> ``str``.
        headers: per column, the name shown in the header (default: the key itself), so rows
            keep short keys while the page reads ``"end / start"``.

    Raises:
        ValueError: when ``formats`` or ``headers`` name a column that is not shown, or a row
            lacks a shown column.
    """

    def __init__(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                 formats: Mapping[str, str | Callable[[object], str]] | None = None,
                 headers: Mapping[str, str] | None = None):
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns if columns is not None else (self.rows[0] if self.rows else []))
        self.formats = dict(formats or {})
        self.headers = dict(headers or {})
        for what, names in (("formats", self.formats), ("headers", self.headers)):
            unknown = sorted(set(names) - set(self.columns))
            if unknown:
                raise ValueError(f"{what} name columns that are not shown: {unknown} "
                                 f"(shown: {self.columns})")
        for i, row in enumerate(self.rows):
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise ValueError(f"row {i} has no value for the columns {missing}")

    def column(self, name: str) -> list:
        """All values of one column (shown or not)."""
        return [r[name] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        """Row ``index`` as a dict (all keys, shown or not); a slice gives a list of rows."""
        return self.rows[index]

    def _titles(self) -> list[str]:
        return [self.headers.get(c, c) for c in self.columns]

    def _cell(self, name: str, value: object) -> str:
        fmt = self.formats.get(name)
        if callable(fmt):
            return fmt(value)
        if fmt is not None:
            return format(value, fmt)
        return str(value)

    def _cells(self) -> list[list[str]]:
        return [[self._cell(c, r[c]) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        cells = self._cells()
        titles = self._titles()
        widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(titles)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(titles, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    __repr__ = __str__

    def _numeric(self, name: str) -> bool:
        return bool(self.rows) and all(isinstance(r[name], (int, float)) and
                                       not isinstance(r[name], bool) for r in self.rows)

    def _repr_html_(self) -> str:
        """A padded HTML table; columns of numbers are right-aligned so that digits line up."""
        pad = "padding: 0.15em 0.7em"
        styles = [f"{pad}; text-align: {'right' if self._numeric(c) else 'left'}"
                  for c in self.columns]
        head = "".join(f'<th style="{st}">{html.escape(c)}</th>'
                       for c, st in zip(self._titles(), styles))
        body = "".join("<tr>" + "".join(f'<td style="{st}">{html.escape(v)}</td>'
                                        for v, st in zip(row, styles)) + "</tr>"
                       for row in self._cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def format_bytes(size: float) -> str:
    """``1.2e9 -> '1.20 GB'``: decimal units (kB = 1000 B), three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError("unreachable")


#: Input shape and number of classes of the data sets of Table 1.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "MNIST": ((1, 28, 28), 10),
    "CIFAR-10": ((3, 32, 32), 10),
    "CIFAR-100": ((3, 32, 32), 100),
    "ImageNet": ((3, 224, 224), 1000),
}


def memory_table(shapes: Mapping[str, tuple[tuple[int, ...], int]] = DATASET_SHAPES, *,
                 dtype: torch.dtype = torch.float32) -> Table:
    """Table 1, computed: the size of ``G``, the bound on its rank and what storing it costs.

    Per data set: ``n`` (entries of one input), ``C``, the rank bound ``C - 1`` of
    Proposition 2.1, the bytes of one dense ``n x n`` matrix ``G`` and of the factored form
    (``J``, ``C x n``, plus ``p``) that leafkit works with, and their ratio.

    Args:
        shapes: data set name -> (input shape, number of classes).
        dtype: the floating-point type whose size counts.

    Returns:
        A :class:`Table` with columns ``data set, input, n, C, rank bound C-1, dense G,
        factored (J, p), dense / factored``.

    Paper: Table 1, Proposition 2.1.
    """
    item = torch.empty((), dtype=dtype).element_size()
    rows = []
    for name, (shape, C) in shapes.items():
        if C < 2 or not shape or any(s < 1 for s in shape):
            raise ValueError(f"{name}: need C >= 2 classes and a non-empty input shape, got "
                             f"shape {shape} and C = {C}")
        n = math.prod(shape)
        dense, factored = n * n * item, (C * n + C) * item
        rows.append({"data set": name, "input": "x".join(map(str, shape)), "n": n, "C": C,
                     "rank bound C-1": C - 1, "dense G": dense, "factored (J, p)": factored,
                     "dense / factored": dense / factored})
    return Table(rows, formats={"dense G": format_bytes, "factored (J, p)": format_bytes,
                                "dense / factored": ".0f"})
