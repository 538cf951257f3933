"""Unit tests of leafkit.tables: Table 1 against its closed form, and the text/HTML table."""

import re

import pytest
import torch

from leafkit import tables


def plain_html(table) -> str:
    """The table's HTML without its inline styles."""
    return re.sub(r' style="[^"]*"', "", table._repr_html_())


def test_memory_table_matches_closed_form():
    table = tables.memory_table()
    mnist = table.rows[0]
    assert (mnist["n"], mnist["C"], mnist["rank bound C-1"]) == (784, 10, 9)
    assert mnist["dense G"] == 784 * 784 * 4 and mnist["factored (J, p)"] == (10 * 784 + 10) * 4
    assert table.column("n") == [784, 3072, 3072, 150528]
    assert table.column("data set") == list(tables.DATASET_SHAPES)
    double = tables.memory_table({"toy": ((2, 3), 4)}, dtype=torch.float64).rows[0]
    assert double["dense G"] == 36 * 8 and double["factored (J, p)"] == (4 * 6 + 4) * 8
    assert double["dense / factored"] == pytest.approx(36 / 28)


def test_memory_table_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C >= 2"):
        tables.memory_table({"bad": ((3,), 1)})
    with pytest.raises(ValueError, match="non-empty input shape"):
        tables.memory_table({"bad": ((), 10)})


def test_table_renders_shown_columns_only():
    table = tables.Table([{"a": 1.23456, "b": "x", "hidden": torch.zeros(3)}],
                         columns=["a", "b"], formats={"a": ".2f"})
    text, page = str(table), plain_html(table)
    assert text.splitlines() == ["a     b", "----  -", "1.23  x"]
    assert "hidden" not in text
    assert page == ("<table><thead><tr><th>a</th><th>b</th></tr></thead>"
                    "<tbody><tr><td>1.23</td><td>x</td></tr></tbody></table>")
    assert table.column("hidden")[0].shape == (3,) and len(table) == 1
    assert list(table) == table.rows


def test_table_escapes_html_and_calls_format_functions():
    table = tables.Table([{"name": "<b>", "size": 2_000}], formats={"size": tables.format_bytes})
    assert "<td>&lt;b&gt;</td><td>2 kB</td>" in plain_html(table)


def test_format_bytes():
    assert tables.format_bytes(999) == "999 B"
    assert tables.format_bytes(2_458_624) == "2.46 MB"
    assert tables.format_bytes(90.6e9) == "90.6 GB"
    assert tables.format_bytes(3e15) == "3e+03 TB"


def test_table_headers_rename_shown_columns_and_rows_index():
    table = tables.Table([{"frac": 0.5, "n": 3}, {"frac": 0.25, "n": 4}],
                         formats={"frac": ".0%"}, headers={"frac": "end / start"})
    assert str(table).splitlines()[0] == "end / start  n"
    assert "<th>end / start</th><th>n</th>" in plain_html(table)
    assert "<td>25%</td><td>4</td>" in plain_html(table)
    assert table[1] == {"frac": 0.25, "n": 4} and table[-1]["n"] == 4


def test_table_refuses_formats_or_headers_of_unshown_columns():
    with pytest.raises(ValueError, match=r"headers name columns that are not shown: \['b'\]"):
        tables.Table([{"a": 1, "b": 2}], columns=["a"], headers={"b": "B"})
    with pytest.raises(ValueError, match="formats name columns"):
        tables.Table([{"a": 1}], formats={"z": ".2f"})
    with pytest.raises(ValueError, match=r"row 1 has no value for the columns \['a'\]"):
        tables.Table([{"a": 1}, {"b": 2}], columns=["a"])


def test_table_html_right_aligns_columns_of_numbers_only():
    table = tables.Table([{"name": "a", "x": 1.5, "n": 3, "ok": True},
                          {"name": "b", "x": 2.25, "n": 4, "ok": False}])
    cells = re.findall(r'<td style="[^"]*text-align: (\w+)">([^<]*)</td>', table._repr_html_())
    assert cells[:4] == [("left", "a"), ("right", "1.5"), ("right", "3"), ("left", "True")]
    assert all("padding" in st for st in re.findall(r'style="([^"]*)"', table._repr_html_()))
