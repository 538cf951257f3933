"""How leafkit takes Jacobians in the input: the backward-pass strategies, chosen by measurement.

A Jacobian of ``C`` outputs is taken either by one vmapped backward pass or by ``C`` backward
passes over the batch (:data:`BATCHED_BACKWARD_BYTES`), and on the CPU a large batch is taken in
chunks (:data:`CPU_JACOBIAN_CHUNK`). The kernels here take tensors as they are (no checks, no mode
switch, no host-device sync): the public functions of :mod:`leafkit.geometry` check their inputs,
and the step loops of :mod:`leafkit.paths` check them once. Parameters never get gradients.

Paper: eq. (2.5) (``J = Jac_x log p``) and (3.7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["BATCHED_BACKWARD_BYTES", "CPU_JACOBIAN_CHUNK"]

#: Batches whose size times the dtype's bytes is at most this take the Jacobian in one vmapped
#: backward pass (``autograd.grad(..., is_grads_batched=True)``), larger ones in ``C`` backward
#: passes over the whole batch. Measured on a 2-core CPU, MnistCNN, milliseconds per Jacobian
#: (C passes vs one vmapped pass): float32 B=1 12.2 vs 8.7, B=4 36.7 vs 23.0, B=8 48.5 vs 36.7,
#: B=16 80 vs 64, B=24 103 vs 120, B=80 301 vs 480; float64 B=4 40 vs 29, B=8 67 vs 56, B=12 85
#: vs 104. torch.func's vmap(jacrev) was slower than both (B=32: 120-160 ms). The rule is the
#: same on every device; it was not measured on a GPU.
BATCHED_BACKWARD_BYTES = 64

#: On the CPU, Jacobians of larger batches are taken this many samples at a time (one forward and
#: its backward passes per chunk), so that the activations the passes reuse stay in the caches.
#: Measured with one thread, MnistCNN, float32, ms per image for C passes: chunks of 16 4.90, 32
#: 4.82, 48 4.48, 60 4.35, 80 4.58, 120 5.06, 240 7.90, 480 8.96 (a 500-image Jacobian took
#: 4.6 s whole and 2.4 s in chunks of 50). On a GPU the batch is taken whole.
CPU_JACOBIAN_CHUNK = 64


def _in_chunks(fn: Callable[..., tuple[Tensor, Tensor]], x: Tensor,
               rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``fn(x)`` (or ``fn(x, rows)``), on the CPU in equal chunks of at most
    :data:`CPU_JACOBIAN_CHUNK` samples, results concatenated; whole elsewhere. Samples are
    independent (eval mode), so the chunks change the speed and, at most, the last bits of
    kernels whose rounding depends on the batch size."""
    if x.device.type != "cpu" or len(x) <= CPU_JACOBIAN_CHUNK:
        return fn(x) if rows is None else fn(x, rows)
    size = -(-len(x) // -(-len(x) // CPU_JACOBIAN_CHUNK))  # ceil(B / ceil(B / chunk))
    if rows is None:
        parts = [fn(xs) for xs in x.split(size)]
    else:
        parts = [fn(xs, rs) for xs, rs in zip(x.split(size), rows.split(size))]
    return torch.cat([j for j, _ in parts]), torch.cat([s for _, s in parts])


def _score_jacobian(model: Callable[[Tensor], Tensor] | nn.Module,
                    x: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`leafkit.geometry.score_jacobian` without checks or mode switches, for step loops
    that validated their inputs once and hold the model in eval mode: no host-device sync.
    ``model`` is any forward function (the public function passes a checked one)."""
    def one_chunk(xs: Tensor) -> tuple[Tensor, Tensor]:
        xg = xs.detach().requires_grad_()
        with torch.enable_grad():
            s = model(xg)
        return _score_jacobian_rows(s, xg)

    return _in_chunks(one_chunk, x)


def _log_prob_jacobian_direct(model: nn.Module, x: Tensor,
                              rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(J, log_p)`` by ``C`` backward passes through ``log_softmax`` itself (the route of the
    authors' code, whose network ends in ``log_softmax``), not by eq. (3.7) from the score
    Jacobian. Equal in exact arithmetic, the two differ in rounding, and the rounding matters
    where ``J``'s rank-deficiency is solved as if it were full rank (``projection="authors"`` of
    :func:`leafkit.paths.horizontal_path`): the row of the most likely class, nearly zero at a
    confident point, is computed here from ``1 - fl(p_max)``. With ``rows`` `(B,)` bool only
    those rows go through ``log_softmax``; the others get the score Jacobian and the scores, as
    from :func:`_score_jacobian`, in the same passes. Unchecked (no mode switch, no sync)."""
    def one_chunk(xs: Tensor, rs: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xg = xs.detach().requires_grad_()
        with torch.enable_grad():
            s = model(xg)
            log_p = torch.log_softmax(s, dim=1)
            out = log_p if rs is None else torch.where(rs[:, None], log_p, s)
        return _score_jacobian_rows(out, xg, per_column=True)

    return _in_chunks(one_chunk, x, rows)


def _score_jacobian_rows(s: Tensor, xg: Tensor, *,
                         per_column: bool = False) -> tuple[Tensor, Tensor]:
    """``(Jac_xg s, s)`` for any batched output ``s`` `(B, C)` of ``xg``, parameters untouched:
    one vmapped backward pass for small batches (:data:`BATCHED_BACKWARD_BYTES`), else, or
    always with ``per_column``, one backward per column over the whole batch."""
    C = s.shape[1]
    with torch.enable_grad():
        if not per_column and len(s) * s.element_size() <= BATCHED_BACKWARD_BYTES:
            eye = torch.eye(C, dtype=s.dtype, device=s.device)[:, None, :].expand(C, *s.shape)
            (rows,) = torch.autograd.grad(s, xg, eye, is_grads_batched=True,
                                          materialize_grads=True)
            return rows.transpose(0, 1).flatten(2), s.detach()
        rows = [torch.autograd.grad(s[:, k].sum(), xg, retain_graph=k < C - 1,
                                    materialize_grads=True)[0] for k in range(C)]
    return torch.stack(rows, 1).flatten(2), s.detach()
