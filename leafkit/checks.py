"""Checks at leafkit's public boundary: batches, models, model outputs and factored Jacobians are
validated once, with errors that name the problem; and :func:`eval_mode`, under which every
routine that differentiates a model runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["LOG_P_TOL", "SUPPORTED_DTYPES", "check_batch", "check_jacobian", "check_model",
           "check_scores", "eval_mode", "quiet_forward_mode"]

SUPPORTED_DTYPES = (torch.float32, torch.float64)
LOG_P_TOL = 1e-3


def check_batch(x: Tensor, name: str = "x", ndim_min: int = 2) -> None:
    """Validate a batch of inputs before any model sees it.

    Args:
        x: a batch ``(B, ...)``.
        name: the argument name used in error messages.
        ndim_min: the least number of dimensions, batch axis included.

    Raises:
        ValueError: naming the problem: not a tensor, too few dimensions, empty batch or empty
            samples, not floating point, NaN or inf values.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimensions (B, ...), "
                         f"got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): the batch needs at least one "
                         "non-empty sample")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}; leafkit computes in float32 or float64 "
                         "(QR and SVD, behind every projection, do not exist in half precision): "
                         f"convert with {name}.float() and the model with model.float()")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or inf values")


def check_scores(out: Tensor, x: Tensor) -> None:
    """Validate a model output: scores (or log-probabilities) of shape ``(B, C)``.

    Args:
        out: the model output for ``x``.
        x: the input batch ``(B, ...)``.

    Raises:
        ValueError: if ``out`` is not a 2-D tensor ``(B, C)`` with the batch size of ``x``, if
            ``C < 2``, or if it holds NaN or inf values.
    """
    if not isinstance(out, Tensor):
        raise ValueError(f"the model must return a tensor of scores, got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return scores of shape (B, C) = ({x.shape[0]}, C), "
                         f"got shape {tuple(out.shape)}")
    if out.shape[1] < 2:
        raise ValueError(f"a classifier needs C >= 2 classes, the model returns C = {out.shape[1]}")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise ValueError(f"the model output contains {bad} NaN or inf values")


def check_model(model: nn.Module, x: Tensor) -> None:
    """Validate that ``model`` can take the batch ``x``: an ``nn.Module`` whose floating-point
    parameters and buffers share the dtype and device of ``x``.

    Raises:
        ValueError: naming the model's dtype/device and the input's, and how to convert.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module returning scores (B, C), got "
                         f"{type(model).__name__}")
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(f"the model's {name!r} is {t.dtype} on {t.device} but the input is "
                             f"{x.dtype} on {x.device}: move one to the other, e.g. "
                             f"model.to(x.device, x.dtype)")


def check_jacobian(J: Tensor, log_p: Tensor | None = None, *, name: str = "J") -> None:
    """Validate a factored local data matrix: ``J`` ``(B, C, n)`` and log-probabilities ``(B, C)``.

    ``log_p`` must hold log-probabilities (``log_softmax`` of the scores), not probabilities:
    every entry ``<= 0`` and ``logsumexp = 0`` per row, to a tolerance of ``1e-3``.

    Raises:
        ValueError: wrong shapes, an unsupported dtype, NaN or inf values, or ``log_p`` that is
            not normalized (e.g. probabilities passed where log-probabilities belong).
    """
    if not isinstance(J, Tensor) or J.dim() != 3:
        raise ValueError(f"{name} must be a tensor of shape (B, C, n) from log_prob_jacobian, got "
                         f"{tuple(J.shape) if isinstance(J, Tensor) else type(J).__name__}")
    check_batch(J, name, ndim_min=3)
    if log_p is None:
        return
    if not isinstance(log_p, Tensor) or log_p.shape != J.shape[:2]:
        raise ValueError(f"log_p must have shape (B, C) = {tuple(J.shape[:2])} to match {name}, "
                         f"got {tuple(log_p.shape) if isinstance(log_p, Tensor) else log_p!r}")
    check_batch(log_p, "log_p")
    lse = torch.logsumexp(log_p.double(), dim=1).abs().max()
    top = log_p.max()
    if lse > LOG_P_TOL or top > LOG_P_TOL:
        raise ValueError(f"log_p must hold log-probabilities (log_softmax of the scores): each row "
                         f"needs entries <= 0 and logsumexp 0, got largest entry {float(top):.3g} "
                         f"and |logsumexp| up to {float(lse):.3g}. Pass log p, not p or the raw "
                         "scores (log_prob_jacobian returns it)")


@contextmanager
def quiet_forward_mode() -> Iterator[None]:
    """Silence the FutureWarning about ``torch.jit.script`` that torch's first forward-mode call
    (``torch.func.jvp``) raises while loading its own decompositions: a warning meant for torch's
    developers, which would otherwise appear under a reader's cell."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        yield


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule of ``model`` in eval mode for the block, then restore each one's mode.

    Every leafkit routine that differentiates a model in ``x`` runs under it: in train mode
    BatchNorm mixes the samples of a batch (the gradient of one sample then depends on its batch
    mates) and updates its running statistics, and Dropout makes ``G`` random.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _scores(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)``, checked by :func:`check_scores`; a model that cannot take ``x`` (shape or
    dtype mismatch) raises ``ValueError`` instead of a bare ``RuntimeError``."""
    try:
        out = model(x)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as err:
        raise ValueError(f"the model cannot evaluate x of shape {tuple(x.shape)} and dtype "
                         f"{x.dtype}: {err}") from err
    check_scores(out, x)
    return out
