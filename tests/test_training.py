import functools
import inspect
import types
from pathlib import Path

import pytest
import torch
from tiny_runs import train_tiny

import leafkit
from leafkit import training

SMALL = leafkit.MnistCNN(channels=(2, 4), hidden=8).config


@pytest.fixture(scope="module")
def small_data():
    data = leafkit.load_mnist("offline", verbose=False)
    return data.train_x[:240], data.train_y[:240]


def run(small_data, **kwargs):
    options = {"steps": 6, "batch_size": 60, "progress": False, "seed": 0}
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


def test_reference_run_uses_ten_epochs(monkeypatch):
    assert leafkit.steps_for_epochs(10, 60000) == 10000
    assert leafkit.steps_for_epochs(10, 4000) == 667
    seen = {}
    monkeypatch.setattr(training, "train",
                        lambda config, x, y, **kw: seen.update(kw, config=config))
    for n, steps in ((60000, 10000), (4000, 667)):
        data = types.SimpleNamespace(train_x=torch.zeros(n, 1), train_y=torch.zeros(n))
        training.reference_run(data, progress=False)
        assert seen["steps"] == steps and seen["config"] == leafkit.MnistCNN().config


def test_bad_training_arguments(small_data):
    x, y = small_data
    with pytest.raises(ValueError, match="same non-zero number"):
        leafkit.train(SMALL, x, y[:10], steps=3)
    with pytest.raises(ValueError, match="checkpoint steps within"):
        leafkit.train(SMALL, x, y, steps=3, checkpoint_steps=(5,))


def probe_a(step, model):
    return {"probe": 1.0}


def probe_b(step, model):
    return {"probe": 2.0}


def test_unkeyed_lambdas_and_local_functions_are_refused(cache_tmp):
    def local(step, model):
        return {"probe": 3.0}

    scale = 4.0
    cases = [(lambda step, model: {"probe": 1.0}, "is a lambda"),
             (local, "is a function defined inside a function or a closure"),
             (functools.partial(probe_a), "is a partial, not a module-level function")]
    for hook, kind in cases:
        with pytest.raises(ValueError, match=f"{kind}: leafkit cannot tell two such hooks apart.*"
                                             "Pass hook_key="):
            train_tiny(hook=hook)
    # with a key, or without the cache, they run
    assert train_tiny(hook=lambda step, model: {"probe": scale}, hook_key="probe-4").log[0] == {
        "step": 0, "probe": 4.0}
    assert train_tiny(hook=local, cache=False).log[0]["probe"] == 3.0


def test_different_module_level_hooks_get_different_cache_entries(cache_tmp):
    a = train_tiny(hook=probe_a, hook_every=2)
    b = train_tiny(hook=probe_b, hook_every=2)
    assert not b.from_cache and [r["probe"] for r in b.log] == [2.0, 2.0, 2.0]
    assert train_tiny(hook=probe_a, hook_every=2).log == a.log
    assert a.config.hook.startswith("test_training.probe_a#")


def test_an_edited_hook_gets_a_new_identity():
    """Same module and name, other code: e.g. a constant changed between two sessions."""
    def compile_probe(source):
        namespace = {"__name__": "probes"}
        exec(compile(source, "probes.py", "exec"), namespace)  # noqa: S102 - our own source
        return namespace["probe"]

    one = compile_probe("def probe(step, model):\n    return {'k': 1.0}\n")
    two = compile_probe("def probe(step, model):\n    return {'k': 2.0}\n")
    nested = compile_probe("def probe(step, model):\n    f = lambda: 2.0\n    return {'k': f()}\n")
    ids = {training.hook_identity(h) for h in (one, two, nested)}
    assert len(ids) == 3 and all(i.startswith("probes.probe#") for i in ids)
    assert training.hook_identity(one) == training.hook_identity(compile_probe(
        "def probe(step, model):\n    return {'k': 1.0}\n"))
    assert training.hook_identity(one, "mine") == "mine"


def test_trace_run_keys_its_hook(monkeypatch):
    """trace_run's hook is a closure, refused without a key: trace_run must pass one."""
    calls = []
    monkeypatch.setattr(leafkit.monitoring, "train", lambda *a, **kw: calls.append(kw))
    images = torch.randn(20, 1, 28, 28)
    data = types.SimpleNamespace(train_x=images, train_y=torch.arange(20) % 10, test_x=images,
                                 test_y=torch.arange(20) % 10, source="offline")
    leafkit.trace_run(data, epochs=1, n_images=4)
    (kw,) = calls
    with pytest.raises(ValueError, match="Pass hook_key="):
        training.hook_identity(kw["hook"])
    assert training.hook_identity(kw["hook"], kw["hook_key"]).startswith(
        "leafkit.monitoring.trace_hook(n_images=4")


def test_the_training_environment_is_recorded_but_not_keyed(cache_tmp):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = train_tiny()
        torch.set_num_threads(2)
        again = train_tiny()
    finally:
        torch.set_num_threads(threads)
    cpu = first.environment["cpu"]  # the CPU model, as /proc/cpuinfo names it on Linux
    assert cpu and (not Path("/proc/cpuinfo").exists() or cpu in Path("/proc/cpuinfo").read_text())
    expected = {"torch": str(torch.__version__), "device": "cpu", "threads": 1, "cpu": cpu}
    assert first.environment == expected and not first.from_cache
    assert again.from_cache and again.environment == expected  # same key on 2 threads


def test_train_follows_the_device_rule(cache_tmp, monkeypatch):
    monkeypatch.setenv("LEAFKIT_DEVICE", "cpu")
    assert train_tiny(device=None).environment["device"] == "cpu"
    monkeypatch.setenv("LEAFKIT_DEVICE", "tpu-please")
    with pytest.raises(ValueError, match="LEAFKIT_DEVICE='tpu-please' is not a device"):
        train_tiny(device=None, steps=5)


def test_reference_model_follows_the_data(monkeypatch):
    """On the device of the data, not default_device(): "meta" stands in for a GPU here."""
    result = train_tiny(cache=False)
    monkeypatch.setattr(training, "reference_run", lambda data, **kw: result)
    data = types.SimpleNamespace(train_x=torch.empty(2, 8, device="meta"))
    model = leafkit.reference_model(data)
    assert {p.device.type for p in model.parameters()} == {"meta"} and not model.training


def test_the_training_loop_has_no_device_literals():
    source = inspect.getsource(training)
    assert ".cuda()" not in source
    loop = inspect.getsource(training._run_sgd).split("for step in tqdm")[1]
    assert ".to(device)" not in loop.replace("torch.randperm(n, generator=gen).to(device)", "")


def test_empty_batches_and_a_zero_hook_interval_are_refused(cache_tmp):
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="batch_size must be at least 1 \\(got 0\\)"):
        training.train(leafkit.MLP(4, (5,), 3).config, x, y, steps=2, batch_size=0)
    with pytest.raises(ValueError, match="hook_every at least 1 \\(got 0\\)"):
        training.train(leafkit.MLP(4, (5,), 3).config, x, y, steps=2, hook=len, hook_every=0,
                       cache=False)


def test_numpy_values_in_a_hook_log_are_stored_as_plain_numbers():
    import numpy as np

    logged = training._plain({"a": np.float64(0.5), "b": [np.int64(2), torch.tensor(3.0)],
                              "c": np.arange(2)})
    assert logged == {"a": 0.5, "b": [2, 3.0], "c": [0, 1]}
    assert type(logged["a"]) is float and type(logged["b"][0]) is int
