"""What leafkit ships: one version and the typing marker (``__all__``: tests/test_structure.py)."""

from importlib import metadata
from pathlib import Path

import pytest

import leafkit

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent


def test_one_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert leafkit.__version__ == metadata.version("leafkit") == pyproject["project"]["version"]
    assert leafkit.environment_summary()["leafkit"] == leafkit.__version__


def test_py_typed_is_shipped():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["leafkit"]
    assert (Path(leafkit.__file__).parent / "py.typed").is_file()


def test_license_is_an_spdx_expression_with_its_file():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pyproject["license"] == "MIT" and pyproject["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert metadata.metadata("leafkit")["License-Expression"] == "MIT"


def test_citation_file_cites_the_paper():
    citation = (ROOT / "CITATION.cff").read_text()
    assert 'doi: "10.1137/21M1437056"' in citation and "preferred-citation:" in citation
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"version: {version}" in citation
