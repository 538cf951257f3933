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
