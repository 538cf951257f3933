"""Unit tests of leafkit.monitoring: the trace and rank log of Figure 2, against closed forms."""

import pytest
import torch
from torch import nn

import leafkit
from leafkit.geometry import numerical_rank
from leafkit.monitoring import fixed_images, numerical_ranks, trace_hook

SMALL = leafkit.MnistCNN(channels=(2, 4), hidden=8).config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = leafkit.build_model(SMALL).eval()
    x = torch.randn(12, 1, 28, 28)
    y = torch.arange(12) % 10
    return model, x, y


def test_numerical_ranks_closed_form():
    # J = diag(sigma) V^T with known singular values; uniform p makes G's eigenvalues sigma^2 / C
    torch.manual_seed(0)
    C, n = 4, 6
    V = torch.linalg.qr(torch.randn(n, C, dtype=torch.float64)).Q
    sigma = torch.tensor([1.0, 3e-2, 3e-3, 1e-8], dtype=torch.float64)
    J = (sigma[:, None] * V.mT).unsqueeze(0)
    log_p = torch.full((1, C), 1.0 / C, dtype=torch.float64).log()
    rank_J, rank_G = numerical_ranks(J, log_p, rtols=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5))
    assert rank_J.tolist() == [[1, 2, 3, 3, 3]]  # sigma ratios 3e-2, 3e-3, 1e-8
    assert rank_G.tolist() == [[1, 1, 1, 2, 2]]  # eigenvalue ratios 9e-4, 9e-6, 1e-16


def test_numerical_rank_counts_above_tolerance():
    # numerical_rank (leafkit.geometry) is the count numerical_ranks uses
    lam = torch.tensor([[1.0, 1e-3, 1e-9, -1e-17], [2.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    ranks = numerical_rank(lam, [1e-1, 1e-6, 1e-12, 1e-20])
    assert ranks.tolist() == [[1, 2, 3, 4], [2, 2, 2, 2]]
    with pytest.raises(ValueError, match=r"\(B, m\)"):
        numerical_rank(torch.ones(3), [0.1])


def low_rank_linear(rank: int, C: int = 5, n: int = 7) -> nn.Linear:
    """``s = A x`` with ``A = sum_k c_k a_k^T`` of rank ``rank``: then ``J = (I - 1 p^T) A`` and
    ``G = J^T diag(p) J`` have rank ``rank`` exactly (the centred ``c_k`` stay independent)."""
    gen = torch.Generator().manual_seed(rank)
    a = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=torch.float64)).Q  # (n, r)
    c = torch.linalg.qr(torch.randn(C, rank, generator=gen, dtype=torch.float64)).Q  # (C, r)
    c = c - c.mean(0)  # orthogonal to 1, so that centring by p keeps them apart
    model = nn.Linear(n, C, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(c @ a.T)
    return model


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_trace_hook_ranks_match_the_rank_by_construction(rank):
    model = low_rank_linear(rank)
    x = 0.3 * torch.randn(6, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    rtols = (1e-2, 1e-4, 1e-6)
    record = trace_hook(x, rank_rtol=1e-4, rtols=rtols)(0, model)
    assert record["rtols"] == list(rtols)
    assert record["rank_J_by_rtol"] == record["rank_G_by_rtol"] == [rank] * 3
    assert record["rank_J"] == record["rank_G"] == rank
    J, log_p = leafkit.log_prob_jacobian(model, x)
    rank_J, rank_G = numerical_ranks(J, log_p, rtols)
    assert rank_J.tolist() == rank_G.tolist() == [[rank] * 3] * 6


def test_trace_hook_matches_the_closed_form_of_a_linear_model():
    # s = A x + b: g_i = A^T (e_i - p) and Tr G = sum_i p_i ||A^T (e_i - p)||^2, here in float64
    torch.manual_seed(0)
    C, n, N = 4, 6, 9
    model = nn.Linear(n, C).double()
    x = torch.randn(N, n, dtype=torch.float64)
    y = torch.arange(N) % C
    record = trace_hook(x, y, batch_size=4, test=(x[:5], y[:5]))(0, model)
    A, b = model.weight.detach(), model.bias.detach()
    s = x @ A.T + b
    log_p = s - s.logsumexp(1, keepdim=True)
    p = log_p.exp()
    g = (torch.eye(C, dtype=torch.float64)[None] - p[:, None, :]) @ A  # (N, C, n)
    trace = (p * g.square().sum(-1)).sum(1)
    assert record["trace_mean"] == pytest.approx(trace.mean().item(), rel=1e-12)
    assert record["trace_median"] == pytest.approx(trace.sort().values[N // 2].item(), rel=1e-12)
    assert record["train_loss"] == pytest.approx(-log_p[torch.arange(N), y].mean().item(),
                                                 rel=1e-12)
    assert record["train_accuracy"] == pytest.approx((s.argmax(1) == y).double().mean().item())
    assert record["test_accuracy"] == pytest.approx((s[:5].argmax(1) == y[:5]).double().mean()
                                                    .item())
    assert 0 < record["train_accuracy"] < 1  # the check can tell right from wrong


def test_trace_hook_chunking_does_not_matter(tiny):
    model, x, _ = tiny
    a = trace_hook(x, batch_size=None)(0, model)
    b = trace_hook(x, batch_size=5)(0, model)
    assert a.keys() == b.keys() and "train_loss" not in a and "test_accuracy" not in a
    assert a["trace_mean"] == pytest.approx(b["trace_mean"], rel=1e-5)
    assert a["rank_G_by_rtol"] == b["rank_G_by_rtol"]


def test_trace_hook_in_training(tiny, cache_tmp):
    _, x, y = tiny
    hook = trace_hook(x[:4], y[:4])
    first = leafkit.train(SMALL, x, y, steps=4, batch_size=6, hook=hook, hook_every=2,
                          hook_key="test-trace", progress=False)
    assert [r["step"] for r in first.log] == [0, 2, 4]
    again = leafkit.train(SMALL, x, y, steps=4, batch_size=6, hook=hook, hook_every=2,
                          hook_key="test-trace", progress=False)
    assert again.from_cache and again.log == first.log


def test_fixed_images_are_seeded_and_distinct():
    a, b = fixed_images(100, 30), fixed_images(100, 30)
    assert torch.equal(a, b) and len(a.unique()) == 30
    assert not torch.equal(a, fixed_images(100, 30, seed=1))
    with pytest.raises(ValueError, match="n_images"):
        fixed_images(10, 11)


def test_bad_arguments(tiny):
    _, x, y = tiny
    with pytest.raises(ValueError, match="labels must have shape"):
        trace_hook(x, y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        trace_hook(x, batch_size=0)
    with pytest.raises(ValueError, match="rtols"):
        numerical_ranks(torch.zeros(1, 3, 4), torch.zeros(1, 3), rtols=(2.0,))
    with pytest.raises(ValueError, match="need J of shape"):
        numerical_ranks(torch.zeros(3, 4), torch.zeros(1, 3))
