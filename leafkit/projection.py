"""The distribution ``D_x = span_i g_i(x) = (ker G)^perp`` and the projections onto it and onto
``ker G``, from the factored form ``J`` (never from ``eigh(G)``: ``G``'s small eigenvalues drown in
round-off where some ``p_i`` is tiny, so an eigenvalue rank of ``G`` reads too low).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_batch, check_jacobian

__all__ = ["METHODS", "default_rtol", "project_kernel", "project_tangent", "tangent_basis"]

METHODS = ("qr", "svd")


def default_rtol(dtype: torch.dtype) -> float:
    """The default relative singular-value cut-off of ``tangent_basis(method="svd")``.

    ``1e-10`` for float64 and ``1e-5`` otherwise. Measured on the MNIST CNN: the ``C``-th singular
    value of ``J`` (zero in exact arithmetic, Proposition 2.1) over the first is ``~1e-16`` in
    float64 and ``~1e-7`` in float32, while the ``(C-1)``-th over the first is ``>= 0.05``.
    """
    return 1e-10 if dtype == torch.float64 else 1e-5


def tangent_basis(J: Tensor, log_p: Tensor | None = None, *, method: str = "qr",
                  rtol: float | None = None) -> Tensor:
    """An orthonormal basis of ``D_x``, the row space of ``J``, per sample.

    ``"qr"``: since ``sum_i p_i g_i = 0`` with every ``p_i > 0``, any one row of ``J`` is a
    combination of the others; drop the row of the most likely class and take a reduced QR of the
    remaining ``C - 1`` rows. Where the rank is lower still (dead ReLUs, logits clamped at zero),
    a row that lies in the span of the rows before it gets a diagonal entry of ``R`` at rounding
    level; columns of ``Q`` whose ``|R_kk|`` is at most ``rtol`` times the largest are zeroed, so
    no rounding direction enters the basis. The fast choice (about 8x cheaper than the SVD at
    large ``B``).
    ``"svd"``: keep the right singular vectors of ``J`` whose singular values exceed
    ``rtol * sigma_max``; right for any rank. Samples with a lower rank than others get zero
    columns, so ``Q Q^T`` is still the orthogonal projector onto ``D_x`` for every sample.

    Args:
        J: ``(B, C, n)`` from :func:`leafkit.geometry.log_prob_jacobian`.
        log_p: ``(B, C)``, to find the most likely class (``"qr"`` only); ``None``: drop the row
            of smallest norm instead.
        method: ``"qr"`` or ``"svd"``.
        rtol: the relative cut-off on the singular values (``"svd"``) or on the diagonal of ``R``
            (``"qr"``); default :func:`default_rtol` of the dtype of ``J``.

    Returns:
        ``Q`` of shape ``(B, n, k)`` with orthonormal (or zero) columns spanning ``D_x``, so
        that ``Q Q^T`` is the orthogonal projector onto ``D_x`` for every sample:
        ``k = C - 1`` for ``"qr"``, the largest numerical rank in the batch for ``"svd"``.

    Raises:
        ValueError: an unknown ``method``; ``J``/``log_p`` rejected by
            :func:`leafkit.checks.check_jacobian` (wrong shape, NaN, ``p`` passed for ``log p``).

    Paper: eq. (3.3), Proposition 2.1.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    check_jacobian(J, log_p)
    return _tangent_basis(J, log_p, method, rtol)


def _tangent_basis(J: Tensor, log_p: Tensor | None, method: str = "qr",
                   rtol: float | None = None) -> Tensor:
    """:func:`tangent_basis` without checks, for step loops (no host-device sync)."""
    if method == "qr":
        if log_p is None:
            # g_max = -sum_{i != max} (p_i / p_max) g_i is nearly 0 when p_max is nearly 1, so the
            # smallest row is (in practice) the most likely class: the one whose removal leaves the
            # best-conditioned C - 1 rows.
            drop = J.norm(dim=-1).argmin(-1)
        else:
            drop = log_p.argmax(-1)
        B, C, n = J.shape
        rows = torch.arange(C - 1, device=J.device).expand(B, -1)
        rows = rows + (rows >= drop[:, None])  # the C - 1 other rows, in order (a gather, no sync)
        return _orthonormal_columns(J.gather(1, rows[..., None].expand(-1, -1, n)).mT, rtol)
    if method == "svd":
        _, S, Vh = torch.linalg.svd(J, full_matrices=False)
        kept = S > (default_rtol(J.dtype) if rtol is None else rtol) * S[:, :1]
        k = int(kept.sum(-1).max())
        return (Vh.mT * kept.unsqueeze(1))[..., :k]
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _orthonormal_columns(A: Tensor, rtol: float | None = None) -> Tensor:
    """``(B, n, k)`` orthonormal basis of the column space of ``A`` ``(B, n, k)`` by a reduced QR,
    with the columns whose ``|R_kk|`` is at most ``rtol`` times the sample's largest set to zero
    (a column in the span of the ones before it). No host-device sync."""
    Q, R = torch.linalg.qr(A, mode="reduced")
    diag = R.diagonal(dim1=-2, dim2=-1).abs()
    cut = (default_rtol(A.dtype) if rtol is None else rtol) * diag.amax(-1, keepdim=True)
    return Q * (diag > cut).unsqueeze(-2)


def _full_rank_basis(J: Tensor) -> Tensor:
    """``Q`` `(B, n, C)` of the unpivoted QR of the normalized gradient columns
    ``g_i / ||g_i||`` of ``J`` `(B, C, n)`: what a least-squares solve that assumes full rank
    (LAPACK/MAGMA ``gels``) projects onto, the authors' projection. The matrix has rank ``C - 1``
    (eq. 2.9), so ``Q``'s last column is made of rounding error: a unit vector orthogonal to
    ``D_x`` (see :mod:`leafkit.authors`). A zero column (a saturated softmax's top class) is
    left at zero instead of divided by zero. Unchecked, no host-device sync."""
    return torch.linalg.qr(_normalized_columns(J)).Q


def _normalized_columns(J: Tensor) -> Tensor:
    """`(B, n, C)`: the rows of ``J`` `(B, C, n)` as unit columns, zero ones left at zero."""
    cols = J.mT
    norms = cols.norm(dim=1, keepdim=True)
    return cols / torch.where(norms > 0, norms, 1.0)


def _project_tangent(Q: Tensor, v: Tensor) -> Tensor:
    """``Q Q^T v`` for ``Q`` ``(B, n, k)`` and ``v`` ``(B, n)``, unchecked."""
    return (Q @ (Q.mT @ v.unsqueeze(-1))).squeeze(-1)


def project_tangent(J: Tensor, v: Tensor, log_p: Tensor | None = None, *,
                    basis: Tensor | None = None) -> Tensor:
    """The component of ``v`` in ``D_x = span_i g_i``: the directions that change ``p``.

    Args:
        J: ``(B, C, n)`` from :func:`leafkit.geometry.log_prob_jacobian`.
        v: vectors ``(B, n)`` or ``(B, *input_shape)`` with ``prod(input_shape) = n``.
        log_p: ``(B, C)``, passed to :func:`tangent_basis`.
        basis: a precomputed :func:`tangent_basis` ``(B, n, k)``; ``J`` and ``log_p`` are then
            unused.

    Returns:
        ``Q Q^T v`` with the shape of ``v``.

    Raises:
        ValueError: ``v`` of the wrong shape or not finite; ``J``/``log_p`` rejected by
            :func:`leafkit.checks.check_jacobian`; a ``basis`` of the wrong shape.

    Paper: eq. (3.3); Algorithm 4.1 (projection of ``d - x`` onto ``D_x``).
    """
    check_jacobian(J, log_p)
    B, _, n = J.shape
    check_batch(v, "v")
    if v.shape[0] != B or v[0].numel() != n:
        raise ValueError(f"v must be a batch of {B} vectors with {n} entries each, (B, n) or "
                         f"(B, *input_shape), got shape {tuple(v.shape)}")
    if basis is None:
        basis = _tangent_basis(J, log_p)
    elif basis.dim() != 3 or basis.shape[:2] != (B, n):
        raise ValueError(f"basis must have shape (B, n, k) = ({B}, {n}, k), got "
                         f"{tuple(basis.shape)}")
    return _project_tangent(basis, v.reshape(B, n)).view_as(v)


def project_kernel(J: Tensor, v: Tensor, log_p: Tensor | None = None, *,
                   basis: Tensor | None = None) -> Tensor:
    """The component of ``v`` in ``ker G = D_x^perp``: the noise directions, along which ``p`` is
    constant to second order. ``project_tangent + project_kernel = v``.

    Args:
        J: ``(B, C, n)`` from :func:`leafkit.geometry.log_prob_jacobian`.
        v: vectors ``(B, n)`` or ``(B, *input_shape)`` with ``prod(input_shape) = n``.
        log_p: ``(B, C)``, passed to :func:`tangent_basis`.
        basis: a precomputed :func:`tangent_basis` ``(B, n, k)``.

    Returns:
        ``v - Q Q^T v`` with the shape of ``v``.

    Paper: Proposition 2.1 (``ker G``), eq. (3.2); Section 4.2 (paths across leaves).
    """
    return v - project_tangent(J, v, log_p, basis=basis)
