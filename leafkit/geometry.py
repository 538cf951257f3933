"""The local data matrix ``G(x, w)`` of a classifier, in factored form, batched over samples.

Everything here works with the Jacobian ``J = Jac_x log p`` of shape ``(B, C, n)`` and the
log-probabilities ``log p`` of shape ``(B, C)``: ``G = J^T diag(p) J`` (eq. 2.5) is never formed
unless asked for explicitly with a small ``n`` (:func:`local_data_matrix`).

Gradients in ``x`` are taken as gradients of batch sums, which are per-sample gradients only when
the model treats samples independently, so every function here runs the model in eval mode
(:func:`leafkit.checks.eval_mode`; BatchNorm in train mode mixes the samples of a batch) and
restores its mode. Inputs are checked once, at the public functions (:mod:`leafkit.checks`); the
private kernels that step loops call take tensors as they are. Model parameters never receive
gradients, and results carry no graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .checks import _scores, check_batch, check_jacobian, check_model, eval_mode
from .jacobian import _score_jacobian

__all__ = [
    "kl_divergence",
    "kl_from_scores",
    "local_data_matrix",
    "local_data_matrix_from_jacobian",
    "local_data_spectrum",
    "local_data_trace",
    "local_data_trace_from_jacobian",
    "log_prob_jacobian",
    "log_prob_jacobian_from_scores",
    "numerical_rank",
    "score_jacobian",
]

DEFAULT_MAX_N = 4096
DEFAULT_MAX_D = 4096

def _check_dense(size: int, limit: int, what: str, option: str, advice: str) -> None:
    if size > limit:
        gib = size**2 * 4 / 2**30
        raise ValueError(f"a dense {what} x {what} matrix with {what} = {size} takes {gib:.2f} GiB "
                         f"per sample in float32, above the limit {option}={limit}. {advice}, or "
                         f"raise {option} explicitly if you really want it.")


_USE_FACTORS = ("Use the factored form (J, log_p) of log_prob_jacobian instead (local_data_trace, "
                "local_data_spectrum, leafkit.projection.tangent_basis)")


def _log_softmax_by_differences(s: Tensor) -> Tensor:
    """``log_softmax`` over the last axis as ``log p = d - log1p(sum_{k != c} e^(d_k))`` with
    ``d = s - s_c`` and ``c`` the top class, for functions that autograd differentiates once or
    twice.

    The same values as ``torch.log_softmax``, but its derivatives stay accurate at confident
    points: through ``log_softmax`` they contain ``1 - p_c`` (in ``e_c - p`` and in ``p_c - p_c^2``),
    rounding noise when ``p_c`` is within rounding of 1 (a margin above about 17 in float32, 37 in
    float64); here every term is a product of the small ``p_k = e^(d_k) / (1 + sum)``, ``k != c``.
    """
    top = s.argmax(-1, keepdim=True)
    d = s - s.gather(-1, top)  # <= 0, exactly 0 at the top class
    others = torch.ones_like(s, dtype=torch.bool).scatter(-1, top, False)
    return d - torch.log1p(torch.where(others, d.exp(), 0).sum(-1, keepdim=True))


def _weighted_gram(J: Tensor, log_p: Tensor) -> Tensor:
    """``J^T diag(p) J``, ``(B, n, n)`` from ``(B, C, n)`` (a 3-operand einsum would build
    ``(B, C, n, n)``)."""
    return J.mT @ (log_p.exp().unsqueeze(-1) * J)


def score_jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Jacobian in ``x`` of the model output ``s(x, w)``, per sample.

    Row ``k`` is the gradient of ``s_k`` summed over the batch, which is the per-sample gradient
    because samples are independent: the model runs in eval mode
    (:func:`leafkit.checks.eval_mode`), so BatchNorm uses its running statistics (and leaves them
    alone) and Dropout is off. Parameters get no gradients.

    Args:
        model: a classifier returning ``(B, C)``, with the dtype and device of ``x``.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.

    Returns:
        ``(Js, s)``: ``Js`` of shape ``(B, C, n)`` with ``Js[b, k] = grad_x s_k(x_b)``, and the
        output ``s`` of shape ``(B, C)``.

    Raises:
        ValueError: a bad batch (``check_batch``), a model of another dtype or device
            (``check_model``), or a bad output (``check_scores``), see :mod:`leafkit.checks`.

    Paper: eq. (2.2)–(2.3) (the score function ``s``).
    """
    check_batch(x)
    check_model(model, x)
    with eval_mode(model):
        return _score_jacobian(lambda xg: _scores(model, xg), x)


def log_prob_jacobian_from_scores(Js: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``J = Jac_x log p`` from the Jacobian of the scores: ``J = (I - 1 p^T) Js``, eq. (3.7).

    Right whether ``s`` holds scores or log-probabilities, because ``I - 1 p^T`` is idempotent.

    Computed as ``g_i = sum_{k != i} p_k (grad s_i - grad s_k)``: the diagonal ``1 - p_i`` is the
    sum of the other probabilities, not ``1 - p_i`` rounded. At a confident point (``p_c`` within
    rounding of 1, a margin above about 17 in float32 or 37 in float64) ``grad s_c - p^T Js``
    cancels to zero or noise, while this form keeps ``g_c`` to working precision and keeps
    ``p^T J = 0`` (Proposition 2.1) exact up to rounding on the scale of ``p``.

    Args:
        Js: ``(B, C, n)`` from :func:`score_jacobian`.
        s: ``(B, C)`` the model output.

    Returns:
        ``(J, log_p)``: ``(B, C, n)`` and ``log_p = log_softmax(s)`` ``(B, C)``.

    Paper: eq. (3.7) (``grad_x log p_i = grad_x s_i - sum_k p_k grad_x s_k``).
    """
    log_p = torch.log_softmax(s, dim=1)
    p = log_p.exp()
    off = 1 - torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
    A = torch.diag_embed(p @ off) - off * p.unsqueeze(1)  # = I - 1 p^T, diagonal without 1 - p_i
    return A @ Js, log_p


def log_prob_jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The Jacobian ``J = Jac_x log p(y|x, w)`` whose rows are the fields ``g_i = grad_x log p_i``.

    Args:
        model: a classifier returning scores (or log-probabilities) ``(B, C)``; run in eval mode.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.

    Returns:
        ``(J, log_p)``: ``J`` of shape ``(B, C, n)`` with ``J[b, i] = g_i(x_b)``, and
        ``log_p = log_softmax(s)`` of shape ``(B, C)``.

    Raises:
        ValueError: as :func:`score_jacobian`.

    Paper: eq. (2.5) (``J = Jac_x log p``) and (3.7).
    """
    return log_prob_jacobian_from_scores(*score_jacobian(model, x))


def local_data_matrix_from_jacobian(J: Tensor, log_p: Tensor, *,
                                    max_n: int = DEFAULT_MAX_N) -> Tensor:
    """The dense local data matrix ``G = J^T diag(p) J = sum_i p_i g_i g_i^T``.

    Args:
        J: ``(B, C, n)`` from :func:`log_prob_jacobian`.
        log_p: ``(B, C)``.
        max_n: refuse (``ValueError``) when ``n > max_n``; ``G`` has ``n^2`` entries per sample.

    Returns:
        ``G`` of shape ``(B, n, n)``.

    Raises:
        ValueError: ``n > max_n``, or ``J``/``log_p`` rejected by
            :func:`leafkit.checks.check_jacobian`.

    Paper: eq. (2.5).
    """
    check_jacobian(J, log_p)
    _check_dense(J.shape[-1], max_n, "n", "max_n", _USE_FACTORS)
    return _weighted_gram(J, log_p)


def local_data_matrix(model: nn.Module, x: Tensor, *, max_n: int = DEFAULT_MAX_N) -> Tensor:
    """The dense local data matrix ``G(x, w) = E_{y~p}[grad_x log p grad_x log p^T]``.

    Only for small inputs: MNIST (``n = 784``) takes 2.4 MB per sample in float32, but ImageNet
    (``n = 150528``) would take 90 GB. Prefer the factored form (:func:`log_prob_jacobian`).

    Args:
        model: a classifier returning ``(B, C)``, run in eval mode.
        x: inputs ``(B, *input_shape)``; ``n = prod(input_shape)``.
        max_n: refuse (``ValueError``, before any computation) when ``n > max_n``.

    Returns:
        ``G`` of shape ``(B, n, n)``.

    Paper: eq. (2.5).
    """
    check_batch(x)
    check_model(model, x)
    _check_dense(x[0].numel(), max_n, "n", "max_n", _USE_FACTORS)
    J, log_p = log_prob_jacobian(model, x)
    return local_data_matrix_from_jacobian(J, log_p, max_n=max_n)


def local_data_trace(model: nn.Module, x: Tensor, *, batch_size: int | None = None) -> Tensor:
    """The trace ``Tr G = sum_i p_i ||g_i||^2``, the paper's soft rank, without forming ``G``.

    Args:
        model: a classifier returning ``(B, C)``, run in eval mode.
        x: inputs ``(B, *input_shape)``.
        batch_size: evaluate the batch in chunks of this many samples (bounds memory); ``None``
            takes the whole batch at once.

    Returns:
        ``Tr G`` of shape ``(B,)``.

    Paper: eq. (4.1).
    """
    check_batch(x)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    traces = []
    for chunk in x.split(batch_size or x.shape[0]):
        traces.append(_trace(*log_prob_jacobian(model, chunk)))
    return torch.cat(traces)


def local_data_trace_from_jacobian(J: Tensor, log_p: Tensor) -> Tensor:
    """``Tr G = sum_i p_i ||g_i||^2`` from the factored form, for callers that already hold ``J``.

    Args:
        J: ``(B, C, n)`` from :func:`log_prob_jacobian`.
        log_p: ``(B, C)``.

    Returns:
        ``Tr G`` of shape ``(B,)``.

    Raises:
        ValueError: ``J``/``log_p`` rejected by :func:`leafkit.checks.check_jacobian`.

    Paper: eq. (4.1).
    """
    check_jacobian(J, log_p)
    return _trace(J, log_p)


def _trace(J: Tensor, log_p: Tensor) -> Tensor:
    return torch.einsum("bc,bc->b", log_p.exp(), J.square().sum(-1))


def local_data_spectrum(J: Tensor, log_p: Tensor) -> Tensor:
    """The nonzero spectrum of ``G``, from the ``C x n`` factor ``diag(sqrt p) J``, never ``n x n``.

    ``G = A^T A`` with ``A = diag(sqrt p) J``, so the eigenvalues of ``G`` are the squared
    singular values of ``A`` (those of the ``C x C`` matrix ``A A^T``) plus ``n - C`` zeros.
    Singular values keep the small eigenvalues accurate relative to the largest one, which
    ``eigh(A A^T)`` would not (it squares the condition number).

    Args:
        J: ``(B, C, n)`` from :func:`log_prob_jacobian`.
        log_p: ``(B, C)``.

    Returns:
        The ``min(C, n)`` largest eigenvalues of ``G``, descending: shape ``(B, C)`` when
        ``n >= C``.
        By Proposition 2.1 the last one is zero up to rounding.

    Raises:
        ValueError: ``J``/``log_p`` rejected by :func:`leafkit.checks.check_jacobian`.

    Paper: eq. (2.5), Proposition 2.1, Table 1.
    """
    check_jacobian(J, log_p)
    return torch.linalg.svdvals(log_p.exp().sqrt().unsqueeze(-1) * J).square()


def _flat_parameters(model: nn.Module) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    """All parameters of ``model`` as one detached vector ``w`` of length ``d`` (in the order of
    ``named_parameters()``), and the map from such a vector to a ``functional_call`` dict."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    w = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflatten(v: Tensor) -> dict[str, Tensor]:
        return {name: chunk.view_as(p) for (name, p), chunk in zip(named, v.split(sizes))}

    return w, unflatten


def kl_divergence(model: nn.Module, x: Tensor, dx: Tensor) -> Tensor:
    """The exact ``KL(p(.|x + dx) || p(.|x))``, from the scores, in float64, without cancellation.

    With ``delta = s(x + dx) - s(x)`` centred by its ``p``-mean (``u = delta - sum_i p_i delta_i``)
    and ``e = expm1(u)``, ``Z = sum_i p_i e^{u_i} = 1 + w`` with ``w = sum_i p_i (e_i - u_i) >= 0``,
    and ``KL = sum_i p_i e_i u_i / (1 + w) - log1p(w)``: no ``log p`` of a probability near 1 is
    ever taken (in float32 it rounds to 0, which ruins ``log p' - log p``). The scores themselves
    carry the rounding of the model's dtype: use a float64 model for tiny ``dx``.

    Args:
        model: a classifier returning ``(B, C)``.
        x: inputs ``(B, *input_shape)``.
        dx: displacements, same shape as ``x``.

    Returns:
        ``KL`` of shape ``(B,)``, float64. To second order it is ``dx^T G dx / 2``.

    Paper: eq. (3.2) (which drops the factor 1/2).
    """
    check_batch(x)
    check_batch(dx, "dx")
    if dx.shape != x.shape:
        raise ValueError(f"dx must have the shape of x {tuple(x.shape)}, got {tuple(dx.shape)}")
    check_model(model, x)
    with eval_mode(model), torch.no_grad():
        return kl_from_scores(_scores(model, x + dx), _scores(model, x))


def kl_from_scores(s1: Tensor, s0: Tensor) -> Tensor:
    """``KL(softmax(s1) || softmax(s0))`` per row, in float64, without cancellation.

    With ``delta = s1 - s0`` centred by its ``p``-mean (``p = softmax(s0)``,
    ``u = delta - sum_i p_i delta_i``) and ``e = expm1(u)``, ``Z = sum_i p_i e^{u_i} = 1 + w`` with
    ``w = sum_i p_i (e_i - u_i) >= 0``, and ``KL = sum_i p_i e_i u_i / (1 + w) - log1p(w)``.

    Args:
        s1: scores ``(B, C)`` of the displaced distribution.
        s0: scores ``(B, C)`` of the reference distribution.

    Returns:
        ``KL`` of shape ``(B,)``, float64.

    Paper: eq. (3.1)-(3.2) (the divergence whose second-order term is ``F`` or ``G``).
    """
    if s0.dim() != 2 or s1.shape != s0.shape:
        raise ValueError(f"s1 and s0 must be scores of one shape (B, C), got {tuple(s1.shape)} "
                         f"and {tuple(s0.shape)}")
    s0, s1 = s0.double(), s1.double()
    p = torch.softmax(s0, dim=1)
    delta = s1 - s0
    u = delta - (p * delta).sum(1, keepdim=True)
    e = torch.expm1(u)
    w = (p * (e - u)).sum(1)
    return (p * e * u).sum(1) / (1 + w) - torch.log1p(w)


def numerical_rank(eigenvalues: Tensor, rtols: Tensor | Sequence[float]) -> Tensor:
    """How many eigenvalues exceed ``rtol`` times the largest, for every tolerance.

    Args:
        eigenvalues: ``(B, m)`` eigenvalues (or singular values) per sample, any order; their
            absolute values count (round-off makes some tiny eigenvalues of a PSD matrix < 0).
        rtols: ``(T,)`` relative tolerances.

    Returns:
        ``(B, T)`` integer ranks.

    Paper: Section 4 (the numerical rank of ``G`` is unreliable; the trace is the soft rank).
    """
    if eigenvalues.dim() != 2:
        raise ValueError(f"eigenvalues must have shape (B, m), got {tuple(eigenvalues.shape)}")
    rtols = torch.as_tensor(rtols, dtype=eigenvalues.dtype, device=eigenvalues.device)
    lam = eigenvalues.abs()
    cut = rtols.view(1, -1, 1) * lam.amax(-1).view(-1, 1, 1)
    return (lam.unsqueeze(1) > cut).sum(-1)
