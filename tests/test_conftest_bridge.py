"""The root conftest.py bridges nbval and jupyter-cache through their internals; at start it
checks that they are still there."""

import importlib.util
from pathlib import Path

import nbval.plugin
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bridge():
    spec = importlib.util.spec_from_file_location("leafkit_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_installed_versions_pass(bridge):
    bridge.check_bridge()


def test_the_tested_ranges_match_requirements(bridge):
    requirements = (ROOT / "requirements.txt").read_text().split()
    for package, tested in bridge.TESTED.items():
        assert package + tested in requirements


def test_a_moved_nbval_internal_stops_the_run(bridge, monkeypatch):
    monkeypatch.delattr(nbval.plugin.IPyNbFile, "get_kernel_message")
    with pytest.raises(pytest.UsageError, match=r"internals of nbval, and nbval \S+ lacks "
                                                r"nbval.plugin.IPyNbFile.get_kernel_message.*"
                                                r"tested with nbval>=0.11,<0.12"):
        bridge.check_bridge()


def test_the_module_attribute_nbformat_is_checked(bridge, monkeypatch):
    monkeypatch.delattr(nbval.plugin, "nbformat")
    with pytest.raises(pytest.UsageError, match=r"lacks nbval.plugin.nbformat"):
        bridge.check_bridge()


def test_changed_jupyter_cache_keywords_stop_the_run(bridge, monkeypatch):
    from jupyter_cache.cache.main import JupyterCacheBase

    monkeypatch.setattr(JupyterCacheBase, "cache_notebook_bundle", lambda self, bundle: None)
    with pytest.raises(pytest.UsageError, match=r"jupyter-cache \S+ lacks JupyterCacheBase."
                                                r"cache_notebook_bundle\(bundle, check_validity=, "
                                                r"overwrite=\).*jupyter-cache>=1.0,<1.1"):
        bridge.check_bridge()
    monkeypatch.undo()
    import jupyter_cache

    monkeypatch.delattr(jupyter_cache, "get_cache")
    with pytest.raises(pytest.UsageError, match=r"lacks jupyter_cache.get_cache"):
        bridge.check_bridge()
