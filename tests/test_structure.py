"""The layout of leafkit: every module names its public API in ``__all__``, imports only from its
own or lower layers, stays under 400 lines, and only the plotting modules import pyplot."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import leafkit

ROOT = Path(leafkit.__file__).parent

#: Low to high. A module may import from its own layer or a lower one. The involutivity survey
#: returns a Table, so it sits with the tables (above training, which it trains with).
LAYERS = [
    {"cache", "checks", "data", "models", "published", "reproducibility"},
    {"geometry", "jacobian"},
    {"fisher", "projection"},
    {"frobenius", "walk"},
    {"paths"},
    {"training"},
    {"monitoring", "cifar"},
    {"authors", "robustness", "tables", "expansions", "regions", "planes", "path_metrics", "examples", "survey", "ood",
     "adversarial", "denoise"},
    {"plots", "viz"},
    {"widgets"},
]
LAYER = {name: k for k, layer in enumerate(LAYERS) for name in layer}
MODULES = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__")
MAX_LINES = 400
PLOTTING = {"plots", "viz", "widgets"}


def leafkit_imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """``(module, at_top_level)`` for every ``from .x import`` in the file."""
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.append((node.module.split(".")[0], id(node) in top))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_imports_only_from_lower_layers(name):
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    assert name in LAYER, f"leafkit.{name} has no place in LAYERS: add it to its layer"
    higher = [m for m, _ in leafkit_imports(tree) if LAYER.get(m, -1) > LAYER[name]]
    assert not higher, f"leafkit.{name} imports from higher layers: {higher}"
    if name == "plots":
        assert "training" not in {m for m, _ in leafkit_imports(tree)}


@pytest.mark.parametrize("name", MODULES)
def test_pyplot_only_in_plotting_modules(name):
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    top_level = {a.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for a in node.names} | {node.module for node in tree.body
                                         if isinstance(node, ast.ImportFrom)}
    if name not in PLOTTING:
        assert not any("matplotlib" in str(m) for m in top_level), name


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_the_public_names(name):
    module = importlib.import_module(f"leafkit.{name}")
    assert sorted(module.__all__) == sorted(set(module.__all__))
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"leafkit.{name}.__all__ names missing attributes {missing}"
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")}
    assert defined <= set(module.__all__), f"not in __all__: {defined - set(module.__all__)}"


def test_the_split_modules_are_gone_and_their_names_stay_top_level():
    assert not (ROOT / "theory.py").exists() and not (ROOT / "experiments.py").exists()
    for name in ("Table", "memory_table", "kl_second_order", "parameter_kl_second_order",
                 "count_maxpool_ties", "principal_angles", "tangent_angles_along", "PlaneField",
                 "PLANE_FIELDS", "survey_models", "involutivity_survey", "numerical_rank",
                 "score_hessian_vector_products", "ExamplePairs", "example_pairs", "mirror",
                 "path_summary", "segment_distance", "kernel_fraction", "plot_trace_curve",
                 "plot_walk", "plot_path_distances", "plot_spectra", "show_images"):
        assert hasattr(leafkit, name), name


@pytest.mark.parametrize("name", MODULES)
def test_no_module_is_a_catch_all(name):
    lines = len((ROOT / f"{name}.py").read_text().splitlines())
    assert lines <= MAX_LINES, f"leafkit/{name}.py has {lines} lines (> {MAX_LINES}): split it"
