"""Both sides of the second-order KL expansions (3.1) and (3.2), along one direction.

Moving the parameters by ``e u`` changes the model's distribution by
``KL = e^2 u^T F(x, w) u / 2 + O(e^3)`` (eq. 3.1, the local Fisher matrix); moving the input by
``e v`` changes it by ``KL = e^2 v^T G(x, w) v / 2 + O(e^3)`` (eq. 3.2, the local data matrix).
The paper prints both without the factor 1/2; the functions here return the exact KL and the
quadratic term side by side so that a chapter can show the ratio tend to 1/2.

Paper: eq. (3.1)-(3.2), eq. (2.4)-(2.5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from .checks import _scores, check_batch, eval_mode, quiet_forward_mode
from .geometry import (_flat_parameters, kl_from_scores, log_prob_jacobian_from_scores,
                       score_jacobian)

__all__ = ["kl_second_order", "parameter_kl_second_order"]


def kl_second_order(model: nn.Module, x: Tensor, v: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Both sides of eq. (3.2) along a direction: ``KL(p(x + e v) || p(x))`` and ``e^2 v^T G v``.

    The KL comes from :func:`leafkit.geometry.kl_from_scores` (from the scores, no cancellation);
    ``v^T G v = sum_i p_i (g_i . v)^2`` from the Jacobian, without forming ``G``. All ``B x E``
    displaced inputs go through the model in one batch. Use a float64 model for small ``e``.

    Args:
        model: a classifier returning ``(B, C)``; it runs in eval mode (its modes are restored).
        x: inputs ``(B, *input_shape)``.
        v: directions, the shape of ``x``.
        eps: ``(E,)`` step lengths.

    Returns:
        ``(kl, quad)``, both ``(B, E)`` float64. To second order ``kl = quad / 2``.

    Paper: eq. (3.2) (which drops the factor 1/2), eq. (2.5).
    """
    check_batch(x)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1)
    B, E = x.shape[0], eps.numel()
    Js, s = score_jacobian(model, x)  # checks x and the model; runs it in eval mode
    J, log_p = log_prob_jacobian_from_scores(Js, s)
    vGv = (log_p.exp() * (J @ v.reshape(B, -1, 1)).squeeze(-1).square()).sum(1)
    moved = (x.unsqueeze(1) + eps.view(1, E, *[1] * (x.dim() - 1)) * v.unsqueeze(1))
    with eval_mode(model), torch.no_grad():
        s1 = _scores(model, moved.reshape(B * E, *x.shape[1:]))
    kl = kl_from_scores(s1, s.repeat_interleave(E, 0)).view(B, E)
    return kl, (eps.square().view(1, E) * vGv.view(B, 1)).double()


def parameter_kl_second_order(model: nn.Module, x: Tensor, u: Tensor,
                              eps: Tensor) -> tuple[Tensor, Tensor]:
    """Both sides of eq. (3.1): ``KL(p(y|x, w + e u) || p(y|x, w))`` and ``e^2 u^T F(x, w) u``.

    ``u^T F u = sum_i p_i (d/de log p_i)^2`` by one forward-mode product in ``w`` (no ``d x d``
    matrix). The KL compares the scores ``s(x, w + e u)`` of every step length, computed in one
    batched call (``functional_call`` mapped over the ``E`` moved parameter vectors), with
    ``s(x, w)`` by :func:`leafkit.geometry.kl_from_scores` (no cancellation).

    Args:
        model: a classifier returning ``(B, C)``; it runs in eval mode (its modes are restored).
            All parameters count, in the order of ``named_parameters()``.
        x: inputs ``(B, *input_shape)``.
        u: a parameter direction ``(d,)``.
        eps: ``(E,)`` step lengths.

    Returns:
        ``(kl, quad)``, both ``(B, E)`` float64. To second order ``kl = quad / 2``.

    Paper: eq. (3.1) (which drops the factor 1/2), eq. (2.4).
    """
    check_batch(x)
    w, unflatten = _flat_parameters(model)
    if u.shape != w.shape:
        raise ValueError(f"u must be a flat parameter vector of shape ({w.numel()},), "
                         f"got {tuple(u.shape)}")
    eps = torch.as_tensor(eps, dtype=w.dtype, device=w.device).reshape(-1)
    B, E = x.shape[0], eps.numel()
    x = x.detach()

    def scores(params: Tensor) -> Tensor:
        return functional_call(model, unflatten(params), (x,))

    def log_p(params: Tensor) -> Tensor:
        return torch.log_softmax(scores(params), -1)

    with eval_mode(model), torch.no_grad(), quiet_forward_mode():
        log_p0, dlog_p = jvp(log_p, (w,), (u,))
        s0 = scores(w)  # (B, C)
        s1 = vmap(lambda e: scores(w + e * u))(eps)  # (E, B, C)
    uFu = (log_p0.exp() * dlog_p.square()).sum(1)
    C = s0.shape[1]
    kl = kl_from_scores(s1.reshape(E * B, C), s0.expand(E, B, C).reshape(E * B, C))
    return kl.view(E, B).T, (eps.square().view(1, E) * uFu.view(B, 1)).double()
