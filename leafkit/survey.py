"""The involutivity survey: Theorem 3.1 checked over architectures, activations and training.

:func:`survey_models` trains small MLPs and CNNs with each activation (cached, about a second
each) and keeps both their initialization and their trained weights; :func:`involutivity_survey`
measures the involutivity residual of every one on the same inputs. ReLU networks give
round-off, smooth activations order one (the Remark after Theorem 3.1).

Paper: Theorem 3.1, eq. (3.4)-(3.11); the Remark (smooth activations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .checks import eval_mode
from .frobenius import involutivity_residual
from .models import MLP, MnistCNN
from .tables import Table
from .training import accuracy, steps_for_epochs, train

__all__ = ["ARCHITECTURES", "SurveyCase", "involutivity_survey", "survey_models"]


@dataclass
class SurveyCase:
    """One network of the involutivity survey.

    Attributes:
        architecture: ``"MLP"`` or ``"CNN"`` (the paper's CNN shape, with max-pool).
        activation: ``relu``, ``tanh``, ``softplus``, ``gelu`` or ``sigmoid``.
        weights: ``"random"`` (initialization) or ``"trained"``.
        model: the network, in eval mode.
        accuracy: its test accuracy, or ``None`` where not measured.
    """

    architecture: str
    activation: str
    weights: str
    model: nn.Module
    accuracy: float | None = None


def _small_mlp(act: str) -> nn.Module:
    return MLP(784, (64, 64), activation_name=act)


def _small_cnn(act: str) -> nn.Module:
    return MnistCNN(channels=(4, 8), hidden=32, activation_name=act)


#: The survey's architectures: name -> activation name -> a fresh network.
ARCHITECTURES: dict[str, Callable[[str], nn.Module]] = {"MLP": _small_mlp, "CNN": _small_cnn}


def survey_models(data, *, architectures: Sequence[str] = ("MLP", "CNN"),
                  activations: Sequence[str] = ("relu", "tanh", "softplus", "gelu", "sigmoid"),
                  epochs: float = 2, lr: float = 0.1, seed: int = 0,
                  progress: bool = False) -> list[SurveyCase]:
    """Small networks for the survey, each at its initialization and after a short training.

    ``MLP``: 784 -> 64 -> 64 -> 10. ``CNN``: the paper's CNN shrunk to 4 and 8 channels and 32
    hidden units (conv, conv, max-pool, fc, fc). Each is trained with plain SGD
    (:func:`leafkit.train`, cached on disk; about one second each on two cores); its ``random``
    version is step 0 of the same run, so both share the initialization.

    Args:
        data: an :class:`~leafkit.data.MNISTData`.
        architectures: keys of ``ARCHITECTURES``.
        activations: activation names.
        epochs: passes over the training images.
        lr: SGD learning rate (larger than the paper's 0.01, so that a few epochs suffice).
        seed: initialization and batch order.
        progress: show training progress bars.

    Returns:
        ``2 * len(architectures) * len(activations)`` cases.
    """
    bad = [a for a in architectures if a not in ARCHITECTURES]
    if bad:
        raise ValueError(f"unknown architectures {bad}; choose from {sorted(ARCHITECTURES)}")
    steps = steps_for_epochs(epochs, len(data.train_x))
    cases = []
    for arch in architectures:
        for act in activations:
            run = train(ARCHITECTURES[arch](act).config, data.train_x, data.train_y, steps=steps,
                        checkpoint_steps=(0,), lr=lr, seed=seed, progress=progress)
            for weights, step in (("random", 0), ("trained", steps)):
                model = run.model(step)
                cases.append(SurveyCase(arch, act, weights, model,
                                        accuracy(model, data.test_x, data.test_y)))
    return cases


def involutivity_survey(cases: Sequence[SurveyCase], x: Tensor, *,
                        dtype: torch.dtype = torch.float64) -> Table:
    """The involutivity residual of every case on the same inputs.

    Args:
        cases: from :func:`survey_models` (or built by hand); each model runs in eval mode (its
            modes are restored).
        x: inputs ``(B, *input_shape)``; for max-pool networks keep them off max-pool ties
            (e.g. add a ``1e-2`` jitter to raw digits).
        dtype: computing precision (each model is deep-copied to it).

    Returns:
        A :class:`Table` with columns ``architecture, activation, weights, test accuracy,
        median residual, max residual``; the hidden column ``residuals`` holds the ``(B,)``
        per-point values.

    Paper: Theorem 3.1, eq. (3.4)-(3.11); the Remark (smooth activations).
    """
    rows = []
    for case in cases:
        with eval_mode(case.model):
            res = involutivity_residual(case.model, x, dtype=dtype).cpu()
        rows.append({"architecture": case.architecture, "activation": case.activation,
                     "weights": case.weights,
                     "test accuracy": float("nan") if case.accuracy is None else case.accuracy,
                     "median residual": res.median().item(), "max residual": res.max().item(),
                     "residuals": res})
    return Table(rows, columns=["architecture", "activation", "weights", "test accuracy",
                                "median residual", "max residual"],
                 formats={"test accuracy": ".2f", "median residual": ".1e",
                          "max residual": ".1e"})
