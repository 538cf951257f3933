"""What leafkit ships: one version, the typing marker, an __all__ in the data/training modules."""

import importlib
import inspect
from importlib import metadata
from pathlib import Path

import pytest

import leafkit

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
OWN = ["cache", "data", "models", "reproducibility", "training"]


def test_one_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert leafkit.__version__ == metadata.version("leafkit") == pyproject["project"]["version"]
    assert leafkit.environment_summary()["leafkit"] == leafkit.__version__


def test_py_typed_is_shipped():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["leafkit"]
    assert (Path(leafkit.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("name", OWN)
def test_all_lists_the_public_names(name):
    module = importlib.import_module(f"leafkit.{name}")
    assert all(hasattr(module, item) for item in module.__all__)
    defined = {n for n, v in vars(module).items() if not n.startswith("_")
               and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__}
    assert defined <= set(module.__all__), defined - set(module.__all__)
