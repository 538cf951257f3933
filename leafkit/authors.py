"""What the authors' full-rank projection adds to Algorithm 4.1, measured.

The authors' code (torch 1.7) takes ``J`` by backward through ``log_softmax``, normalizes the
``C`` gradient columns and solves least squares on all ``C`` with ``torch.lstsq`` (LAPACK or
MAGMA ``gels``: QR without pivoting, full rank assumed). The `(n, C)` matrix has rank ``C - 1``
(eq. 2.9), so the solve spans one extra unit direction outside ``D_x``: the *tenth direction*,
made of rounding error. These functions measure what it is: its overlap with the direction that
raises all scores equally (``J_s^T 1`` projected off ``D_x``) and with a random direction of
``ker G``, at confident points (``1 - p_max <= CONFIDENT``) and elsewhere, and what the
least-squares drivers of ``torch.linalg.lstsq`` do with it (``gelsy``, the CPU default, is
rank-revealing; ``gels``, the only CUDA driver, is not).

Paper: Algorithm 4.1 (the projection onto ``D_x``), Proposition 2.1 (rank ``C - 1``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks import check_model, eval_mode
from .jacobian import _log_prob_jacobian_direct, _score_jacobian
from .paths import _check_inputs
from .projection import _full_rank_basis, _normalized_columns, _project_tangent, _tangent_basis

__all__ = ["CONFIDENT", "DRIVERS", "lstsq_drivers", "tenth_direction_overlaps"]

CONFIDENT = 3e-4
"""``1 - p_max`` at or below which a point counts as confident."""

DRIVERS = ("gels", "gelsy")


def _unit(v: Tensor) -> Tensor:
    norms = v.norm(dim=1, keepdim=True)
    return v / torch.where(norms > 0, norms, 1.0)


def _off_tangent(basis: Tensor, v: Tensor) -> Tensor:
    return v - _project_tangent(basis, v)


def tenth_direction_overlaps(model: nn.Module, x: Tensor, target: Tensor | None = None, *,
                             seed: int = 0) -> dict[str, Tensor]:
    """The authors' tenth direction at each point of ``x`` and what it lines up with.

    The tenth direction ``u`` is the last column of ``Q`` (unpivoted QR of the normalized
    gradients of ``log_softmax``, :func:`leafkit.projection._full_rank_basis`) with its
    ``D_x`` component removed, normalized: ``v_authors - v_exact = <u, d> u`` for any ``d``.

    Args:
        model: classifier returning raw scores `(B, C)`; run in eval mode.
        x: `(B, *input_shape)` points.
        target: optional `(B, *input_shape)` targets: adds the overlaps with ``d = target - x``.
        seed: seed of the random ``ker G`` direction (a ``torch.Generator`` on ``x``'s device).

    Returns:
        `(B,)` tensors: ``"one_minus_p_max"``; ``"confident"`` (``1 - p_max <= CONFIDENT``);
        ``"equal_score"``, ``|cos(u, e)|`` with ``e = J_s^T 1`` projected off ``D_x``;
        ``"random"``, ``|cos(u, r)|`` with a uniformly random unit ``r`` in ``ker G``; with
        ``target``, ``"target_authors"`` and ``"target_random"``: ``|<u, d>| / ||d_ker||`` and
        ``|<r, d>| / ||d_ker||``, the share of ``d``'s kernel part each direction picks up.

    Raises:
        ValueError: an invalid batch, a target of another shape, dtype or device, or a model
            that does not fit ``x`` (as for :func:`leafkit.paths.horizontal_path`).

    Paper: Algorithm 4.1, Proposition 2.1.
    """
    _check_inputs(x, target=target)
    check_model(model, x)
    with eval_mode(model):
        J, log_p = _log_prob_jacobian_direct(model, x)
        Js, _ = _score_jacobian(model, x)
    basis = _tangent_basis(J, log_p)
    u = _unit(_off_tangent(basis, _full_rank_basis(J)[..., -1]))
    e = _unit(_off_tangent(basis, Js.sum(1)))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    r = _unit(_off_tangent(basis, torch.randn(u.shape, generator=gen, device=x.device,
                                              dtype=x.dtype)))
    one_minus = -torch.expm1(log_p.amax(1))
    out = {"one_minus_p_max": one_minus, "confident": one_minus <= CONFIDENT,
           "equal_score": (u * e).sum(1).abs(), "random": (u * r).sum(1).abs()}
    if target is not None:
        d_ker = _off_tangent(basis, (target - x).flatten(1))
        size = d_ker.norm(dim=1)
        out["target_authors"] = (u * d_ker).sum(1).abs() / size
        out["target_random"] = (r * d_ker).sum(1).abs() / size
    return out


def lstsq_drivers(model: nn.Module, x: Tensor, target: Tensor,
                  drivers: tuple[str, ...] = DRIVERS) -> dict[str, dict[str, Tensor]]:
    """The authors' least-squares step with each ``torch.linalg.lstsq`` driver.

    For the authors' normalized `(n, C)` matrix ``A`` and ``d = target - x``: the solution ``c``
    of ``min ||A c - d||`` with the driver (default ``rcond``), the fitted value ``A c`` (what
    their code steps along), and how much of it lies outside ``D_x``.

    Args:
        model: classifier returning raw scores `(B, C)`; run in eval mode.
        x: `(B, *input_shape)` points.
        target: `(B, *input_shape)` targets.
        drivers: names accepted by ``torch.linalg.lstsq`` on ``x``'s device.

    Returns:
        per driver, `(B,)` tensors: ``"outside"``, ``||A c - P d|| / ||d||`` (``P`` the exact
        projector onto ``D_x``: about 0 when the driver drops the tenth direction);
        ``"versus_qr"``, ``||A c - Q Q^T d|| / ||d||`` (the rounding the multiplication by
        ``A`` adds to the fitted value of :func:`leafkit.paths.horizontal_path`'s
        ``"authors"``); ``"rank"``, the rank the driver used (``C`` for ``gels``, which
        reports none and assumes full rank).

    Raises:
        ValueError: an invalid batch, a target of another shape, dtype or device, or a model
            that does not fit ``x`` (as for :func:`leafkit.paths.horizontal_path`).

    Paper: Algorithm 4.1.
    """
    _check_inputs(x, target=target)
    check_model(model, x)
    with eval_mode(model):
        J, log_p = _log_prob_jacobian_direct(model, x)
    d = (target - x).flatten(1)
    A = _normalized_columns(J)
    exact = _project_tangent(_tangent_basis(J, log_p), d)
    qr = _project_tangent(_full_rank_basis(J), d)
    size = d.norm(dim=1)
    out = {}
    for driver in drivers:
        solved = torch.linalg.lstsq(A, d.unsqueeze(-1), driver=driver)
        fitted = (A @ solved.solution).squeeze(-1)
        rank = (solved.rank if solved.rank.numel() else
                torch.full_like(size, A.shape[-1], dtype=torch.long))
        out[driver] = {"outside": (fitted - exact).norm(dim=1) / size,
                       "versus_qr": (fitted - qr).norm(dim=1) / size, "rank": rank}
    return out
