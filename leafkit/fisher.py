"""The local Fisher matrix ``F(x, w)`` (eq. 2.4): the parameter-space twin of ``G``, for small
models only (``F`` has ``d^2`` entries per sample; the paper's CNN has ``d = 1.2e6``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from .checks import _scores, check_batch, check_model, eval_mode
from .geometry import DEFAULT_MAX_D, _check_dense, _flat_parameters, _weighted_gram

__all__ = ["local_fisher_matrix", "log_prob_parameter_jacobian"]


def log_prob_parameter_jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients in the parameters ``w`` of ``log p_i(x_b, w)``, per sample and class.

    Args:
        model: a classifier returning ``(B, C)``, run in eval mode; all its parameters count, in the
            order of ``model.named_parameters()``.
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(Jw, log_p)``: ``Jw`` of shape ``(B, C, d)`` with ``Jw[b, i] = grad_w log p_i(x_b, w)``,
        and ``log_p`` of shape ``(B, C)``.

    Paper: eq. (2.4) (the gradients inside the local Fisher matrix).
    """
    check_batch(x)
    check_model(model, x)
    x = x.detach()
    w, unflatten = _flat_parameters(model)

    def log_p_one(v: Tensor, xb: Tensor) -> Tensor:
        return torch.log_softmax(functional_call(model, unflatten(v), (xb.unsqueeze(0),)), -1)[0]

    with eval_mode(model):
        with torch.no_grad():
            log_p = torch.log_softmax(_scores(model, x), dim=1)
        return vmap(jacrev(log_p_one), in_dims=(None, 0))(w, x), log_p


def local_fisher_matrix(model: nn.Module, x: Tensor, *, max_d: int = DEFAULT_MAX_D) -> Tensor:
    """The dense local Fisher matrix ``F(x, w) = E_{y~p}[grad_w log p grad_w log p^T]``.

    For small models only: ``F`` has ``d^2`` entries per sample (the paper's CNN has
    ``d = 1.2e6``).

    Args:
        model: a classifier returning ``(B, C)``, run in eval mode.
        x: inputs ``(B, *input_shape)``.
        max_d: refuse (``ValueError``, before any computation) models with more than ``max_d``
            parameters.

    Returns:
        ``F`` of shape ``(B, d, d)``, ``d`` the number of parameters (order of
        ``model.named_parameters()``).

    Paper: eq. (2.4), Proposition 2.1.
    """
    check_batch(x)
    check_model(model, x)
    _check_dense(sum(p.numel() for p in model.parameters()), max_d, "d", "max_d",
                 "Use a smaller model")
    return _weighted_gram(*log_prob_parameter_jacobian(model, x))
