"""Lie brackets of the fields ``g_i = grad_x log p_i`` and the involutivity of ``D`` (Frobenius).

Brackets are exact: Hessian-vector products by forward-over-reverse automatic differentiation
(``torch.func.jvp`` of ``jacrev``), no finite differences. The
involutivity residual measures how far the brackets stick out of ``D = span_k g_k``: zero (up to
rounding) for ReLU networks (Theorem 3.1), of order one for smooth activations, and clearly nonzero
for the analogous distribution on parameter space (the Remark).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

from .checks import (_scores, check_batch, check_jacobian, check_model, eval_mode,
                     quiet_forward_mode)
from .fisher import fisher_vector_product
from .geometry import _flat_parameters, _log_softmax_by_differences, log_prob_jacobian
from .projection import tangent_basis

__all__ = [
    "affine_lie_brackets",
    "affine_log_prob_hessian",
    "involutivity_residual",
    "lie_brackets",
    "log_prob_hessian_vector_products",
    "parameter_involutivity_residual",
    "parameter_lie_brackets",
    "score_hessian_vector_products",
]


@contextlib.contextmanager
def _forward_over_reverse(model: nn.Module) -> Iterator[None]:
    """Context for ``jvp(jacrev(...))``: under ``no_grad`` so that results carry no graph back to
    the parameters (torch.func transforms ignore an outer ``no_grad``), and without the
    FutureWarning about ``torch.jit.script`` that torch's first forward-mode call raises while
    loading its own jvp decompositions (a warning meant for torch, not for us). The model runs
    in eval mode (:func:`leafkit.checks.eval_mode`), its mode restored afterwards."""
    with eval_mode(model), torch.no_grad(), quiet_forward_mode():
        yield


def log_prob_hessian_vector_products(model: nn.Module, x: Tensor, V: Tensor) -> Tensor:
    """Products ``H(log p_i)(x_b) v_{b,k}`` of the Hessians in ``x`` of every log-probability.

    Forward-over-reverse, per sample: ``jvp`` of ``jacrev(log p)`` in the direction ``v`` gives
    ``H(log p_i) v`` for all classes at once, vectorized over vectors and samples by ``vmap``.
    For ReLU networks every ``H(log p_i)`` is the same matrix ``-G`` (eq. 3.10), which this
    function lets one check.

    Args:
        model: a classifier returning ``(B, C)``.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.
        V: vectors ``(B, m, n)`` or ``(B, m, *input_shape)``, ``m`` per sample.

    Returns:
        ``HV`` of shape ``(B, C, m, n)``, ``HV[b, i, k] = H(log p_i)(x_b) V[b, k]``.

    Paper: eq. (3.5)–(3.11).
    """
    return _hessian_vector_products(model, x, V, "log_p")


def score_hessian_vector_products(model: nn.Module, x: Tensor, V: Tensor) -> Tensor:
    """Products ``H(s_k)(x_b) v`` of the Hessians in ``x`` of every score, by forward-over-reverse
    (the same routine as :func:`log_prob_hessian_vector_products`).

    For a network built from ReLU, max-pool and affine layers every product is exactly zero
    (the scores are piecewise linear), which is the hypothesis behind eq. (3.8)-(3.10). A score
    whose gradient does not depend on ``x`` at all (an affine model) gives exact zeros too.

    Args:
        model: a classifier returning ``(B, C)``, in eval mode.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.
        V: vectors ``(B, m, n)`` or ``(B, m, *input_shape)``.

    Returns:
        ``(B, C, m, n)``: ``[b, k, j] = H(s_k)(x_b) V[b, j]``.

    Paper: eq. (3.8)-(3.9).
    """
    return _hessian_vector_products(model, x, V, "scores")


def _hessian_vector_products(model: nn.Module, x: Tensor, V: Tensor, of: str) -> Tensor:
    """``(B, C, m, n)`` products of the Hessians in ``x`` of ``log p`` (``of="log_p"``) or of the
    scores ``s`` (``of="scores"``) with ``V``; forward-over-reverse, see
    :func:`log_prob_hessian_vector_products`."""
    check_batch(x)
    check_batch(V, "V", ndim_min=3)
    B, m = V.shape[:2]
    n = x[0].numel()
    if B != x.shape[0] or V[0, 0].numel() != n:
        raise ValueError(f"V must hold m vectors of {n} entries per sample, shape (B, m, n) or "
                         f"(B, m, *input_shape) with B = {x.shape[0]}, got {tuple(V.shape)}")
    check_model(model, x)
    V = V.detach().reshape(B, m, *x.shape[1:])

    def f(z: Tensor) -> Tensor:
        out = model(z.unsqueeze(0))
        return (_log_softmax_by_differences(out) if of == "log_p" else out)[0]

    def products(xb: Tensor, Vb: Tensor) -> Tensor:  # (m, *input_shape) -> (C, m, *input_shape)
        return vmap(lambda v: jvp(jacrev(f), (xb,), (v,))[1])(Vb).transpose(0, 1)

    # Seconds on this CPU (one thread, the machine shared), MnistCNN float64, C = m = 10, at
    # B = 2 / 8 / 16: this 0.99 / 4.1 / 6.6; forward-over-reverse on batch sums, no per-sample vmap,
    # 1.03 / 4.2 / 7.1; C*m double-backward passes over the batch 2.2 / 8.3 / 12.2.
    with _forward_over_reverse(model):
        _scores(model, x)  # validate the output once, outside the transforms
        return vmap(products)(x.detach(), V).reshape(B, -1, m, n)


def _lie_brackets(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    J, _ = log_prob_jacobian(model, x)
    HG = log_prob_hessian_vector_products(model, x, J)  # HG[b, i, j] = H(log p_i) g_j
    return HG - HG.transpose(1, 2), J


def lie_brackets(model: nn.Module, x: Tensor) -> Tensor:
    """The Lie brackets ``[g_i, g_j] = H(log p_i) g_j - H(log p_j) g_i`` of the fields ``g_i``.

    Args:
        model: a classifier returning ``(B, C)``, in eval mode.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.

    Returns:
        ``(B, C, C, n)``, antisymmetric in the two class axes: ``[b, i, j] = [g_i, g_j](x_b)``.

    Paper: eq. (3.5) (its sign convention).
    """
    return _lie_brackets(model, x)[0]


def affine_log_prob_hessian(J: Tensor, log_p: Tensor, J_s: Tensor, V: Tensor) -> Tensor:
    """``H(log p_i) v`` as the proof of Theorem 3.1 computes it when the scores are piecewise
    affine (``H(s_k) = 0``, eq. 3.9): ``-sum_k (grad s_k^T v) p_k g_k``, the same for every class.

    For such a network this equals :func:`log_prob_hessian_vector_products` for every ``i``;
    for a smooth one it does not (the term ``sum_k p_k H(s_k)`` is missing).

    Args:
        J: ``(B, C, n)``, rows ``g_k = grad log p_k`` (:func:`leafkit.log_prob_jacobian`).
        log_p: ``(B, C)``.
        J_s: ``(B, C, n)``, rows ``grad s_k`` (:func:`leafkit.score_jacobian`).
        V: ``(B, m, n)``, ``m`` directions a sample.

    Returns:
        ``(B, m, n)``.

    Paper: eq. (3.10) (with the minus sign; the printed (3.11) has the opposite one).
    """
    check_jacobian(J, log_p)
    check_jacobian(J_s, name="J_s")
    if J_s.shape != J.shape or V.dim() != 3 or V.shape[::2] != J.shape[::2]:
        raise ValueError(f"need J_s of the shape of J {tuple(J.shape)} and V of shape (B, m, n) = "
                         f"({J.shape[0]}, m, {J.shape[2]}), got J_s {tuple(J_s.shape)} and V "
                         f"{tuple(V.shape)}")
    return -(V @ J_s.mT * log_p.exp().unsqueeze(1)) @ J  # (B, m, C) weighted, back to (B, m, n)


def affine_lie_brackets(J: Tensor, log_p: Tensor) -> Tensor:
    """The brackets ``[g_i, g_j] = G (g_i - g_j)`` of a piecewise-affine network, in closed form.

    When every ``H(log p_i) = -G`` (eq. 3.10 for ReLU networks), eq. (3.5) gives
    ``[g_i, g_j] = -G g_j + G g_i``: a vector of ``range G = D_x``, which is Theorem 3.1.

    Args:
        J: ``(B, C, n)``.
        log_p: ``(B, C)``.

    Returns:
        ``(B, C, C, n)``, ``[b, i, j] = G (g_i - g_j)``, comparable with :func:`lie_brackets`.

    Paper: eqs. (3.5), (3.10), Theorem 3.1.
    """
    Gg = fisher_vector_product(J, log_p, J)  # G g_i, (B, C, n)
    return Gg.unsqueeze(2) - Gg.unsqueeze(1)


def _bracket_residual(fields: Tensor, brackets: Tensor, rtol: float | None,
                      zero_rtol: float | None) -> Tensor:
    """``max_{a<c} ||(I - P) [X_a, X_c]|| / ||[X_a, X_c]||`` per batch entry, ``P`` the projector
    onto the row space of ``fields`` ``(B, N, D)`` (SVD basis), ``brackets`` ``(B, N, N, D)``.
    Pairs with ``||[X_a, X_c]|| <= zero_rtol * max_pairs ||[X_a, X_c]||`` count as 0."""
    N = fields.shape[1]
    a, c = torch.triu_indices(N, N, 1, device=fields.device)
    Y = brackets[:, a, c]
    Q = tangent_basis(fields, method="svd", rtol=rtol)
    outside = (Y - (Y @ Q) @ Q.mT).norm(dim=-1)
    norm = Y.norm(dim=-1)
    zero_rtol = 100 * torch.finfo(Y.dtype).eps if zero_rtol is None else zero_rtol
    zero = norm <= zero_rtol * norm.amax(-1, keepdim=True)
    return torch.where(zero, 0.0, outside / torch.where(zero, 1.0, norm)).amax(-1)


def _in_dtype(model: nn.Module, x: Tensor, dtype: torch.dtype | None) -> tuple[nn.Module, Tensor]:
    if dtype is None:
        return model, x
    return copy.deepcopy(model).to(dtype), x.to(dtype)


def involutivity_residual(model: nn.Module, x: Tensor, *, dtype: torch.dtype | None = None,
                          rtol: float | None = None, zero_rtol: float | None = None) -> Tensor:
    """How far the brackets of the fields ``g_i`` leave ``D_x``: zero if ``D`` is involutive.

    ``max_{i<j} ||(I - P_D) [g_i, g_j]|| / ||[g_i, g_j]||`` per sample, ``P_D`` the orthogonal
    projector onto ``span_k g_k`` from an SVD of ``J`` (:func:`leafkit.projection.tangent_basis`,
    ``method="svd"``). A pair whose bracket vanishes (``||[g_i, g_j]|| <= zero_rtol`` times the
    sample's largest bracket norm; e.g. all brackets are exactly 0 where ``J = 0``) counts as 0,
    never NaN.

    Measured on this machine (8 test digits with 1e-2 jitter, which moves them off max-pool ties):
    the paper's ReLU CNN, float64, 1e-15 to 2e-15 at random init and 2e-15 to 9e-15 at the
    reference checkpoint (1.7e-15 to 7.7e-15 on the far more confident full-size stand-in); float32
    7e-7 to 1e-6 at init, 1.4e-6 to 7e-6 trained, from rounding alone. ReLU MLPs
    ~1e-15 (float64), ~1e-6 (float32). tanh, softplus and GELU MLPs 20-32-32-10: 0.70 to 0.95.

    Args:
        model: a classifier returning ``(B, C)``, in eval mode.
        x: inputs ``(B, *input_shape)``.
        dtype: compute in this dtype, on a deep copy of the model (e.g. ``torch.float64``);
            ``None`` uses the model and ``x`` as they are.
        rtol: the singular-value cut-off of the basis of ``D_x``; default
            :func:`leafkit.projection.default_rtol` of the working dtype.
        zero_rtol: the relative bracket norm below which a pair counts as zero; default
            ``100 * eps`` of the working dtype.

    Returns:
        The residual of shape ``(B,)``, in ``[0, 1]``.

    Paper: eq. (3.4)–(3.11), Theorem 3.1.
    """
    brackets, J = _lie_brackets(*_in_dtype(model, x, dtype))
    return _bracket_residual(J, brackets, rtol, zero_rtol)


def _parameter_fields(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Fields ``X_a(w) = grad_w log p_i(x_b, w)``, ``a = (b, i)``, as ``(B*C, d)``, and their
    brackets ``(B*C, B*C, d)``, by forward-over-reverse products in ``w``."""
    check_batch(x)
    check_model(model, x)
    x = x.detach()
    with eval_mode(model), torch.no_grad():
        B, C = _scores(model, x).shape
    w, unflatten = _flat_parameters(model)
    if B * (C - 1) >= w.numel():
        raise ValueError(f"the parameter-space distribution has dimension up to B*(C-1) = "
                         f"{B * (C - 1)}, which must stay below d = {w.numel()} parameters for "
                         "involutivity to mean anything: use fewer samples or a larger model")

    def log_p(v: Tensor) -> Tensor:
        return _log_softmax_by_differences(functional_call(model, unflatten(v), (x,))).reshape(-1)

    # Forward-over-reverse: 0.10 s for B = 4, C = 10, d = 2058 (MLP 20-32-32-10, one thread);
    # double backward field by field 0.11 s; vmap of reverse-over-reverse 3.7 s.
    with _forward_over_reverse(model):
        X = jacrev(log_p)(w)
        HX = vmap(lambda v: jvp(jacrev(log_p), (w,), (v,))[1])(X)  # HX[c, a] = H(log p_a) X_c
    return X, HX.transpose(0, 1) - HX


def parameter_lie_brackets(model: nn.Module, x: Tensor) -> Tensor:
    """Lie brackets, in parameter space, of the fields ``w -> grad_w log p_i(x_b, w)``.

    The data batch ``x`` is fixed; each (sample, class) pair ``(b, i)`` is one vector field on
    ``R^d``, and ``[X_a, X_c] = H_w(log p_a) X_c - H_w(log p_c) X_a`` (eq. 3.5's convention).

    Args:
        model: a small classifier returning ``(B, C)`` with ``d > B (C - 1)`` parameters.
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(B, C, B, C, d)``: ``[b, i, b', j] = [X_{b,i}, X_{b',j}](w)``.

    Paper: Section 3, the Remark after Theorem 3.1 (``w -> (ker F)^perp``).
    """
    X, brackets = _parameter_fields(model, x)
    B, C = x.shape[0], X.shape[0] // x.shape[0]
    return brackets.view(B, C, B, C, -1)


def parameter_involutivity_residual(model: nn.Module, x: Tensor, *,
                                    dtype: torch.dtype | None = None, rtol: float | None = None,
                                    zero_rtol: float | None = None) -> float:
    """The involutivity residual of the parameter-space distribution ``span{grad_w log p_i(x_b)}``.

    ``max_{a<c} ||(I - P) [X_a, X_c]|| / ||[X_a, X_c]||`` over all (sample, class) pairs
    ``a, c``, ``P`` the projector onto the span of all fields ``X_a`` (SVD of the ``(B C, d)``
    matrix of fields, cut-off ``rtol``). Unlike ``D`` in data space it is not involutive even for
    ReLU networks: random ReLU and tanh MLPs (10-16-4, three samples; 20-32-32-10, four samples)
    give 0.93 to 0.99 in float64, about what a random vector in ``R^d`` would give.

    Args:
        model: a small classifier returning ``(B, C)`` with ``d > B (C - 1)`` parameters.
        x: inputs ``(B, *input_shape)``, a fixed data batch.
        dtype: compute in this dtype on a deep copy of the model; ``None``: as given.
        rtol: singular-value cut-off; default :func:`leafkit.projection.default_rtol`.
        zero_rtol: relative bracket norm below which a pair counts as zero; default ``100 * eps``.

    Returns:
        The residual, a float in ``[0, 1]``.

    Raises:
        ValueError: if ``B (C - 1) >= d``, where the fields may span all of parameter space.

    Paper: the Remark after Theorem 3.1; eq. (2.4), (3.4).
    """
    X, brackets = _parameter_fields(*_in_dtype(model, x, dtype))
    return float(_bracket_residual(X.unsqueeze(0), brackets.unsqueeze(0), rtol, zero_rtol))
