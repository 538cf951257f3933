"""The planar picture of book/intuition.md against closed forms.

With two classes, ``m = s_1 - s_2`` and ``g_1 = p_2 grad m``, ``g_2 = -p_1 grad m``, so
``G = p_1 p_2 grad m grad m^T`` (eq. 2.5) has rank ``1 = C - 1`` (eq. 2.9), ``D_x`` (eq. 3.3) is
the line of ``grad m`` and ``ker G`` is tangent to the level curve of ``p``. For a linear
(logistic) model ``grad m = a_1 - a_2`` is constant: the data leaves are straight lines along it,
the kernel leaves straight lines across it, and the paths of leafkit.paths follow them exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import leafkit
from leafkit import geometry, projection, regions


def linear_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A float64 ``Linear(2, 2)`` with seeded weights and the unit vector of ``a_1 - a_2``."""
    torch.manual_seed(seed)
    model = nn.Linear(2, 2).double().eval()
    a = model.weight.detach()
    return model, (a[0] - a[1]) / (a[0] - a[1]).norm()


def relu_model(seed: int = 0, n: int = 2, C: int = 2, act: str = "relu") -> nn.Module:
    torch.manual_seed(seed)
    return leafkit.MLP(n, (16,), C, activation_name=act).double().eval()


def points(B: int = 64, n: int = 2, seed: int = 1) -> torch.Tensor:
    return 2 * torch.rand(B, n, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64) - 1


def test_logistic_G_is_p1_p2_w_wT_and_D_is_spanned_by_w():
    model, w = linear_model()
    x = points()
    J, log_p = leafkit.log_prob_jacobian(model, x)
    p = log_p.exp()
    a = model.weight.detach()
    grad_m = a[0] - a[1]
    torch.testing.assert_close(J[:, 0], p[:, 1:2] * grad_m.expand_as(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(J[:, 1], -p[:, 0:1] * grad_m.expand_as(x), rtol=1e-12, atol=0)
    G = leafkit.local_data_matrix(model, x)
    closed = (p[:, 0] * p[:, 1])[:, None, None] * torch.outer(grad_m, grad_m)
    torch.testing.assert_close(G, closed, rtol=1e-12, atol=1e-15)
    u = projection.tangent_basis(J, log_p)[..., 0]
    torch.testing.assert_close((u @ w).abs(), torch.ones(len(x), dtype=x.dtype), rtol=0,
                               atol=1e-14)
    kernel = projection.project_kernel(J, w.expand_as(x).clone(), log_p)
    assert kernel.abs().max() < 1e-14


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_two_classes_in_the_plane_have_rank_one(act):
    model = relu_model(act=act)
    x = points(200)
    J, log_p = leafkit.log_prob_jacobian(model, x)
    spectrum = geometry.local_data_spectrum(J, log_p)
    assert (geometry.numerical_rank(spectrum, [1e-10])[:, 0] == 1).all()
    # D_x is orthogonal to ker G, and G vanishes on ker G
    G = leafkit.local_data_matrix(model, x)
    u = projection.tangent_basis(J, log_p)[..., 0]
    k = torch.stack([-u[:, 1], u[:, 0]], 1)  # the orthogonal line in the plane
    assert projection.project_tangent(J, k, log_p).abs().max() < 1e-13
    Gk = (G @ k[..., None])[..., 0].norm(dim=1) / G.flatten(1).norm(dim=1)
    assert Gk.max() < 1e-12


def test_logistic_kernel_leaves_are_straight_and_keep_p():
    model, w = linear_model()
    x0 = points(8)
    walk = leafkit.vertical_path(model, x0, torch.tensor([0.3, 1.0], dtype=torch.float64),
                                 step_size=0.02, steps=100, record_every=1, progress=False)
    p = walk.probs[..., 0]
    assert (p - p[:, :1]).abs().max() < 1e-12
    along_w = (walk.points - x0[:, None]) @ w  # no motion along D_x = span(w)
    assert along_w.abs().max() < 1e-12
    torch.testing.assert_close(walk.distance[:, -1], torch.full((8,), 2.0, dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_logistic_horizontal_path_slides_to_the_foot_of_the_perpendicular():
    model, w = linear_model()
    s, d = points(8, seed=2), points(8, seed=3)
    path = leafkit.horizontal_path(model, s, d, step_size=0.02, max_steps=200, tol=None,
                                   record_every=1, progress=False)
    off_line = (path.points - s[:, None]) - ((path.points - s[:, None]) @ w)[..., None] * w
    assert off_line.norm(dim=-1).max() < 1e-12  # stays on the data leaf s + t w
    foot = s + ((d - s) @ w)[:, None] * w
    assert (path.final - foot).norm(dim=1).max() <= 0.02 + 1e-12


def test_relu_D_is_constant_on_a_linear_piece_and_turns_between_pieces():
    model = relu_model()
    x = points(400)
    J, log_p = leafkit.log_prob_jacobian(model, x)
    u = projection.tangent_basis(J, log_p)[..., 0]
    codes = regions.activation_patterns(model, x)
    same = (codes[:, None] == codes[None]).all(-1)
    cos = (u @ u.T).abs()
    assert (cos[same] > 1 - 1e-12).all()
    assert (cos[~same] < 1 - 1e-6).any()


def test_three_classes_in_space_give_a_plane_and_a_kernel_line():
    model = relu_model(n=3, C=3)
    x = points(100, n=3)
    J, log_p = leafkit.log_prob_jacobian(model, x)
    spectrum = geometry.local_data_spectrum(J, log_p)  # (B, 3): the third is zero
    assert (geometry.numerical_rank(spectrum, [1e-10])[:, 0] == 2).all()
    k = torch.linalg.cross(J[:, 0], J[:, 1])  # normal to the plane D_x
    G = leafkit.local_data_matrix(model, x)
    assert ((G @ k[..., None])[..., 0].norm(dim=1)
            / (G.flatten(1).norm(dim=1) * k.norm(dim=1))).max() < 1e-12
    kernel = projection.project_kernel(J, k, log_p)
    torch.testing.assert_close(kernel, k, rtol=1e-12, atol=1e-14)


def test_bad_shapes_are_refused():
    model, _ = linear_model()
    with pytest.raises(ValueError):
        leafkit.vertical_path(model, points(4), torch.ones(3, dtype=torch.float64),
                              progress=False)
    J, log_p = leafkit.log_prob_jacobian(model, points(4))
    with pytest.raises(ValueError):
        projection.project_kernel(J, torch.ones(4, 3, dtype=torch.float64), log_p)
