"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    """An empty leafkit cache folder for one test."""
    monkeypatch.setenv("LEAFKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_checkpoint(cache_tmp):
    """A real checkpoint file in an empty cache: ``(path, result)`` of a tiny MLP trained four
    SGD steps on random data (``tiny_runs.train_tiny``)."""
    from tiny_runs import train_tiny

    from leafkit import training

    result = train_tiny()
    path = training.checkpoint_path(result.config)
    assert path.is_file()
    return path, result
