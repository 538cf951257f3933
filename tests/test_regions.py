"""Unit tests of leafkit.regions (linear regions, max-pool ties, principal angles between the
subspaces D_x), and of the score Hessians that vanish inside a linear region."""

import pytest
import torch
from torch import nn
from torch.nn.functional import normalize

from leafkit import regions
from leafkit.frobenius import score_hessian_vector_products
from leafkit.models import MLP

TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_count_maxpool_ties_on_a_constructed_input():
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)).double().eval()
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    x[0, 0, :2, :2] = 1.0  # one window with a four-way tie at 1; three all-zero windows
    x[0, 0, 2:, 2:] = torch.tensor([[3.0, 3.0], [0.0, 1.0]])  # a two-way tie at 3
    x[1] = torch.arange(16, dtype=torch.float64).view(1, 4, 4)  # no ties
    assert regions.count_maxpool_ties(net, x).tolist() == [2, 0]
    with pytest.raises(ValueError, match="no nn.MaxPool2d"):
        regions.count_maxpool_ties(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double(), x)


def test_score_hessians_vanish_for_relu_and_match_autograd_for_tanh(gen):
    torch.manual_seed(0)
    x = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    V = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    relu = MLP(4, (8, 8), num_classes=3).double().eval()
    assert score_hessian_vector_products(relu, x, V).abs().max() == 0
    affine = nn.Linear(4, 3).double()
    assert score_hessian_vector_products(affine, x, V).abs().max() == 0
    tanh = MLP(4, (8,), num_classes=3, activation_name="tanh").double().eval()
    HV = score_hessian_vector_products(tanh, x, V)
    for b in range(2):
        for k in range(3):
            H = torch.autograd.functional.hessian(lambda z, k=k: tanh(z[None])[0, k], x[b])
            torch.testing.assert_close(HV[b, k], V[b] @ H, **TOL)
    with pytest.raises(ValueError, match="m vectors"):
        score_hessian_vector_products(tanh, x, V[:, :, :3])


def test_principal_angles_closed_form():
    theta = torch.tensor([0.3, 1e-10, 0.0], dtype=torch.float64)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    Q1 = e1.expand(3, 3).unsqueeze(-1)
    Q2 = (theta.cos()[:, None] * e1 + theta.sin()[:, None] * e2).unsqueeze(-1)
    torch.testing.assert_close(regions.principal_angles(Q1, Q2)[:, 0], theta, rtol=1e-12,
                               atol=1e-20)
    plane = torch.eye(3, dtype=torch.float64)[:, :2].expand(3, 3, 2)
    angles = regions.principal_angles(Q2, plane)  # swapped internally: the line lies in the plane
    assert angles.shape == (3, 1) and angles.abs().max() < 1e-15
    with pytest.raises(ValueError, match="same B and n"):
        regions.principal_angles(Q1, torch.zeros(3, 4, 1))


def test_activation_patterns_and_flat_leaves(gen):
    torch.manual_seed(0)
    relu = MLP(6, (16,), num_classes=3).double().eval()
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    codes = regions.activation_patterns(relu, torch.cat([x, x]))
    assert codes.shape == (6, 16) and torch.equal(codes[:3], codes[3:])
    with torch.no_grad():  # one hidden layer: the code is the sign of its pre-activations
        pre = x @ relu.net[0].weight.T + relu.net[0].bias
    assert torch.equal(codes[:3], (pre > 0).long())
    d = normalize(torch.randn(3, 6, generator=gen, dtype=torch.float64), dim=1)
    angles, same = regions.tangent_angles_along(relu, x, d, [1e-8, 1e-6])
    assert same.all() and angles.max() < 1e-12
    tanh = MLP(6, (16,), num_classes=3, activation_name="tanh").double().eval()
    angles, same = regions.tangent_angles_along(tanh, x, d, [1e-3])
    assert same is None and (angles > 1e-8).all()
    with pytest.raises(ValueError, match="no nn.ReLU"):
        regions.activation_patterns(tanh, x)


def test_linear_model_has_one_fixed_distribution(gen):
    torch.manual_seed(0)
    linear = nn.Linear(5, 3).double().eval()
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    d = normalize(torch.randn(2, 5, generator=gen, dtype=torch.float64), dim=1)
    angles, same = regions.tangent_angles_along(linear, x, d, [1.0, 100.0])
    assert same is None and angles.max() < 1e-12


def test_region_functions_run_in_eval_mode_and_restore_it(gen):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.9), nn.Linear(16, 3)).double()
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    d = normalize(torch.randn(4, 6, generator=gen, dtype=torch.float64), dim=1)
    net.train()
    first = regions.activation_patterns(net, x)
    assert net.training and net[2].training
    torch.testing.assert_close(regions.activation_patterns(net, x), first)  # no dropout noise
    angles, same = regions.tangent_angles_along(net, x, d, [1e-9])
    assert net.training and same.all() and angles.max() < 1e-12
    pooled = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    regions.count_maxpool_ties(pooled, torch.rand(2, 1, 4, 4, generator=gen))
    assert pooled.training and pooled[2].training
