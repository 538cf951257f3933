"""leafkit.adversarial against a linear softmax model done by hand: the share of a step in D_x,
FGSM, the attack directions, the step response; and the errors."""

from __future__ import annotations

import pytest
import torch
from cases import assert_close
from torch import nn

from leafkit import log_prob_jacobian
from leafkit.adversarial import attack_directions, fgsm, step_response, tangent_share

N, C = 40, 5


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(N, C).double().eval()


def _x(B: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _projector(model: nn.Linear) -> torch.Tensor:
    """P_D by hand: D_x = {A^T c : sum c = 0} = the column space of A^T (I - 1 1^T / C)."""
    A = model.weight.detach()
    M = A.T @ (torch.eye(C, dtype=A.dtype) - torch.full((C, C), 1.0 / C, dtype=A.dtype))
    return M @ torch.linalg.pinv(M)


def _loss_gradient(model: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """grad_x (-log p_c) = -A^T (e_c - p), c the predicted class, by hand."""
    A, s = model.weight.detach(), model(x).detach()
    p = s.softmax(1)
    e = torch.nn.functional.one_hot(s.argmax(1), C).double()
    return -(e - p) @ A


def test_fgsm_share_equals_the_hand_projection():
    model, x = _linear(), _x()
    J, log_p = log_prob_jacobian(model, x)
    sign = _loss_gradient(model, x).sign()
    P = _projector(model)
    want = (sign @ P).square().sum(1) / sign.square().sum(1)
    assert_close(tangent_share(J, sign, log_p), want)
    assert bool((want > 0).all() & (want < 1).all())


def test_attack_directions_of_a_linear_model():
    model, x = _linear(2), _x(6, 3)
    J, log_p = log_prob_jacobian(model, x)
    dirs = attack_directions(J, log_p)
    g = _loss_gradient(model, x)
    P = _projector(model)
    assert_close(dirs["gradient"], g / g.norm(dim=1, keepdim=True))
    assert_close(dirs["fgsm"], g.sign() / N**0.5)
    proj = g.sign() @ P
    assert_close(dirs["projected_fgsm"], proj / proj.norm(dim=1, keepdim=True))
    for u in dirs.values():
        assert_close(u.norm(dim=1), torch.ones(6, dtype=torch.float64))
    # the gradient and the projected FGSM step lie entirely in D_x
    assert_close(tangent_share(J, dirs["gradient"], log_p), torch.ones(6, dtype=torch.float64))
    assert_close(tangent_share(J, dirs["projected_fgsm"], log_p), torch.ones(6, dtype=torch.float64))
    # labels override the predicted class
    other = (log_p.argmax(1) + 1) % C
    d2 = attack_directions(J, log_p, other)
    g2 = -(J[torch.arange(6), other])
    assert_close(d2["gradient"], g2 / g2.norm(dim=1, keepdim=True))


def test_random_direction_share_is_k_over_n():
    model = _linear(4)
    B = 3000
    x = _x(1, 5).expand(B, N).contiguous()
    J, log_p = log_prob_jacobian(model, x)
    share = tangent_share(J, attack_directions(J, log_p, seed=7)["random"], log_p)
    k = C - 1  # E ||P u||^2 = k / n for a uniformly random unit u
    se = float(share.std()) / B**0.5
    assert abs(float(share.mean()) - k / N) < 4 * se


def test_fgsm_step_by_hand():
    model, x = _linear(5), _x(3, 6)
    eps = 0.3
    want = x + eps * _loss_gradient(model, x).sign()
    assert_close(fgsm(model, x, eps), want)
    assert_close(fgsm(model, x, eps, bounds=(-0.5, 0.5)), want.clamp(-0.5, 0.5))
    assert torch.equal(fgsm(model, x, 0.0), x)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, -1.0)
    with pytest.raises(ValueError, match="labels must lie"):
        fgsm(model, x, 0.1, torch.tensor([0, 1, C]))


def test_step_response_of_a_linear_model():
    model, x = _linear(6), _x(5, 7)
    J, log_p = log_prob_jacobian(model, x)
    dirs = attack_directions(J, log_p)
    P = _projector(model)
    kern = dirs["random"] - dirs["random"] @ P
    dirs["kernel"] = kern / kern.norm(dim=1, keepdim=True)
    dist = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)
    r = step_response(model, x, dirs, dist)
    assert r.changed["gradient"].shape == (5, 3) and r.kl["fgsm"].shape == (5, 3)
    # along ker G a linear model's softmax does not move at all
    assert float(r.kl["kernel"].abs().max()) < 1e-20 and not r.changed["kernel"].any()
    # one point checked directly
    pt = x[2] + 2.0 * dirs["gradient"][2]
    assert bool(r.changed["gradient"][2, 1]) == bool(model(pt).argmax() != model(x[2]).argmax())
    assert r.flip_rate("gradient").shape == (3,)
    fd = r.flip_distance("gradient")
    first = [dist[r.changed["gradient"][b]].min() if r.changed["gradient"][b].any()
             else torch.tensor(float("inf"), dtype=torch.float64) for b in range(5)]
    assert_close(fd, torch.stack(first))
    with pytest.raises(ValueError, match="must have shape"):
        step_response(model, x, {"bad": dirs["fgsm"][:2]}, dist)
    with pytest.raises(ValueError, match="distances"):
        step_response(model, x, dirs, torch.tensor([]))


def test_bad_inputs():
    model, x = _linear(), _x()
    J, log_p = log_prob_jacobian(model, x)
    with pytest.raises(ValueError, match="zero vector"):
        tangent_share(J, torch.zeros(4, N, dtype=torch.float64), log_p)
    with pytest.raises(ValueError, match="vectors of"):
        tangent_share(J, torch.ones(4, N + 1, dtype=torch.float64), log_p)
    with pytest.raises(ValueError, match="integer classes"):
        attack_directions(J, log_p, torch.zeros(4))
    with pytest.raises(ValueError, match="zero"):
        attack_directions(torch.zeros_like(J), log_p)
