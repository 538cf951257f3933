"""The cache folder and the device rule (leafkit.cache)."""

from pathlib import Path

import pytest
import torch

import leafkit
from leafkit import cache


def test_cache_folder_is_created_under_the_variable(cache_tmp):
    assert leafkit.cache_dir("checkpoints") == cache_tmp / "checkpoints"
    assert (cache_tmp / "checkpoints").is_dir()


def test_a_cache_variable_naming_a_file_is_a_clear_error(tmp_path, monkeypatch):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    for target in (afile, afile / "below"):  # the file itself; a folder below it (fails as root)
        monkeypatch.setenv("LEAFKIT_CACHE", str(target))
        with pytest.raises(OSError, match=(f"leafkit cannot use the cache folder {target}/mnist: "
                                           f"{afile} is a file, not a folder \\(from "
                                           f"LEAFKIT_CACHE='{target}'\\); set LEAFKIT_CACHE to a "
                                           "writable folder")):
            leafkit.cache_dir("mnist")


def test_training_into_an_unusable_cache_names_the_variable(tmp_path, monkeypatch):
    afile = tmp_path / "cache"
    afile.write_text("")
    monkeypatch.setenv("LEAFKIT_CACHE", str(afile / "leafkit"))
    with pytest.raises(OSError, match="is a file, not a folder.*set LEAFKIT_CACHE"):
        leafkit.train(leafkit.MLP(4, hidden=(3,), num_classes=2).config, torch.randn(6, 4),
                      torch.tensor([0, 1] * 3), steps=1, batch_size=3, progress=False)


def test_device_rule_reads_the_variable(monkeypatch):
    monkeypatch.setenv("LEAFKIT_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the variable wins
    assert leafkit.default_device() == torch.device("cpu")


def test_device_rule_prefers_cuda_then_cpu(monkeypatch):
    monkeypatch.delenv("LEAFKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert leafkit.default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert leafkit.default_device() == torch.device("cpu")
    monkeypatch.setenv("LEAFKIT_DEVICE", "  ")  # blank counts as unset
    assert leafkit.default_device() == torch.device("cpu")


def test_cuda_requested_where_it_is_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in ("cuda", "cuda:1"):
        monkeypatch.setenv("LEAFKIT_DEVICE", value)
        with pytest.raises(ValueError, match=f"LEAFKIT_DEVICE='{value}' asks for CUDA, but CUDA "
                                             "is not available here.*set LEAFKIT_DEVICE=cpu"):
            leafkit.default_device()


def test_a_missing_gpu_index_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LEAFKIT_DEVICE", "cuda:3")
    with pytest.raises(ValueError, match="LEAFKIT_DEVICE='cuda:3' asks for GPU 3, but this "
                                         "machine has 1"):
        leafkit.default_device()


@pytest.mark.parametrize("value", ["garbage", "CPU", "gpu", "xla"])
def test_an_unknown_device_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("LEAFKIT_DEVICE", value)
    with pytest.raises(ValueError, match=f"LEAFKIT_DEVICE='{value}'"):
        leafkit.default_device()


def test_the_rule_is_documented_in_one_place():
    doc = cache.default_device.__doc__
    assert "$LEAFKIT_DEVICE" in doc and "CUDA" in doc and "CPU" in doc
    for routine in (leafkit.train, leafkit.load_mnist):
        assert "default_device" in routine.__doc__


def test_records_are_computed_once_per_key_and_an_unreadable_file_again(cache_tmp):
    calls = []

    def compute():
        calls.append(1)
        return [{"value": 0.1 + 0.2, "name": "a"}]

    x = torch.arange(6.0)
    first = cache.cached_records("demo", {"what": "sum"}, [x], compute)
    assert cache.cached_records("demo", {"what": "sum"}, [x.clone()], compute) == first
    assert len(calls) == 1 and first[0]["value"] == 0.1 + 0.2  # floats come back exactly
    cache.cached_records("demo", {"what": "sum"}, [x + 1e-6], compute)  # other tensor bytes
    cache.cached_records("demo", {"what": "mean"}, [x], compute)  # another config
    assert len(calls) == 3
    (path,) = [p for p in (cache_tmp / "demo").glob("*.json")
               if p.stem == cache.records_key({"what": "sum"}, [x])]
    path.write_text('{"format": 1, "records": [trunc')  # a file cut short
    assert cache.cached_records("demo", {"what": "sum"}, [x], compute) == first
    assert len(calls) == 4
    assert not list((cache_tmp / "demo").glob("*.tmp"))


def test_the_source_fingerprint_changes_with_any_module_and_only_with_modules(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    seen = {cache._source_fingerprint(tmp_path)}
    (tmp_path / "notes.txt").write_text("not code")
    assert cache._source_fingerprint(tmp_path) in seen  # only *.py files count
    for change in (lambda: (tmp_path / "a.py").write_text("x = 3\n"),
                   lambda: (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py"),
                   lambda: (tmp_path / "d.py").write_text("")):
        change()
        seen.add(cache._source_fingerprint(tmp_path))
    assert len(seen) == 4
    assert cache.code_fingerprint() == cache._source_fingerprint(Path(leafkit.__file__).parent)
