"""The local Fisher matrix ``F(x, w)`` (eq. 2.4): the parameter-space twin of ``G``, for small
models only (``F`` has ``d^2`` entries per sample; the paper's CNN has ``d = 1.2e6``), and what
``F`` and ``G`` share: both are ``J^T diag(p) J`` for a Jacobian ``J`` of ``log p`` (in ``w`` for
``F``, in ``x`` for ``G``), so :func:`fisher_vector_product` and :func:`score_balance` take either.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from .checks import _scores, check_batch, check_jacobian, check_model, eval_mode
from .geometry import (DEFAULT_MAX_D, _check_dense, _flat_parameters, _log_softmax_by_differences,
                       _weighted_gram)

__all__ = ["fisher_vector_product", "local_fisher_matrix", "log_prob_parameter_jacobian",
           "score_balance"]


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
        out = functional_call(model, unflatten(v), (xb.unsqueeze(0),))
        return _log_softmax_by_differences(out)[0]

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


def fisher_vector_product(J: Tensor, log_p: Tensor, V: Tensor) -> Tensor:
    """``M v = sum_i p_i g_i (g_i^T v)`` for ``M = J^T diag(p) J``, without forming ``M``.

    With ``J`` from :func:`leafkit.log_prob_jacobian` this is ``G v`` (eq. 2.5); with ``J`` from
    :func:`log_prob_parameter_jacobian` it is ``F v`` (eq. 2.4). Costs two ``C x n`` products a
    vector instead of the ``n x n`` matrix.

    Args:
        J: ``(B, C, n)``, rows ``g_i``.
        log_p: ``(B, C)``.
        V: ``(B, n)`` or ``(B, K, n)``, one or ``K`` vectors a sample.

    Returns:
        ``M v``, the shape of ``V``.

    Paper: eqs. (2.4), (2.5); Proposition 2.1 (2): ``M v = 0`` exactly when every ``g_i^T v = 0``.
    """
    check_jacobian(J, log_p)
    if V.dim() not in (2, 3) or V.shape[0] != J.shape[0] or V.shape[-1] != J.shape[-1]:
        raise ValueError(f"V must have shape (B, n) or (B, K, n) with B = {J.shape[0]} and "
                         f"n = {J.shape[-1]}, got {tuple(V.shape)}")
    check_batch(V, "V")
    W = V if V.dim() == 3 else V.unsqueeze(1)
    out = (W @ J.mT * log_p.exp().unsqueeze(1)) @ J  # (B, K, C) weighted, back to (B, K, n)
    return out if V.dim() == 3 else out.squeeze(1)


def score_balance(J: Tensor, log_p: Tensor) -> Tensor:
    """How far the expected score is from zero: ``|sum_i p_i g_i| / sum_i |p_i g_i|``.

    ``sum_i p_i g_i = grad sum_i p_i = 0`` (eq. 2.9, the classical "expected score vanishes"), so
    this is rounding error, relative to the size of the terms it cancels.

    Args:
        J: ``(B, C, n)``, rows ``g_i`` (in ``x`` or in ``w``).
        log_p: ``(B, C)``.

    Returns:
        ``(B,)`` relative norms; ``0`` in exact arithmetic.

    Paper: eq. (2.9), Proposition 2.1 (3).
    """
    check_jacobian(J, log_p)
    terms = log_p.exp().unsqueeze(-1) * J
    return terms.sum(1).norm(dim=-1) / terms.norm(dim=-1).sum(1)
