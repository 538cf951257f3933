"""Linear regions of ReLU / max-pool networks, and the angles between the subspaces ``D_x``.

Inside one linear region a ReLU network is an affine map ``s = A x + b``: its distribution ``D_x``
(the row space of the Jacobian) does not move, and the leaves there are flat. The functions here
find the region of each input (:func:`activation_patterns`), count the max-pool ties where the
network is not differentiable (:func:`count_maxpool_ties`), and measure how far ``D_x`` turns
along a straight line (:func:`principal_angles`, :func:`tangent_angles_along`).

Paper: Section 3 (Theorem 3.1 and the Remark after it), eq. (3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .checks import _scores, check_batch, eval_mode
from .geometry import log_prob_jacobian
from .projection import tangent_basis

__all__ = ["activation_patterns", "count_maxpool_ties", "principal_angles",
           "tangent_angles_along"]


def _forward_with_hooks(model: nn.Module, x: Tensor,
                        hooks: Sequence[tuple[nn.Module, Callable[..., None]]]) -> None:
    """One forward pass of ``model`` on ``x`` in eval mode, without gradients, with each
    ``(module, hook)`` registered as a forward hook for the pass only."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with eval_mode(model), torch.no_grad():
            _scores(model, x)
    finally:
        for h in handles:
            h.remove()


def count_maxpool_ties(model: nn.Module, x: Tensor) -> Tensor:
    """How many max-pool windows of each sample hold their largest value twice or more.

    At such a tie the network is not differentiable: the max switches input under an arbitrarily
    small move, and autograd silently picks one side. Windows whose maximum is 0 are not counted:
    after a ReLU they are flat (every entry is a switched-off unit), so the choice is harmless.

    Args:
        model: a network with :class:`torch.nn.MaxPool2d` layers (no padding, no dilation),
            run in eval mode (its modes are restored).
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(B,)`` integer counts, summed over all max-pool layers (and calls).

    Paper: eq. (3.2) (the expansion needs a differentiable model).
    """
    check_batch(x)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    if not pools:
        raise ValueError("the model has no nn.MaxPool2d layer")
    counts: list[Tensor] = []

    def hook(module: nn.MaxPool2d, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        if module.padding not in (0, (0, 0)) or module.dilation not in (1, (1, 1)):
            raise ValueError("count_maxpool_ties supports max-pooling without padding or dilation")
        z = inputs[0]
        win = nn.functional.unfold(z.flatten(0, 1).unsqueeze(1), module.kernel_size,
                                   stride=module.stride)  # (B*ch, k*k, windows)
        top = win.amax(1, keepdim=True)
        tied = ((win == top).sum(1) > 1) & (top.squeeze(1) != 0)
        counts.append(tied.view(z.shape[0], -1).sum(1))

    _forward_with_hooks(model, x, [(p, hook) for p in pools])
    return torch.stack(counts).sum(0)


def principal_angles(Q1: Tensor, Q2: Tensor) -> Tensor:
    """Principal angles between the column spaces of two batches of orthonormal bases.

    Computed from the sines (singular values of ``(I - Q1 Q1^T) Q2``), which stay accurate for
    tiny angles, where ``arccos`` of the cosines loses half the digits.

    Args:
        Q1: ``(B, n, k1)`` orthonormal columns.
        Q2: ``(B, n, k2)`` orthonormal columns, ``k2 <= k1`` (else the two are swapped).

    Returns:
        ``(B, min(k1, k2))`` angles in radians, ascending. All zero iff one space contains the
        other.

    Paper: Section 3 (inside a linear region of a ReLU net, ``D_x`` is a fixed subspace).
    """
    if Q1.dim() != 3 or Q2.dim() != 3 or Q1.shape[:2] != Q2.shape[:2]:
        raise ValueError(f"Q1 and Q2 must be (B, n, k) with the same B and n, got "
                         f"{tuple(Q1.shape)} and {tuple(Q2.shape)}")
    if Q2.shape[-1] > Q1.shape[-1]:
        Q1, Q2 = Q2, Q1
    outside = Q2 - Q1 @ (Q1.mT @ Q2)
    sines = torch.linalg.svdvals(outside).clamp(max=1.0)
    return torch.arcsin(sines).flip(-1)


def activation_patterns(model: nn.Module, x: Tensor) -> Tensor:
    """The linear region of a ReLU / max-pool network at each input, as a boolean code.

    Records which units every :class:`torch.nn.ReLU` module switches on (1 or 0) and which entry
    wins each window of every :class:`torch.nn.MaxPool2d` (its flat index). Two inputs with equal
    codes lie in the same linear region, where the scores are one affine map ``s = A x + b``.

    Args:
        model: a network with ReLU and/or max-pool modules, run in eval mode (its modes are
            restored).
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(B, P)`` integer codes.
    """
    check_batch(x)
    codes: list[Tensor] = []

    def relu_hook(_m: nn.Module, _inputs: tuple[Tensor, ...], out: Tensor) -> None:
        codes.append((out > 0).flatten(1).long())

    def pool_hook(m: nn.MaxPool2d, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        _, winner = nn.functional.max_pool2d(inputs[0], m.kernel_size, m.stride, m.padding,
                                             m.dilation, m.ceil_mode, return_indices=True)
        codes.append(winner.flatten(1))

    hooks = [(m, relu_hook if isinstance(m, nn.ReLU) else pool_hook)
             for m in model.modules() if isinstance(m, (nn.ReLU, nn.MaxPool2d))]
    if not hooks:
        raise ValueError("the model has no nn.ReLU or nn.MaxPool2d module: no linear regions")
    _forward_with_hooks(model, x, hooks)
    return torch.cat(codes, 1)


def tangent_angles_along(model: nn.Module, x: Tensor, direction: Tensor,
                         radii: Tensor | Sequence[float]) -> tuple[Tensor, Tensor | None]:
    """The largest principal angle between ``D_x`` and ``D_{x + r d}`` for several distances ``r``.

    All ``B (R + 1)`` points share one Jacobian call; bases come from
    :func:`leafkit.projection.tangent_basis` (QR of ``C - 1`` rows of ``J``).

    Args:
        model: a classifier returning ``(B, C)``, run in eval mode (its modes are restored).
        x: inputs ``(B, *input_shape)``.
        direction: unit directions, the shape of ``x``.
        radii: ``(R,)`` distances.

    Returns:
        ``(angles, same_region)``: ``angles`` ``(B, R)`` in radians; ``same_region`` ``(B, R)``
        booleans from :func:`activation_patterns` (``x + r d`` in the linear region of ``x``),
        or ``None`` for a model without ReLU or max-pool modules.

    Paper: Section 3 (the leaves of a ReLU net are flat inside a linear region).
    """
    check_batch(x)
    if direction.shape != x.shape:
        raise ValueError(f"direction must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(direction.shape)}")
    radii = torch.as_tensor(radii, dtype=x.dtype, device=x.device).reshape(-1)
    B, R = x.shape[0], radii.numel()
    moved = x.unsqueeze(1) + radii.view(1, R, *[1] * (x.dim() - 1)) * direction.unsqueeze(1)
    points = torch.cat([x.unsqueeze(1), moved], 1).reshape(B * (R + 1), *x.shape[1:])
    with eval_mode(model):
        J, log_p = log_prob_jacobian(model, points)
    Q = tangent_basis(J, log_p).view(B, R + 1, *J.shape[2:3], -1)
    Q0 = Q[:, :1].expand(B, R, *Q.shape[2:])
    angles = principal_angles(Q0.reshape(B * R, *Q.shape[2:]),
                              Q[:, 1:].reshape(B * R, *Q.shape[2:])).amax(-1).view(B, R)
    if not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in model.modules()):
        return angles, None
    codes = activation_patterns(model, points).view(B, R + 1, -1)
    return angles, (codes[:, 1:] == codes[:, :1]).all(-1)
