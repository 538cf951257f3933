"""A damaged or mismatched checkpoint file is refused on load, naming the file; saving is safe
when two processes write the same checkpoint at once."""

import multiprocessing
import re

import pytest
import torch
from tiny_runs import TINY_MLP, save_at_the_same_time, tiny_data, train_tiny

import leafkit
from leafkit import training


def rewrite(path, change, *, fix_checksum=True):
    """Edit a checkpoint's payload; with ``fix_checksum`` store the checksum of the edited
    tensors, as a run that itself wrote bad weights would have."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    if fix_checksum:
        payload["checksum"] = training.tensor_checksum(payload["checkpoints"])
    torch.save(payload, path)


def refused(path, what):
    """The message every refusal carries: the file, the problem, what to do."""
    return re.escape(f"checkpoint {path} ") + f".*{what}.*delete it to retrain"


def test_a_good_checkpoint_loads_with_its_weights(tiny_checkpoint):
    path, first = tiny_checkpoint
    again = train_tiny()
    assert again.from_cache and sorted(again.checkpoints) == [0, 4]
    for name, value in first.checkpoints[4].items():
        assert torch.equal(value, again.checkpoints[4][name])
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == training.FORMAT_VERSION == 2
    assert re.fullmatch(r"[0-9a-f]{64}", payload["checksum"])


def test_flipped_bytes_in_the_tensor_data_are_refused(tiny_checkpoint):
    path, first = tiny_checkpoint
    blob = bytearray(path.read_bytes())
    weights = first.checkpoints[4]["net.0.weight"].numpy().tobytes()
    at = blob.find(weights)
    assert at > 0, "the weights are stored uncompressed in the file"
    blob[at + 5] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(blob))
    with pytest.raises(leafkit.CheckpointError, match=refused(path, "fails its sha256 checksum")):
        train_tiny()


def test_nan_weights_are_refused(tiny_checkpoint):
    path, _ = tiny_checkpoint
    rewrite(path, lambda p: p["checkpoints"][4]["net.2.bias"].__setitem__(1, float("nan")))
    with pytest.raises(leafkit.CheckpointError,
                       match=refused(path, r"non-finite weights: 1 NaN/inf values in 'net.2.bias' "
                                           r"at step 4")):
        train_tiny()


def test_renamed_or_missing_entries_are_refused_at_load_time(tiny_checkpoint):
    path, _ = tiny_checkpoint
    original = path.read_bytes()
    rewrite(path, lambda p: p["checkpoints"][4].__setitem__(
        "net.0.w", p["checkpoints"][4].pop("net.0.weight")))
    with pytest.raises(leafkit.CheckpointError,
                       match=refused(path, r"does not fit the model .* at step 4: .*"
                                           r"Missing key\(s\).*net.0.weight.*"
                                           r"Unexpected key\(s\).*net.0.w")):
        train_tiny()
    path.write_bytes(original)
    rewrite(path, lambda p: p["checkpoints"][0].pop("net.2.bias"))
    with pytest.raises(leafkit.CheckpointError, match=refused(path, r"at step 0: .*net.2.bias")):
        train_tiny()
    path.write_bytes(original)
    rewrite(path, lambda p: p["checkpoints"][4].pop("net.2.bias"), fix_checksum=False)
    with pytest.raises(leafkit.CheckpointError, match=refused(path, "fails its sha256 checksum")):
        train_tiny()


def test_reshaped_entry_and_missing_step_are_refused(tiny_checkpoint):
    path, _ = tiny_checkpoint
    original = path.read_bytes()
    rewrite(path, lambda p: p["checkpoints"][4].__setitem__("net.2.bias", torch.zeros(4)))
    with pytest.raises(leafkit.CheckpointError,
                       match=refused(path, "size mismatch for net.2.bias")):
        train_tiny()
    path.write_bytes(original)
    rewrite(path, lambda p: p["checkpoints"].pop(0))
    with pytest.raises(leafkit.CheckpointError,
                       match=refused(path, r"does not hold the checkpoint steps \[0, 4\]")):
        train_tiny()


def test_a_file_of_the_previous_format_is_refused(tiny_checkpoint):
    path, _ = tiny_checkpoint
    rewrite(path, lambda p: p.__setitem__("format", 1))
    with pytest.raises(leafkit.CheckpointError,
                       match=refused(path, "has format 1, not leafkit's checkpoint format 2")):
        train_tiny()


def test_a_diverged_run_is_an_error_and_is_not_cached(cache_tmp):
    x, y = tiny_data()
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"training produced non-finite weights: .* the run "
                                         r"diverged: lower lr \(lr=0.01\).*nothing was cached"):
        leafkit.train(TINY_MLP, x, y, steps=4, batch_size=24, progress=False, device="cpu")
    assert not list((cache_tmp / "checkpoints").iterdir())


def test_two_processes_saving_the_same_checkpoint_both_succeed(cache_tmp):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=save_at_the_same_time, args=(str(cache_tmp), barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcome = [results.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert outcome == ["trained", "trained"]  # both trained and saved; neither crashed
    folder = cache_tmp / "checkpoints"
    assert [p.suffix for p in folder.iterdir()] == [".pt"]  # no temporary file left behind
    assert train_tiny().from_cache


def test_a_failed_save_leaves_no_temporary_file(cache_tmp, monkeypatch):
    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train_tiny()
    assert not list((cache_tmp / "checkpoints").iterdir())
