"""Published checkpoints (leafkit.published): fetched only on an exact key and sha256 match, from
a file:// folder written by write_index; every failure falls back to training, with one line."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import train_tiny

import leafkit
from leafkit import published


@pytest.fixture
def publish(tmp_path, monkeypatch, capsys):
    """Train the tiny run in one cache, publish that cache to a folder, and point
    ``LEAFKIT_CHECKPOINTS`` at the folder with a fresh, empty cache: ``(folder, trained run)``."""
    monkeypatch.setenv("LEAFKIT_CACHE", str(tmp_path / "trainer"))
    monkeypatch.setenv("LEAFKIT_CHECKPOINTS", "off")
    trained = train_tiny()
    folder = tmp_path / "release"
    index = published.write_index(tmp_path / "trainer" / "checkpoints", folder)
    assert list(index["checkpoints"]) == [trained.config.key()]
    monkeypatch.setenv("LEAFKIT_CACHE", str(tmp_path / "reader"))
    monkeypatch.setenv("LEAFKIT_CHECKPOINTS", folder.as_uri())
    monkeypatch.setattr(published, "_indices", {})
    capsys.readouterr()
    return folder, trained


def same_weights(a, b) -> bool:
    return all(torch.equal(a.checkpoints[s][k], b.checkpoints[s][k])
               for s in a.checkpoints for k in a.checkpoints[s])


def test_a_published_run_is_fetched_not_trained(publish, capsys):
    folder, trained = publish
    got = train_tiny()
    assert got.from_cache and same_weights(got, trained)
    assert "fetched the published checkpoint" in capsys.readouterr().out
    assert leafkit.training.checkpoint_path(got.config).exists()  # now in the reader's cache


def test_a_flipped_byte_fails_the_sha256_and_the_run_trains(publish, capsys):
    folder, trained = publish
    (entry,) = json.loads((folder / "index.json").read_text())["checkpoints"].values()
    blob = bytearray((folder / entry["file"]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / entry["file"]).write_bytes(bytes(blob))
    got = train_tiny()
    out = capsys.readouterr().out
    assert not got.from_cache and same_weights(got, trained)  # trained again, same seed
    assert "not the index's" in out and "training here" in out
    assert not list(leafkit.cache_dir("checkpoints").glob("*.download"))


def test_another_configuration_is_not_in_the_index(publish, capsys):
    got = train_tiny(steps=5)
    assert not got.from_cache
    assert "no published checkpoint for this configuration" in capsys.readouterr().out


def test_a_file_that_passes_its_sha256_but_not_the_checks_is_refused(publish, tmp_path, capsys):
    """An index entry of this key whose file (correct sha256) holds another run."""
    folder, trained = publish
    other = train_tiny(steps=5, cache=False)
    wrong = tmp_path / "wrong.pt"
    leafkit.training.save_checkpoint(wrong, other)
    index = json.loads((folder / "index.json").read_text())
    entry = index["checkpoints"][trained.config.key()]
    (folder / entry["file"]).write_bytes(wrong.read_bytes())
    entry.update(bytes=wrong.stat().st_size, sha256=published.file_sha256(wrong))
    (folder / "index.json").write_text(json.dumps(index))
    got = train_tiny()
    assert not got.from_cache and same_weights(got, trained)
    assert "refused the published checkpoint" in capsys.readouterr().out


def test_no_index_means_training_with_one_line(tmp_path, monkeypatch, capsys, cache_tmp):
    monkeypatch.setenv("LEAFKIT_CHECKPOINTS", (tmp_path / "nowhere").as_uri())
    monkeypatch.setattr(published, "_indices", {})
    assert not train_tiny().from_cache
    assert not train_tiny(steps=5).from_cache
    lines = [line for line in capsys.readouterr().out.splitlines() if "published" in line]
    assert len(lines) == 1 and "training here" in lines[0]  # the index is tried once a process


def test_off_never_reaches_for_the_network(monkeypatch, cache_tmp):
    monkeypatch.setenv("LEAFKIT_CHECKPOINTS", "off")

    def no_network(url):
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(published, "_get", no_network)
    assert published.checkpoints_url() is None
    assert not train_tiny().from_cache


def test_the_default_is_the_release_folder(monkeypatch):
    monkeypatch.delenv("LEAFKIT_CHECKPOINTS", raising=False)
    assert published.checkpoints_url() == published.DEFAULT_URL
    monkeypatch.setenv("LEAFKIT_CHECKPOINTS", "file:///somewhere/")
    assert published.checkpoints_url() == "file:///somewhere"


def test_fetch_all_fills_the_cache_and_skips_bad_names(publish, capsys):
    folder, trained = publish
    index = json.loads((folder / "index.json").read_text())
    index["checkpoints"]["x" * 64] = {"file": "../outside.pt", "bytes": 1, "sha256": "0" * 64}
    (folder / "index.json").write_text(json.dumps(index))
    fetched = published.fetch_all()
    assert [p.name for p in fetched] == [leafkit.training.checkpoint_path(trained.config).name]
    assert "not a checkpoint file name" in capsys.readouterr().out
    assert published.fetch_all() == []  # already there
    assert train_tiny().from_cache


def test_write_index_skips_what_is_not_a_leafkit_checkpoint(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"format": -1}, src / "other.pt")
    assert published.write_index(src, tmp_path / "out")["checkpoints"] == {}
    assert json.loads((tmp_path / "out" / "index.json").read_text())["format"] == 1


def test_the_command_line(publish, tmp_path, capsys):
    folder, _ = publish
    assert published._main(["fetch"]) == 0
    assert "1 published checkpoints fetched" in capsys.readouterr().out
    assert published._main(["index", str(folder), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "index.json").exists()
    assert published._main([]) == 2


def test_binder_postbuild_fills_the_cache(publish, tmp_path):
    """binder/postBuild, run as repo2docker runs it (bash, from the repository root), loads the
    data and fetches every published checkpoint into the image's cache."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    folder, trained = publish
    root = Path(__file__).resolve().parent.parent
    script = root / "binder" / "postBuild"
    assert os.access(script, os.X_OK), "repo2docker runs postBuild only when it is executable"
    env = {**os.environ, "LEAFKIT_DATA": "offline",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 published checkpoints fetched" in done.stdout
    assert (tmp_path / "reader" / "checkpoints" /
            leafkit.training.checkpoint_path(trained.config).name).exists()
