"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    """An empty leafkit cache folder for one test."""
    monkeypatch.setenv("LEAFKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
