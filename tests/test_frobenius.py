"""leafkit.frobenius: Lie brackets of the fields g_i, Theorem 3.1 (ReLU => involutive), its
failure for smooth activations, and the parameter-space distribution of the Remark."""

import oracles
import pytest
import torch
from torch import nn

from cases import assert_close
from leafkit import MLP, MnistCNN
from leafkit.frobenius import (
    affine_lie_brackets,
    affine_log_prob_hessian,
    involutivity_residual,
    lie_brackets,
    log_prob_hessian_vector_products,
    parameter_involutivity_residual,
    parameter_lie_brackets,
)
from leafkit.geometry import local_data_matrix_from_jacobian, log_prob_jacobian, score_jacobian

DT = torch.float64
SMOOTH = ["tanh", "softplus", "gelu"]


def tiny(activation, seed=0):
    """A 5-6-4 MLP in float64 and three inputs: small enough for full Hessians."""
    torch.manual_seed(seed)
    return MLP(5, hidden=(6,), num_classes=4, activation_name=activation).to(DT), \
        torch.randn(3, 5, dtype=DT)


@pytest.mark.parametrize("activation", ["relu", *SMOOTH])
def test_brackets_match_full_hessian_oracle(activation):
    model, x = tiny(activation)
    brackets = lie_brackets(model, x)
    assert brackets.shape == (3, 4, 4, 5)
    assert_close(brackets, oracles.lie_brackets(model, x))
    assert_close(brackets, -brackets.transpose(1, 2))  # antisymmetry


def test_hessian_vector_products_match_oracle_on_a_cnn():
    torch.manual_seed(1)
    model = MnistCNN(channels=(2, 4), hidden=8).to(DT).eval()
    x = torch.randn(2, 1, 28, 28, dtype=DT)
    V = torch.randn(2, 2, 1, 28, 28, dtype=DT)
    HV = log_prob_hessian_vector_products(model, x, V)
    assert HV.shape == (2, 10, 2, 784)
    assert_close(HV, oracles.log_prob_hvps(model, x, V))
    assert_close(log_prob_hessian_vector_products(model, x, V.flatten(2)), HV)
    assert not HV.requires_grad and all(p.grad is None for p in model.parameters())


def test_relu_hessians_are_all_minus_G():
    # eq. (3.10): H(s_k) = 0 makes H(log p_i) = -G for every class i,
    # so that [g_i, g_j] = G (g_i - g_j)
    model, x = tiny("relu")
    H = log_prob_hessian_vector_products(model, x, torch.eye(5, dtype=DT).expand(3, 5, 5))
    J, log_p = log_prob_jacobian(model, x)
    G = local_data_matrix_from_jacobian(J, log_p)
    assert_close(H, -G.unsqueeze(1).expand_as(H))
    GJ = J @ G  # rows G g_i
    assert_close(lie_brackets(model, x), GJ.unsqueeze(2) - GJ.unsqueeze(1))


def relu_cnn():
    torch.manual_seed(2)
    model = MnistCNN(channels=(4, 8), hidden=32).to(DT).eval()
    return model, torch.randn(2, 1, 28, 28, dtype=DT) + 1e-2 * torch.randn(2, 1, 28, 28, dtype=DT)


def relu_mlp():
    torch.manual_seed(3)
    return MLP(20, hidden=(32, 32)).to(DT), torch.randn(4, 20, dtype=DT)


def linear():
    torch.manual_seed(4)
    return nn.Linear(6, 5).to(DT), torch.randn(3, 6, dtype=DT)


@pytest.mark.parametrize("make", [relu_mlp, relu_cnn, linear])
def test_relu_networks_are_involutive(make):
    model, x = make()
    residual = involutivity_residual(model, x)
    assert residual.shape == (x.shape[0],)
    assert residual.max() <= 1e-8  # Theorem 3.1


@pytest.mark.parametrize("activation", SMOOTH)
def test_smooth_activations_are_not_involutive(activation):
    torch.manual_seed(5)
    model = MLP(20, hidden=(32, 32), activation_name=activation).to(DT)
    x = torch.randn(4, 20, dtype=DT)
    assert involutivity_residual(model, x).min() >= 1e-2


def test_dtype_option_works_on_a_copy():
    model, x = relu_mlp()
    model, x = model.float(), x.float()
    assert involutivity_residual(model, x, dtype=DT).max() <= 1e-8
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert involutivity_residual(model, x).dtype == torch.float32


def test_vanishing_brackets_give_zero_not_nan():
    model = nn.Linear(6, 5).to(DT)
    nn.init.zeros_(model.weight)  # p does not depend on x: g_i = 0, brackets = 0
    x = torch.randn(3, 6, dtype=DT)
    assert_close(involutivity_residual(model, x), torch.zeros(3, dtype=DT))


def test_parameter_brackets_match_full_hessian_oracle():
    torch.manual_seed(6)
    model = MLP(3, hidden=(4,), num_classes=3, activation_name="tanh").to(DT)
    x = torch.randn(2, 3, dtype=DT)
    brackets = parameter_lie_brackets(model, x)
    assert brackets.shape == (2, 3, 2, 3, 31)
    assert_close(brackets, oracles.parameter_lie_brackets(model, x))
    assert_close(brackets, -brackets.permute(2, 3, 0, 1, 4))


def test_parameter_space_distribution_is_not_involutive():
    # the Remark: even for a ReLU network, the brackets leave span{grad_w log p_i(x_b)}
    torch.manual_seed(7)
    model, x = MLP(10, hidden=(16,), num_classes=4).to(DT), torch.randn(3, 10, dtype=DT)
    assert parameter_involutivity_residual(model, x) >= 1e-2
    assert all(p.grad is None for p in model.parameters())


def test_parameter_residual_needs_fewer_fields_than_parameters():
    model = MLP(2, hidden=(2,), num_classes=3)  # d = 15 <= B (C - 1) = 16
    with pytest.raises(ValueError, match="B\\*\\(C-1\\) = 16"):
        parameter_involutivity_residual(model, torch.randn(8, 2))


def test_bad_vectors():
    model, x = tiny("tanh")
    with pytest.raises(ValueError, match="m vectors of 5 entries"):
        log_prob_hessian_vector_products(model, x, torch.randn(3, 2, 4, dtype=DT))
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        log_prob_hessian_vector_products(model, x, torch.randn(3, 5, dtype=DT))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_affine_closed_forms_hold_for_relu_and_break_for_tanh(activation):
    """eq. (3.10) and [g_i, g_j] = G (g_i - g_j) against the full-Hessian oracles."""
    model, x = tiny(activation, seed=1)
    J, log_p = log_prob_jacobian(model, x)
    J_s, _ = score_jacobian(model, x)
    V = torch.randn(3, 2, 5, dtype=DT)
    hessian = oracles.log_prob_hessians(model, x)  # (B, C, n, n), full autograd Hessians
    exact = torch.einsum("bcij,bmj->bcmi", hessian, V)  # H(log p_c) v for every class
    closed = affine_log_prob_hessian(J, log_p, J_s, V)
    gap = (exact - closed.unsqueeze(1)).norm() / exact.norm()
    brackets_gap = ((oracles.lie_brackets(model, x) - affine_lie_brackets(J, log_p)).norm()
                    / oracles.lie_brackets(model, x).norm())
    if activation == "relu":
        assert gap < 1e-12 and brackets_gap < 1e-12
    else:
        assert gap > 1e-2 and brackets_gap > 1e-2


def test_affine_log_prob_hessian_rejects_mismatched_shapes():
    model, x = tiny("relu")
    J, log_p = log_prob_jacobian(model, x)
    with pytest.raises(ValueError, match=r"V of shape \(B, m, n\) = \(3, m, 5\)"):
        affine_log_prob_hessian(J, log_p, J, torch.zeros(3, 5, dtype=DT))


def test_hessians_stay_accurate_at_confident_points():
    # a linear model whose p_max is 1 - 1e-13: H(log p_i) = -A^T (diag p - p p^T) A for every i,
    # with p at 50 digits (mpmath); through torch.log_softmax the entries carry errors of 1e-3
    model, x, A, p = oracles.confident_linear(30.0, DT)
    mpmath = pytest.importorskip("mpmath")
    cov = [[p[k] * ((k == m) - p[m]) for m in range(3)] for k in range(3)]  # diag p - p p^T
    G = torch.tensor([[float(mpmath.fsum(A[k, a].item() * cov[k][m] * A[m, b].item()
                                         for k in range(3) for m in range(3)))
                       for b in range(3)] for a in range(3)], dtype=DT)
    HV = log_prob_hessian_vector_products(model, x, torch.eye(3, dtype=DT).unsqueeze(0))
    for i in range(3):
        assert_close(HV[0, i], -G, rtol=1e-12, atol=0, what=f"H(log p_{i}) at p_max = 1 - 1e-13")
