"""Unit tests of leafkit.expansions: both sides of eq. (3.1)-(3.2) against closed forms."""

import pytest
import torch
from torch import nn
from torch.nn.functional import normalize

import leafkit
from leafkit import expansions
from leafkit.models import MLP

TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_kl_second_order_linear_model(gen):
    torch.manual_seed(0)
    linear = nn.Linear(5, 3).double().eval()
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    v = normalize(torch.randn(4, 5, generator=gen, dtype=torch.float64), dim=1)
    eps = torch.tensor([1e-5, 1e-1], dtype=torch.float64)
    kl, quad = expansions.kl_second_order(linear, x, v, eps)
    A, p = linear.weight.detach(), linear(x).softmax(-1).detach()
    Av = v @ A.T
    closed = (p * Av.square()).sum(1) - (p * Av).sum(1).square()  # v^T A^T (diag p - p p^T) A v
    torch.testing.assert_close(quad[:, 1] / eps[1] ** 2, closed, **TOL)
    torch.testing.assert_close(kl[:, 0] / quad[:, 0], torch.full((4,), 0.5, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    # the exact KL at the larger step, from the softmax of the moved scores
    q = (linear(x + eps[1] * v)).softmax(-1).detach()
    torch.testing.assert_close(kl[:, 1], (q * (q.log() - p.log())).sum(1), **TOL)
    with pytest.raises(ValueError, match="shape of x"):
        expansions.kl_second_order(linear, x, v[:, :3], eps)


def test_parameter_kl_second_order_matches_fisher(gen):
    torch.manual_seed(0)
    net = MLP(4, (6,), num_classes=3).double().eval()
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    d = sum(p.numel() for p in net.parameters())
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    u = u / u.norm()
    eps = torch.tensor([1e-5, 1.0], dtype=torch.float64)
    kl, quad = expansions.parameter_kl_second_order(net, x, u, eps)
    assert kl.shape == quad.shape == (3, 2) and kl.dtype == torch.float64
    F = leafkit.local_fisher_matrix(net, x)
    torch.testing.assert_close(quad[:, 1], torch.einsum("i,bij,j->b", u, F, u), **TOL)
    torch.testing.assert_close(kl[:, 0] / quad[:, 0], torch.full((3,), 0.5, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="flat parameter vector"):
        expansions.parameter_kl_second_order(net, x, u[:-1], eps)


def test_parameter_kl_at_a_finite_step_is_the_kl_of_the_moved_network(gen):
    torch.manual_seed(1)
    net = MLP(4, (5,), num_classes=3, activation_name="tanh").double().eval()
    moved = MLP(4, (5,), num_classes=3, activation_name="tanh").double().eval()
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    w = torch.cat([p.detach().flatten() for p in net.parameters()])
    u = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.3, 0.7], dtype=torch.float64)
    kl, _ = expansions.parameter_kl_second_order(net, x, u, eps)
    for k, e in enumerate(eps):
        torch.nn.utils.vector_to_parameters(w + e * u, moved.parameters())
        with torch.no_grad():
            p, q = net(x).softmax(-1), moved(x).softmax(-1)
        torch.testing.assert_close(kl[:, k], (q * (q.log() - p.log())).sum(1), **TOL)


def test_expansions_run_in_eval_mode_and_restore_it(gen):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    v = normalize(torch.randn(3, 4, generator=gen, dtype=torch.float64), dim=1)
    u = torch.randn(sum(p.numel() for p in net.parameters()), generator=gen, dtype=torch.float64)
    eps = torch.tensor([1e-2, 1e-1], dtype=torch.float64)
    expected = (expansions.kl_second_order(net.eval(), x, v, eps),
                expansions.parameter_kl_second_order(net, x, u, eps))
    net.train()
    got = (expansions.kl_second_order(net, x, v, eps),
           expansions.parameter_kl_second_order(net, x, u, eps))
    assert net.training and net[1].training  # the caller's mode is back
    torch.testing.assert_close(got, expected, **TOL)  # dropout was off: same, deterministic
