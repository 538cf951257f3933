"""leafkit.geometry against closed forms (linear softmax model, one-hidden-layer ReLU net),
Proposition 2.1, and the slow oracles of tests/oracles.py, over the case table of tests/cases.py."""

import cases
import oracles
import pytest
import torch
from torch import nn

from cases import assert_close
from leafkit import MLP, MnistCNN
from leafkit.fisher import local_fisher_matrix, log_prob_parameter_jacobian
from leafkit.geometry import (
    kl_divergence,
    local_data_matrix,
    local_data_matrix_from_jacobian,
    local_data_spectrum,
    local_data_trace,
    local_data_trace_from_jacobian,
    log_prob_jacobian,
    score_jacobian,
)
from leafkit import jacobian
from leafkit.jacobian import BATCHED_BACKWARD_BYTES, _log_prob_jacobian_direct, _score_jacobian

DT = torch.float64


@pytest.fixture(params=cases.case_params())
def case(request):
    return cases.make_case(*request.param)


@pytest.fixture(params=cases.case_params(dtypes=(DT,)))
def case64(request):
    return cases.make_case(*request.param)


@pytest.fixture
def linear():
    torch.manual_seed(1)
    model = nn.Linear(6, 4).to(DT)
    return model, torch.randn(5, 6, dtype=DT)


def test_linear_softmax_closed_form(linear):
    model, x = linear
    A = model.weight.detach()
    p = torch.softmax(model(x), -1).detach()
    J, log_p = log_prob_jacobian(model, x)
    eye = torch.eye(4, dtype=DT)
    assert_close(log_p.exp(), p)
    assert_close(J, (eye - torch.ones(4, 1, dtype=DT) * p.unsqueeze(1)) @ A)  # g_i = A^T (e_i - p)
    G = A.T @ (torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)) @ A
    assert_close(local_data_matrix(model, x), G)


def test_one_hidden_layer_relu_closed_form():
    torch.manual_seed(2)
    model = MLP(7, hidden=(9,), num_classes=4).to(DT)
    W1, b1, W2 = model.net[0].weight, model.net[0].bias, model.net[2].weight
    x = torch.randn(6, 7, dtype=DT)
    mask = (x @ W1.T + b1 > 0).to(DT).detach()
    Js, s = score_jacobian(model, x)
    assert_close(Js, (W2 * mask.unsqueeze(1)) @ W1.detach())
    assert_close(s, model(x).detach())


def test_log_softmax_output_gives_the_same_jacobian(case):
    model, x = case.model, case.x
    J, log_p = log_prob_jacobian(model, x)
    J2, log_p2 = log_prob_jacobian(nn.Sequential(model, nn.LogSoftmax(dim=1)), x)
    scale = float(J.abs().max())
    cases.assert_close(J2, J, rtol=case.tol["rtol"], atol=case.tol["atol"] * scale, what="J")
    cases.assert_close(log_p2, log_p, **case.tol, what="log p")


def test_against_oracles(case):
    model, x = case.model, case.x
    Js, s = score_jacobian(model, x)
    scale = float(Js.abs().max())
    tol = {"rtol": case.tol["rtol"], "atol": case.tol["atol"] * scale}
    cases.assert_close(Js, oracles.score_jacobian(model, x), **tol, what="score Jacobian")
    J, log_p = log_prob_jacobian(model, x)
    J_ref, log_p_ref = oracles.log_prob_jacobian(model, x)
    cases.assert_close(J, J_ref, **tol, what="J = Jac log p")
    cases.assert_close(log_p, log_p_ref, **case.tol, what="log p")
    cases.assert_close(local_data_matrix(model, x), oracles.local_data_matrix(model, x),
                       rtol=case.tol["rtol"], atol=case.tol["atol"] * scale**2, what="G")


@pytest.mark.parametrize("batch", [1, 9, 17])
@pytest.mark.parametrize("params", cases.case_params())
def test_both_jacobian_routes_match_the_oracle(params, batch):
    """Small batches take the vmapped backward pass, large ones C backward passes
    (BATCHED_BACKWARD_BYTES): in float32 batches 1 and 9 go the first way and 17 the second, in
    float64 batch 1 the first and 9 and 17 the second."""
    case = cases.make_case(*params, batch=batch)
    vmapped = batch * case.x.element_size() <= BATCHED_BACKWARD_BYTES
    assert vmapped == (batch == 1 or (batch == 9 and case.x.dtype == torch.float32))
    Js, s = score_jacobian(case.model, case.x)
    scale = float(Js.abs().max())
    cases.assert_close(Js, oracles.score_jacobian(case.model, case.x), rtol=case.tol["rtol"],
                       atol=case.tol["atol"] * scale, what=f"score Jacobian, batch {batch}")
    cases.assert_close(s, case.model(case.x).detach(), **case.tol, what="scores")


def test_proposition_2_1(case64):
    model, x = case64.model, case64.x
    J, log_p = log_prob_jacobian(model, x)
    G = local_data_matrix_from_jacobian(J, log_p)
    p = log_p.exp()
    scale = G.diagonal(dim1=1, dim2=2).sum(-1).max()
    assert_close(G, G.mT)  # (1) symmetric
    assert torch.linalg.eigvalsh(G).min() >= -1e-13 * scale  # (1) positive semidefinite
    assert_close(torch.einsum("bc,bcn->bn", p, J), torch.zeros_like(J[:, 0]))  # (2.9)
    S = torch.linalg.svdvals(J)  # (3) rank J = rank G <= C - 1
    assert (S[:, -1] <= 1e-12 * S[:, 0]).all() and (S[:, -2] > 1e-6 * S[:, 0]).all()
    v = torch.randn(x.shape[0], J.shape[-1], dtype=DT)  # (2) ker G = span(g_i)^perp
    v = v - (torch.linalg.lstsq(J.mT, v.unsqueeze(-1)).solution.mT @ J).squeeze(1)
    assert_close(torch.einsum("bcn,bn->bc", J, v), torch.zeros_like(p), atol=1e-11)
    assert_close(torch.einsum("bmn,bn->bm", G, v), torch.zeros_like(v), atol=1e-11 * scale)


def test_trace_and_spectrum(case64):
    model, x = case64.model, case64.x
    J, log_p = log_prob_jacobian(model, x)
    G = local_data_matrix_from_jacobian(J, log_p)
    trace = local_data_trace(model, x)
    assert trace.shape == (x.shape[0],)
    assert_close(trace, G.diagonal(dim1=1, dim2=2).sum(-1))
    assert_close(local_data_trace(model, x, batch_size=1), trace)
    eig = local_data_spectrum(J, log_p)
    assert eig.shape == log_p.shape
    top = torch.linalg.eigvalsh(G).flip(-1)[:, :eig.shape[1]]
    assert_close(eig, top, atol=1e-12 * float(trace.max()))


def test_local_fisher_matrix():
    torch.manual_seed(3)
    model = MLP(6, hidden=(5,), num_classes=4, activation_name="tanh").to(DT)
    x = torch.randn(3, 6, dtype=DT)
    F = local_fisher_matrix(model, x)
    d = sum(p.numel() for p in model.parameters())
    assert F.shape == (3, d, d)
    assert_close(F, oracles.fisher_matrix(model, x))
    assert_close(F, F.mT)
    eig = torch.linalg.eigvalsh(F)
    assert eig.min() >= -1e-13 * eig.max()
    assert ((eig > 1e-10 * eig.max()).sum(-1) <= 3).all()  # rank F <= C - 1
    Jw, log_p = log_prob_parameter_jacobian(model, x)
    assert_close(torch.einsum("bc,bcd->bd", log_p.exp(), Jw), torch.zeros(3, d, dtype=DT))


def test_dense_matrices_refuse_large_sizes():
    big = torch.zeros(1, 3 * 64 * 64)
    with pytest.raises(ValueError, match="max_n"):
        local_data_matrix(MLP(8), big)  # refused before the model runs
    with pytest.raises(ValueError, match="max_d"):
        local_fisher_matrix(MnistCNN(), torch.zeros(1, 1, 28, 28))
    model, x = MLP(12), torch.randn(2, 12)
    with pytest.raises(ValueError, match="factored"):
        local_data_matrix(model, x, max_n=11)
    assert local_data_matrix(model, x, max_n=12).shape == (2, 12, 12)


def test_parameters_get_no_gradients_and_results_no_graph(case):
    model, x = case.model, case.x
    outputs = [*score_jacobian(model, x), *log_prob_jacobian(model, x), local_data_trace(model, x)]
    if not isinstance(model, MnistCNN):
        outputs += [local_data_matrix(model, x), local_fisher_matrix(model, x[:1], max_d=10**4)]
    kl = kl_divergence(model, x, 1e-3 * x)
    assert not any(t.requires_grad for t in [*outputs, kl])
    assert all(p.grad is None for p in model.parameters())
    assert all(t.dtype == x.dtype for t in outputs)
    assert kl.dtype == torch.float64  # the KL is computed in float64 by design


def test_float32_agrees_with_float64(case64):
    model, x = case64.model, case64.x
    J64, _ = log_prob_jacobian(model, x)
    J32, _ = log_prob_jacobian(model.float(), x.float())
    assert J32.dtype == torch.float32
    torch.testing.assert_close(J32.double(), J64, rtol=1e-5, atol=1e-5 * float(J64.abs().max()))


def test_kl_second_order_coefficient_is_one_half():
    torch.manual_seed(4)
    model = MLP(10, hidden=(16, 16), num_classes=5, activation_name="tanh").to(DT)
    x, v = torch.randn(4, 10, dtype=DT), torch.randn(4, 10, dtype=DT)
    G = local_data_matrix(model, x)
    vGv = torch.einsum("bi,bij,bj->b", v, G, v)
    for eps in (1e-2, 1e-3, 1e-4):
        ratio = kl_divergence(model, x, eps * v) / (eps**2 * vGv)
        assert (ratio - 0.5).abs().max() < 10 * eps  # eq. (3.2), with the factor 1/2
    assert_close(kl_divergence(model, x, 0.3 * v), oracles.kl_divergence(model, x, 0.3 * v))
    assert_close(kl_divergence(model, x, 0 * v), torch.zeros(4, dtype=DT))


def test_kl_is_accurate_for_confident_predictions():
    model = nn.Linear(3, 3).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[30.0, 0, 0], [0, 1, 0], [0, 0, 1]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=DT)  # p_max = 1 - 2e-13
    dx = torch.tensor([[0.0, 1e-4, -1e-4]], dtype=DT)
    G = local_data_matrix(model, x)
    half_dGd = 0.5 * torch.einsum("bi,bij,bj->b", dx, G, dx)
    assert_close(kl_divergence(model, x, dx) / half_dGd, torch.ones(1, dtype=DT), rtol=1e-3)
    # the textbook formula from log_softmax differences is off by orders of magnitude here
    assert not torch.allclose(oracles.kl_divergence(model, x, dx) / half_dGd,
                              torch.ones(1, dtype=DT), rtol=0.5)


@pytest.mark.parametrize("dtype, margin", [(torch.float32, 30.0), (torch.float64, 45.0)])
def test_log_prob_jacobian_keeps_the_predicted_field_at_confident_points(dtype, margin):
    # p_c rounds to 1, so grad s_c - p^T Js cancels to zero; the closed form g_i = A^T (e_i - p),
    # with p at 50 digits (mpmath), says what the field really is
    model, x, A, p = oracles.confident_linear(margin, dtype)
    mpmath = pytest.importorskip("mpmath")
    ref = torch.tensor([[float(mpmath.fsum(((i == k) - p[k]) * A[k, j].item() for k in range(3)))
                         for j in range(3)] for i in range(3)], dtype=torch.float64)
    assert float(1 - p[0]) < torch.finfo(dtype).eps  # p_c is 1 in this dtype
    J, log_p = log_prob_jacobian(model, x)
    assert_close(J[0].double(), ref, rtol=10 * torch.finfo(dtype).eps, atol=0,
                 what="g_i at a confident point")
    balance = (log_p.exp().unsqueeze(1) @ J).abs().max()  # p^T J = 0, Proposition 2.1
    assert balance <= 10 * torch.finfo(dtype).eps * ref[0].abs().max()


@pytest.mark.parametrize("name", ["mlp_relu", "cnn"])
def test_log_prob_jacobian_through_log_softmax_matches_the_oracle(name):
    # the authors' route (backward through log_softmax), also for a subset of rows of a batch
    case = cases.make_case(name, torch.float64, batch=3)
    J, log_p = _log_prob_jacobian_direct(case.model, case.x)
    J_ref, log_p_ref = oracles.log_prob_jacobian(case.model, case.x)
    cases.assert_close(J, J_ref, rtol=1e-10, atol=1e-12, what="J through log_softmax")
    cases.assert_close(log_p, log_p_ref, rtol=1e-12, atol=1e-12, what="log p")
    rows = torch.tensor([False, True, False])
    mixed, out = _log_prob_jacobian_direct(case.model, case.x, rows)
    Js, s = _score_jacobian(case.model, case.x)
    cases.assert_close(mixed[1], J[1], rtol=1e-12, atol=1e-14, what="log_softmax row")
    cases.assert_close(mixed[::2], Js[::2], rtol=1e-12, atol=1e-14, what="score rows")
    cases.assert_close(out[::2], s[::2], rtol=0, atol=0, what="scores")


@pytest.mark.parametrize("name", ["cnn", "mlp_relu"])
def test_chunked_jacobians_match_the_oracle(name, monkeypatch):
    """On the CPU a batch above CPU_JACOBIAN_CHUNK is taken in equal chunks (here 7 samples with
    a chunk of 3: chunks 3, 3, 1), with the authors' rows split along; every route still gives
    each sample its own Jacobian."""
    monkeypatch.setattr(jacobian, "CPU_JACOBIAN_CHUNK", 3)
    case = cases.make_case(name, torch.float64, batch=7)
    Js_ref = oracles.score_jacobian(case.model, case.x)
    J_ref, log_p_ref = oracles.log_prob_jacobian(case.model, case.x)
    Js, s = score_jacobian(case.model, case.x)
    cases.assert_close(Js, Js_ref, rtol=1e-10, atol=1e-12, what="score Jacobian in chunks")
    cases.assert_close(s, case.model(case.x).detach(), rtol=1e-12, atol=1e-12, what="scores")
    cases.assert_close(_score_jacobian(case.model, case.x)[0], Js_ref, rtol=1e-10, atol=1e-12,
                       what="step-loop score Jacobian in chunks")
    rows = torch.tensor([True, False, False, True, True, False, True])
    mixed, out = _log_prob_jacobian_direct(case.model, case.x, rows)
    cases.assert_close(mixed[rows], J_ref[rows], rtol=1e-10, atol=1e-12, what="log_softmax rows")
    cases.assert_close(mixed[~rows], Js_ref[~rows], rtol=1e-10, atol=1e-12, what="score rows")
    cases.assert_close(out[rows], log_p_ref[rows], rtol=1e-12, atol=1e-12, what="log p rows")
