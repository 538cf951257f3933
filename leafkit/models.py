"""The networks of the paper and of the theory chapters.

All models return raw scores ``s(x, w)`` of shape ``(B, C)``; leafkit applies ``log_softmax`` itself
(eq. 2.2), so a model returning log-probabilities works just as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "CIFAR_MEAN", "CIFAR_STD", "MLP", "KerasCifarCNN", "MnistCNN", "VGG11BN",
           "activation", "build_model"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name: one of ``relu, tanh, softplus, gelu, sigmoid``."""
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class MnistCNN(nn.Module):
    """The MNIST CNN of the paper's experiments (Section 4), as the authors' code has it.

    conv 1→32 (3x3), act, conv 32→64 (3x3), act, max-pool 2, flatten (9216), fc 9216→128, act,
    fc 128→10. No dropout by default: the authors' code has none, although the design card calls
    the model "the PyTorch MNIST example", which has two dropout layers. ``dropout=True`` adds
    them as that example has them (p = 0.25 after the pooling, 0.5 after fc1); they act only in
    training, so in eval mode the network is the same function of its weights.

    ``channels`` and ``hidden`` shrink it for fast theory checks; ``activation`` swaps ReLU for a
    smooth function (which breaks the hypothesis of Theorem 3.1).
    """

    def __init__(self, channels: Sequence[int] = (32, 64), hidden: int = 128,
                 num_classes: int = 10, activation_name: str = "relu", dropout: bool = False):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3)
        self.conv2 = nn.Conv2d(c1, c2, 3)
        self.act = activation(activation_name)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 12 * 12, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.drop1 = nn.Dropout(0.25) if dropout else nn.Identity()
        self.drop2 = nn.Dropout(0.5) if dropout else nn.Identity()
        self.config = {"arch": "mnist_cnn", "channels": [c1, c2], "hidden": hidden,
                       "num_classes": num_classes, "activation": activation_name}
        if dropout:  # only then, so the cache keys of the dropout-free models stay as they were
            self.config["dropout"] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"MnistCNN expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        x = self.act(self.conv1(x))
        x = self.drop1(self.pool(self.act(self.conv2(x))))
        x = self.drop2(self.act(self.fc1(x.flatten(1))))
        return self.fc2(x)


class MLP(nn.Module):
    """A plain fully connected classifier ``in_features → hidden... → num_classes``.

    Inputs of any shape ``(B, ...)`` are flattened. Used by the theory chapters, where the activation
    decides whether the distribution ``D`` is involutive (Theorem 3.1 and the Remark).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 64), num_classes: int = 10,
                 activation_name: str = "relu"):
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation(activation_name)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.config = {"arch": "mlp", "in_features": in_features, "hidden": list(hidden),
                       "num_classes": num_classes, "activation": activation_name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got {x.shape[1]}")
        return self.net(x)


#: CIFAR-10 channel means and standard deviations of the training images (in [0, 1] units).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channels in units of ``width``


class VGG11BN(nn.Module):
    """VGG-11 with batch norm for 3x32x32 CIFAR-10 images, the network of the paper's Appendix A.

    Eight 3x3 convolutions (padding 1), each followed by BatchNorm and ReLU, with channels
    64, [pool], 128, [pool], 256, 256, [pool], 512, 512, [pool], 512, 512, [pool] (max-pool 2),
    then one linear layer 512 -> 10 (the usual CIFAR variant of VGG: the feature map is 1x1).
    Inputs are RGB intensities in ``[0, 1]``, ``(B, 3, 32, 32)``; the network standardizes them
    itself with the CIFAR-10 channel statistics, so it shares its input units with
    :class:`KerasCifarCNN`. ``width`` scales every channel count (64 = the paper's size; small
    values for tests). In eval mode BatchNorm is affine, so the scores are piecewise linear in
    the input, as Theorem 3.1 needs.
    """

    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = int(item) * width
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out),
                           nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)
        self.config = {"arch": "vgg11_bn", "width": width, "num_classes": num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_cifar_shape(type(self).__name__, x)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.classifier(self.features(x).flatten(1))


class KerasCifarCNN(nn.Module):
    """The Keras CIFAR-10 CNN shipped in the ``cifar-10-model`` wheel, rebuilt in torch.

    Six 3x3 valid convolutions with channels 64, 64, [max-pool 2], 128, 128, [max-pool 2], 64,
    64, each followed by ReLU and then BatchNorm (epsilon 1e-3); the 1x1x64 feature map is
    flattened into Dense 64 -> 1024 -> 512 -> 10, each followed by ReLU, the last one included:
    the scores pass through a ReLU, so a class whose logit is clamped at 0 has a zero score
    gradient. Dropout 0.2 between the dense layers (active only in training mode). Keras fed it
    raw RGB values in ``0..255``; this module takes intensities in ``[0, 1]``, ``(B, 3, 32, 32)``,
    and multiplies by 255 first. Weights come from :func:`leafkit.cifar.keras_cifar_cnn`.
    """

    def __init__(self):
        super().__init__()
        convs, channels = [], 3
        for out in (64, 64, "M", 128, 128, "M", 64, 64):
            if out == "M":
                convs.append(nn.MaxPool2d(2))
                continue
            convs += [nn.Conv2d(channels, out, 3), nn.ReLU(), nn.BatchNorm2d(out, eps=1e-3)]
            channels = out
        self.features = nn.Sequential(*convs)
        self.classifier = nn.Sequential(
            nn.Linear(64, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 512), nn.ReLU(),
            nn.Dropout(0.2), nn.Linear(512, 10), nn.ReLU())
        self.config = {"arch": "keras_cifar_cnn"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_cifar_shape(type(self).__name__, x)
        return self.classifier(self.features(x * 255.0).flatten(1))


def _check_cifar_shape(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1:] != (3, 32, 32):
        raise ValueError(f"{name} expects images of shape (B, 3, 32, 32), got {tuple(x.shape)}")


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``.config`` dictionary (used when loading checkpoints)."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch == "mnist_cnn":
        return MnistCNN(channels=cfg["channels"], hidden=cfg["hidden"],
                        num_classes=cfg["num_classes"], activation_name=cfg["activation"],
                        dropout=cfg.get("dropout", False))
    if arch == "mlp":
        return MLP(cfg["in_features"], cfg["hidden"], cfg["num_classes"], cfg["activation"])
    if arch == "vgg11_bn":
        return VGG11BN(width=cfg["width"], num_classes=cfg["num_classes"])
    if arch == "keras_cifar_cnn":
        return KerasCifarCNN()
    raise ValueError(f"unknown architecture {arch!r}; known: 'mnist_cnn', 'mlp', 'vgg11_bn', "
                     f"'keras_cifar_cnn'")
