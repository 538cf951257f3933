import pytest
import torch

import leafkit
from leafkit import training

SMALL = leafkit.MnistCNN(channels=(2, 4), hidden=8).config


@pytest.fixture(scope="module")
def small_data():
    data = leafkit.load_mnist("offline", verbose=False)
    return data.train_x[:240], data.train_y[:240]


def run(small_data, **kwargs):
    options = dict(steps=6, batch_size=60, progress=False, seed=0)
    options.update(kwargs)
    return leafkit.train(SMALL, *small_data, **options)


def test_training_is_seeded_and_deterministic(small_data, cache_tmp):
    a = run(small_data, cache=False)
    b = run(small_data, cache=False)
    for k in a.checkpoints[6]:
        torch.testing.assert_close(a.checkpoints[6][k], b.checkpoints[6][k], rtol=0, atol=0)
    c = run(small_data, cache=False, seed=1)
    assert not torch.equal(a.checkpoints[6]["fc2.weight"], c.checkpoints[6]["fc2.weight"])


def test_training_lowers_the_loss(small_data, cache_tmp):
    x, y = small_data

    def loss(step, model):
        with torch.no_grad():
            return {"loss": torch.nn.functional.cross_entropy(model(x), y)}

    result = run(small_data, steps=40, lr=0.1, hook=loss, hook_every=20, cache=False)
    assert [r["step"] for r in result.log] == [0, 20, 40]
    assert result.log[-1]["loss"] < result.log[0]["loss"]


def test_checkpoints_at_chosen_steps(small_data, cache_tmp):
    result = run(small_data, checkpoint_steps=(0, 3), cache=False)
    assert sorted(result.checkpoints) == [0, 3, 6]
    assert isinstance(result.model(3), leafkit.MnistCNN)
    with pytest.raises(KeyError, match="no checkpoint at step 4"):
        result.model(4)


def test_cache_is_reused(small_data, cache_tmp):
    first = run(small_data)
    second = run(small_data)
    assert not first.from_cache and second.from_cache
    assert len(list((cache_tmp / "checkpoints").glob("*.pt"))) == 1
    for k, v in first.checkpoints[6].items():
        assert torch.equal(v, second.checkpoints[6][k])


def test_changed_setting_does_not_reuse_the_cache(small_data, cache_tmp):
    run(small_data)
    for change in ({"lr": 0.02}, {"seed": 3}, {"steps": 7}, {"batch_size": 30}):
        assert not run(small_data, **change).from_cache, change
    x, y = small_data
    assert not leafkit.train(SMALL, x[:120], y[:120], steps=6, progress=False).from_cache
    assert len(list((cache_tmp / "checkpoints").glob("*.pt"))) == 6


def test_hook_identity_is_part_of_the_key(small_data, cache_tmp):
    run(small_data)
    assert not run(small_data, hook=lambda step, model: {"k": 1.0}, hook_key="probe").from_cache


def test_corrupt_checkpoint_is_rejected(small_data, cache_tmp):
    first = run(small_data)
    path = training.checkpoint_path(first.config)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(leafkit.CheckpointError, match="corrupt or unreadable"):
        run(small_data)


def test_mismatched_checkpoint_is_rejected(small_data, cache_tmp):
    first = run(small_data)
    other = run(small_data, seed=5)
    # a file whose content belongs to another configuration, under this configuration's name
    training.checkpoint_path(other.config).replace(training.checkpoint_path(first.config))
    with pytest.raises(leafkit.CheckpointError, match="another configuration"):
        run(small_data)


def test_reference_run_uses_ten_epochs():
    assert leafkit.steps_for_epochs(10, 60000) == 10000
    assert leafkit.steps_for_epochs(10, 4000) == 667


def test_bad_training_arguments(small_data):
    x, y = small_data
    with pytest.raises(ValueError, match="same non-zero number"):
        leafkit.train(SMALL, x, y[:10], steps=3)
    with pytest.raises(ValueError, match="checkpoint steps within"):
        leafkit.train(SMALL, x, y, steps=3, checkpoint_steps=(5,))
