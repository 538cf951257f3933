"""The networks of the paper and of the theory chapters.

All models return raw scores ``s(x, w)`` of shape ``(B, C)``; leafkit applies ``log_softmax`` itself
(eq. 2.2), so a model returning log-probabilities works just as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "MnistCNN", "activation", "build_model"]

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
    raise ValueError(f"unknown architecture {arch!r}; known: 'mnist_cnn', 'mlp'")
