"""Fixtures shared by the unit tests."""

import pytest
import torch


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


@pytest.fixture
def gen():
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def fake_test_set():
    """An offline-like data set of 30 random test images, labels 0..9 three times (so the first
    test image of class c is image c), and no training images."""
    from leafkit.data import MNISTData

    x = torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(30) % 10
    return MNISTData(x[:0], y[:0], x, y, source="offline", description="fake")
