"""Slow, obviously correct references for leafkit's fast routines: one sample (and one class) at a
time, with ``torch.autograd.functional`` and plain ``torch.autograd.grad``. Small models only."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.functional import hessian, hvp, jacobian
from torch.func import functional_call


def _log_p(model: nn.Module, xb: Tensor) -> Tensor:
    return torch.log_softmax(model(xb.unsqueeze(0)), dim=-1)[0]


def score_jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, C, n)``: ``jacobian`` of ``s(x_b)`` for each sample."""
    return torch.stack([jacobian(lambda z: model(z.unsqueeze(0))[0], xb).flatten(1) for xb in x])


def log_prob_jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, C, n)`` and ``(B, C)``: ``jacobian`` of ``log_softmax(s(x_b))`` for each sample."""
    J = torch.stack([jacobian(lambda z: _log_p(model, z), xb).flatten(1) for xb in x])
    return J, torch.stack([_log_p(model, xb).detach() for xb in x])


def local_data_matrix(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, n, n)``: ``sum_i p_i g_i g_i^T`` summed one outer product at a time."""
    J, log_p = log_prob_jacobian(model, x)
    return torch.stack([sum(p_i * torch.outer(g_i, g_i) for p_i, g_i in zip(p.exp(), Jb))
                        for Jb, p in zip(J, log_p)])


def fisher_matrix(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, d, d)``: ``sum_i p_i grad_w log p_i grad_w log p_i^T``, one ``autograd.grad`` each."""
    params = list(model.parameters())
    out = []
    for xb in x:
        log_p = _log_p(model, xb)
        F = 0
        for i in range(log_p.shape[0]):
            grad = torch.cat([g.flatten() for g in
                              torch.autograd.grad(log_p[i], params, retain_graph=True)])
            F = F + log_p[i].exp().detach() * torch.outer(grad, grad)
        out.append(F)
    return torch.stack(out)


def log_prob_hessians(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, C, n, n)``: the full Hessian in ``x`` of each ``log p_i`` at each sample."""
    C = _log_p(model, x[0]).shape[0]
    return torch.stack([torch.stack([hessian(lambda z: _log_p(model, z.view_as(xb))[i],
                                             xb.flatten()) for i in range(C)]) for xb in x])


def log_prob_hvps(model: nn.Module, x: Tensor, V: Tensor) -> Tensor:
    """``(B, C, m, n)``: ``hvp`` of each ``log p_i`` at each sample with each ``V[b, k]``."""
    C = _log_p(model, x[0]).shape[0]
    return torch.stack([torch.stack([torch.stack([
        hvp(lambda z: _log_p(model, z)[i], xb, v.view_as(xb))[1].flatten() for v in Vb])
        for i in range(C)]) for xb, Vb in zip(x, V)])


def lie_brackets(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, C, C, n)``: ``H_i g_j - H_j g_i`` from full Hessians (eq. 3.5)."""
    H = log_prob_hessians(model, x)
    J, _ = log_prob_jacobian(model, x)
    HG = torch.einsum("bixy,bjy->bijx", H, J)
    return HG - HG.transpose(1, 2)


def parameter_lie_brackets(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, C, B, C, d)``: brackets of ``w -> grad_w log p_i(x_b, w)`` from full Hessians in w."""
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    sizes = [p.numel() for p in params]
    w = torch.cat([p.flatten() for p in params])

    def log_p(v: Tensor, b: int, i: int) -> Tensor:
        state = {n: c.view_as(p) for n, c, p in zip(names, v.split(sizes), params)}
        return torch.log_softmax(functional_call(model, state, (x[b:b + 1],)), -1)[0, i]

    B, C = model(x).shape
    grads = torch.stack([torch.stack([jacobian(lambda v: log_p(v, b, i), w) for i in range(C)])
                         for b in range(B)])
    hess = torch.stack([torch.stack([hessian(lambda v: log_p(v, b, i), w) for i in range(C)])
                        for b in range(B)])
    HX = torch.einsum("bixy,cjy->bicjx", hess, grads)  # H_{b,i} X_{c,j}
    return HX - HX.permute(2, 3, 0, 1, 4)


def kl_divergence(model: nn.Module, x: Tensor, dx: Tensor) -> Tensor:
    """``(B,)``: the textbook ``sum_i p'_i (log p'_i - log p_i)`` in float64 (fine unless some
    ``p`` is within rounding of 1)."""
    with torch.no_grad():
        log_p = torch.log_softmax(model(x).double(), -1)
        log_q = torch.log_softmax(model(x + dx).double(), -1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def _projector(rows: Tensor) -> Tensor:
    """``(n, n)`` orthogonal projector onto the row space of ``rows`` ``(C, n)``, by the
    pseudo-inverse (an SVD with a relative cut-off), not by leafkit's QR."""
    return torch.linalg.pinv(rows, rtol=1e-9) @ rows


def horizontal_path(model: nn.Module, source: Tensor, target: Tensor, *, step_size: float,
                    steps: int, projection: str = "exact",
                    bounds: tuple[float, float] | None = None) -> Tensor:
    """``(B, steps + 1, n)``: Algorithm 4.1 one path and one step at a time. ``J`` (or the score
    Jacobian, for ``projection="scores"``) from ``torch.autograd.functional.jacobian`` of one
    sample; the projection of ``target - x`` onto its row space by :func:`_projector`."""
    paths = []
    for s, d in zip(source, target):
        x, points = s.clone(), [s.flatten()]
        for _ in range(steps):
            rows = (score_jacobian(model, x[None])[0] if projection == "scores"
                    else log_prob_jacobian(model, x[None])[0][0])
            v = _projector(rows) @ (d - x).flatten()
            x = x + step_size * v.view_as(x) / v.norm()
            if bounds is not None:
                x = x.clamp(*bounds)
            points.append(x.flatten())
        paths.append(torch.stack(points))
    return torch.stack(paths)


def vertical_path(model: nn.Module, x0: Tensor, direction: Tensor, *, step_size: float,
                  steps: int) -> Tensor:
    """``(B, steps + 1, n)``: paths across leaves (Section 4.2), one sample and step at a time:
    the fixed unit direction ``u`` projected onto ``ker G = (row space of J)^perp``."""
    paths = []
    for x, u in zip(x0.clone(), direction):
        u = u.flatten() / u.norm()
        points = [x.flatten()]
        for _ in range(steps):
            J = log_prob_jacobian(model, x[None])[0][0]
            w = u - _projector(J) @ u
            x = x + step_size * w.view_as(x) / w.norm()
            points.append(x.flatten())
        paths.append(torch.stack(points))
    return torch.stack(paths)


def authors_horizontal_path(model: nn.Module, source: Tensor, target: Tensor, *,
                            step_size: float, steps: int,
                            bounds: tuple[float, float] | None = None) -> Tensor:
    """``(B, steps + 1, n)``: the authors' step, one path and one step at a time. ``J`` one class
    at a time, ``torch.autograd.grad`` of ``log_softmax(s(x))[i]``; the ``C`` gradient columns
    normalized (a zero column left at zero); least squares on all ``C`` by QR without pivoting,
    whose fitted value is ``Q Q^T d``; a step of ``step_size`` along it, then the clamp."""
    paths = []
    for s, d in zip(source, target):
        x, points = s.clone(), [s.flatten()]
        for _ in range(steps):
            xg = x.detach().requires_grad_()
            log_p = torch.log_softmax(model(xg.unsqueeze(0)), dim=-1)[0]
            cols = []
            for i in range(log_p.shape[0]):
                g = torch.autograd.grad(log_p[i], xg, retain_graph=True)[0].flatten()
                cols.append(g / g.norm() if g.norm() > 0 else g)
            Q, _ = torch.linalg.qr(torch.stack(cols, dim=1))
            v = Q @ (Q.T @ (d - x).flatten())
            x = (x + step_size * v.view_as(x) / v.norm()).detach()
            if bounds is not None:
                x = x.clamp(*bounds)
            points.append(x.flatten())
        paths.append(torch.stack(points))
    return torch.stack(paths)


def confident_linear(margin: float, dtype: torch.dtype):
    """A 3-class linear model ``s = A x`` at ``x = e_1``, whose top score leads by ``margin``, with
    its probabilities at 50 digits (mpmath): ``(model, x, A, p)``, ``A`` in float64, ``p`` a list
    of ``mpf``. Skips without mpmath."""
    import pytest

    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    A = torch.tensor([[margin, 0.5, -1.0], [0.0, 1.0, 2.0], [0.0, -2.0, 1.0]], dtype=torch.float64)
    model = nn.Linear(3, 3, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(A)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype)
    z = mpmath.fsum(mpmath.exp(v) for v in A[:, 0].tolist())
    return model, x, A, [mpmath.exp(v) / z for v in A[:, 0].tolist()]
