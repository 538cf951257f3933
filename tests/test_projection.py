"""leafkit.projection: bases of D_x = span_i g_i and the projections onto D_x and ker G."""

import pytest
import torch

from cases import assert_close
from leafkit import MLP, MnistCNN
from leafkit.geometry import local_data_matrix_from_jacobian, log_prob_jacobian
from leafkit.projection import default_rtol, project_kernel, project_tangent, tangent_basis

DT = torch.float64


@pytest.fixture(scope="module", params=["cnn", "mlp"])
def jac(request):
    """``(x, J, log_p)`` for a small CNN on images or an MLP on vectors, float64 (read-only)."""
    torch.manual_seed(0)
    if request.param == "cnn":
        model, x = MnistCNN(channels=(4, 8), hidden=32), torch.randn(3, 1, 28, 28)
    else:
        model, x = MLP(12, hidden=(16,), num_classes=5, activation_name="tanh"), torch.randn(3, 12)
    x = x.to(DT)
    return (x, *log_prob_jacobian(model.to(DT).eval(), x))


def projector(Q):
    return Q @ Q.mT


@pytest.mark.parametrize("method", ["qr", "svd"])
def test_basis_is_orthonormal_and_spans_the_rows(jac, method):
    _, J, log_p = jac
    B, C, n = J.shape
    Q = tangent_basis(J, log_p, method=method)
    assert Q.shape == (B, n, C - 1)
    assert_close(Q.mT @ Q, torch.eye(C - 1, dtype=DT).expand(B, -1, -1))
    assert_close(J @ projector(Q), J)  # every g_i lies in span(Q)


def test_qr_and_svd_span_the_same_space(jac):
    _, J, log_p = jac
    P = projector(tangent_basis(J, log_p, method="svd"))
    assert_close(projector(tangent_basis(J, log_p)), P)
    assert_close(projector(tangent_basis(J)), P)  # log_p unknown: drop the smallest row


def test_projections_split_every_vector(jac):
    x, J, log_p = jac
    v = torch.randn_like(x)
    basis = tangent_basis(J, log_p)
    tangent = project_tangent(J, v, log_p)
    kernel = project_kernel(J, v, log_p)
    assert tangent.shape == kernel.shape == v.shape
    assert_close(tangent + kernel, v)
    assert_close((tangent * kernel).flatten(1).sum(-1), torch.zeros(len(v), dtype=DT))
    assert_close(project_tangent(J, tangent, basis=basis), tangent)  # idempotent
    assert_close(project_kernel(J, kernel, basis=basis), kernel)
    assert_close(project_tangent(J, kernel, basis=basis), torch.zeros_like(v))
    G = local_data_matrix_from_jacobian(J, log_p)  # G kills ker G, J too
    assert_close(G @ kernel.flatten(1).unsqueeze(-1), torch.zeros(*J.shape[::2], 1, dtype=DT))
    assert_close(J @ kernel.flatten(1).unsqueeze(-1), torch.zeros(*J.shape[:2], 1, dtype=DT))
    assert_close(project_tangent(J, v.flatten(1), log_p), tangent.flatten(1))  # (B, n) works too


def test_vectors_in_the_distribution_are_unchanged(jac):
    _, J, log_p = jac
    v = (torch.randn(J.shape[0], 1, J.shape[1], dtype=DT) @ J).squeeze(1)  # combinations of g_i
    assert_close(project_tangent(J, v, log_p), v)
    assert_close(project_kernel(J, v, log_p), torch.zeros_like(v),
                 atol=1e-12 * float(v.abs().max()))


def test_svd_basis_follows_the_rank_of_each_sample():
    torch.manual_seed(1)
    A = torch.randn(2, 4, 20, dtype=DT)
    A[1, 1:] = A[1, :1] * torch.tensor([[2.0], [-1.0], [0.5]], dtype=DT)  # rank 1
    A[0, 3] = A[0, 0] + A[0, 1]  # rank 3
    Q = tangent_basis(A, method="svd")
    assert Q.shape == (2, 20, 3)
    assert_close(Q[1, :, 1:], torch.zeros(20, 2, dtype=DT))  # padding columns are zero
    v = torch.randn(2, 20, dtype=DT)
    a = A[1, 0]
    assert_close(project_tangent(A, v, basis=Q)[1], a * (a @ v[1]) / (a @ a))
    assert_close(A @ projector(Q), A)


def test_default_tolerance():
    assert default_rtol(torch.float64) == 1e-10
    assert default_rtol(torch.float32) == 1e-5


def test_bad_arguments(jac):
    x, J, log_p = jac
    with pytest.raises(ValueError, match="'qr', 'svd'"):
        tangent_basis(J, log_p, method="eigh")
    with pytest.raises(ValueError, match="batch of 3 vectors"):
        project_tangent(J, x[:, :-1] if x.dim() == 2 else x[..., :-1], log_p)
    with pytest.raises(ValueError, match="batch of 3 vectors"):
        project_kernel(J, x[:2], log_p)
