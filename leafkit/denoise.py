"""Denoising by returning to the data leaf, beside plain filters, with MSE and PSNR.

Noise added along ``ker G`` (a path across leaves, Section 4.2) is invisible to the model. Two
ways back are tried here:

* :func:`kernel_pull`: move toward a guess of the clean image (a blurred copy) along ``ker G``
  only, so the prediction is kept while the image changes where the model does not look;
* the vertical path reversed (the noise direction walked backwards), which needs the noise
  direction and is therefore an oracle: :func:`leafkit.paths.vertical_path` with ``-u0``.

A third idea, descending ``Tr G`` along ``ker G``, cannot move at all on a ReLU network:
:func:`trace_gradient_kernel_share` measures why (the gradient of ``Tr G`` lies in ``D_x``).

Images are compared in pixel intensities (``[0, 1]``, :func:`leafkit.data.denormalize`).

Paper: Section 4.2, Figure 6 (noise persists along horizontal paths), eq. (4.1); beyond the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import _scores, check_batch, check_model, eval_mode
from .geometry import _log_softmax_by_differences, log_prob_jacobian_from_scores
from .jacobian import _score_jacobian
from .projection import _project_tangent, _tangent_basis

__all__ = ["best_blur", "gaussian_blur", "kernel_pull", "median_filter", "mse", "psnr",
           "trace_gradient_kernel_share"]


def mse(x: Tensor, ref: Tensor) -> Tensor:
    """Mean squared error per sample, `(B,)`, between batches of one shape."""
    _check_pair(x, ref)
    return (x - ref).double().square().flatten(1).mean(1)


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per sample in dB: ``10 log10(data_range^2 / MSE)``, `(B,)`
    (``inf`` for identical images)."""
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    return 10 * torch.log10(data_range**2 / mse(x, ref))


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur of images `(B, ch, H, W)` with standard deviation ``sigma``
    pixels, radius ``ceil(3 sigma)``, edges replicated; ``sigma = 0`` returns a copy."""
    _check_images(x)
    if not sigma >= 0:
        raise ValueError(f"sigma must be non-negative, got {sigma!r}")
    if sigma == 0:
        return x.clone()
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    ch = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(ch, 1, 1, -1), groups=ch)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(ch, 1, -1, 1), groups=ch)


def median_filter(x: Tensor, size: int = 3) -> Tensor:
    """A ``size x size`` median filter of images `(B, ch, H, W)`, edges replicated (odd size)."""
    _check_images(x)
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    r = size // 2
    B, ch, H, W = x.shape
    y = F.pad(x, (r, r, r, r), mode="replicate")
    patches = F.unfold(y, size)  # (B, ch * size^2, H * W)
    return patches.view(B, ch, size * size, H * W).median(2).values.view(B, ch, H, W)


def best_blur(noisy: Tensor, clean: Tensor, sigmas: Sequence[float]) -> tuple[float, Tensor]:
    """The Gaussian blur of ``noisy`` whose width, among ``sigmas``, gives the lowest mean MSE to
    ``clean``: an oracle choice (it looks at the clean images), so a generous baseline.

    Returns:
        ``(sigma, blurred)``.
    """
    _check_pair(noisy, clean)
    if len(sigmas) == 0:
        raise ValueError("sigmas is empty")
    errors = [float(mse(gaussian_blur(noisy, s), clean).mean()) for s in sigmas]
    best = float(sigmas[min(range(len(sigmas)), key=errors.__getitem__)])
    return best, gaussian_blur(noisy, best)


def kernel_pull(model: nn.Module, x: Tensor, target: Tensor, *, step_size: float = 1.0,
                steps: int = 20, bounds: tuple[float, float] | None = None) -> Tensor:
    """Move ``x`` toward ``target`` along ``ker G`` only, keeping the model's prediction.

    ``x_t = x_{t-1} + min(alpha, ||v||) v / ||v||`` with ``v = P_ker(x_{t-1}) (target - x_{t-1})``
    (:func:`leafkit.projection.project_kernel`), clamped to ``bounds`` after each step. Where
    ``ker G`` does not change (a linear model, one linear region of a ReLU net) the path ends at
    ``x + P_ker (target - x)``, once ``steps * alpha`` covers that length, and ``p`` never moves.

    Args:
        model: a classifier returning scores `(B, C)`.
        x: `(B, *input_shape)` starting (noisy) images.
        target: `(B, *input_shape)` the guesses to move toward (e.g. a blurred copy).
        step_size: ``alpha``, the longest step.
        steps: the number of steps (one Jacobian of the batch each).
        bounds: ``(lo, hi)`` to clamp to, or ``None``.

    Returns:
        `(B, *input_shape)` the end points.

    Paper: Proposition 2.1 (``ker G``), Section 4.2; beyond the paper.
    """
    check_batch(x)
    check_batch(target, "target")
    if target.shape != x.shape:
        raise ValueError(f"target must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(target.shape)}")
    check_model(model, x)
    if not (isinstance(step_size, (int, float)) and 0 < step_size < math.inf):
        raise ValueError(f"step_size must be a finite positive number, got {step_size!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    B = x.shape[0]
    xt = x.detach().clone()
    goal = target.detach().reshape(B, -1)
    with eval_mode(model):
        _scores(model, xt.detach())
        for _ in range(steps):
            J, log_p = log_prob_jacobian_from_scores(*_score_jacobian(model, xt))
            d = goal - xt.reshape(B, -1)
            v = d - _project_tangent(_tangent_basis(J, log_p), d)
            vn = v.norm(dim=1, keepdim=True)
            scale = torch.where(vn > 0, vn.clamp(max=step_size) / vn.clamp_min(1e-30),
                                torch.zeros_like(vn))
            xt = (xt.reshape(B, -1) + scale * v).view_as(x)
            if bounds is not None:
                xt = xt.clamp(*bounds)
    return xt.detach()


def trace_gradient_kernel_share(model: nn.Module, x: Tensor) -> Tensor:
    """``||P_ker grad_x Tr G|| / ||grad_x Tr G||``: how much of the gradient of ``Tr G`` could a
    descent along ``ker G`` use.

    For a network whose scores are piecewise linear (ReLU, max-pool), ``g_i = sum_k (delta_ik -
    p_k) grad s_k`` with ``grad s_k`` constant on a linear region, so ``Tr G`` (eq. 4.1) depends on
    ``x`` only through ``p``, and ``grad p_k = p_k g_k`` lies in ``D_x``: the ratio is zero up to
    rounding, and descending ``Tr G`` along ``ker G`` does not move. For smooth activations it is
    not. Two backward passes deep (double backward through the model).

    Args:
        model: a classifier returning scores `(B, C)`.
        x: `(B, *input_shape)`.

    Returns:
        `(B,)` ratios in ``[0, 1]`` (``nan`` where the gradient is zero).

    Paper: eq. (3.6)-(3.10) (Hessians of a ReLU network), eq. (4.1).
    """
    check_batch(x)
    check_model(model, x)
    B = x.shape[0]
    with eval_mode(model):
        xg = x.detach().requires_grad_()
        with torch.enable_grad():
            log_p = _log_softmax_by_differences(_scores(model, xg))
            C = log_p.shape[1]
            rows = [torch.autograd.grad(log_p[:, k].sum(), xg, create_graph=True)[0].reshape(B, -1)
                    for k in range(C)]
            J = torch.stack(rows, 1)
            trace = (log_p.exp() * J.square().sum(-1)).sum()
            (grad,) = torch.autograd.grad(trace, xg)
    grad, J, log_p = grad.reshape(B, -1), J.detach(), log_p.detach()
    ker = grad - _project_tangent(_tangent_basis(J, log_p), grad)
    return ker.norm(dim=1) / grad.norm(dim=1)


def _check_pair(x: Tensor, ref: Tensor) -> None:
    check_batch(x)
    check_batch(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have one shape, got {tuple(x.shape)} and "
                         f"{tuple(ref.shape)}")


def _check_images(x: Tensor) -> None:
    check_batch(x)
    if x.dim() != 4:
        raise ValueError(f"images must have shape (B, channels, H, W), got {tuple(x.shape)}")
