"""Tests of leafkit.authors: the authors' tenth direction and the least-squares drivers."""

from __future__ import annotations

import cases
import pytest
import torch
from torch import nn

from leafkit.authors import CONFIDENT, lstsq_drivers, tenth_direction_overlaps


def confident_linear(dtype: torch.dtype) -> nn.Linear:
    """``s = W x + b`` with ``C = 5`` on ``n = 40`` inputs, class 0 ahead by 12 at ``x ~ 0``:
    ``1 - p_max ~ 2e-5``."""
    torch.manual_seed(3)
    model = nn.Linear(40, 5).to(dtype)
    with torch.no_grad():
        model.weight.mul_(0.1)
        model.bias.copy_(torch.tensor([12.0, 0.0, 0.0, 0.0, 0.0]))
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tenth_direction_at_confident_points_raises_all_scores(dtype):
    # Closed form for s = W x + b: D_x = W^T {c : sum c = 0}, so W^T e_max = W^T 1 / C mod D_x.
    # The row of the top class, (e_max - p)^T W, is computed from 1 - fl(p_max); its rounding is
    # a multiple of W^T e_max, i.e. of the equal-score direction W^T 1 off D_x.
    model = confident_linear(dtype)
    x = 0.1 * torch.randn(6, 40, generator=torch.Generator().manual_seed(4), dtype=dtype)
    out = tenth_direction_overlaps(model, x)
    assert out["confident"].all() and (out["one_minus_p_max"] <= CONFIDENT).all()
    assert (out["equal_score"] > 0.99).all(), out["equal_score"]
    assert (out["random"] < 0.6).all() and out["random"].median() < 0.3  # n - C + 1 = 36


def test_overlaps_are_cosines_and_unconfident_points_are_flagged():
    case = cases.make_case("cnn", torch.float64, batch=4)
    target = case.x.roll(1, 0)
    out = tenth_direction_overlaps(case.model, case.x, target, seed=1)
    assert not out["confident"].any()  # a fresh network is unsure everywhere
    for key in ("equal_score", "random", "target_authors", "target_random"):
        assert out[key].shape == (4,) and ((out[key] >= 0) & (out[key] <= 1 + 1e-12)).all(), key
    # the random direction is a uniform unit vector of ker G (dimension 775 here): |cos| with a
    # fixed unit vector is about 1 / sqrt(775) = 0.036
    assert (out["target_random"] < 0.2).all()
    again = tenth_direction_overlaps(case.model, case.x, target, seed=1)
    torch.testing.assert_close(again["random"], out["random"], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gelsy_drops_the_tenth_direction_and_gels_keeps_it(dtype):
    case = cases.make_case("cnn", dtype, batch=4)
    out = lstsq_drivers(case.model, case.x, case.x.roll(1, 0))
    C = 10
    assert (out["gelsy"]["rank"] == C - 1).all()  # rank-revealing, default rcond
    assert (out["gels"]["rank"] == C).all()
    tiny = 1e-4 if dtype == torch.float32 else 1e-10
    assert (out["gelsy"]["outside"] < tiny).all(), out["gelsy"]["outside"]  # = exact projection
    # gels keeps it: a few percent of |d| outside D_x (measured 0.02-0.05 in both dtypes)
    assert (out["gels"]["outside"] > 1e-3).all(), out["gels"]["outside"]


def test_bad_targets_are_rejected():
    case = cases.make_case("cnn", torch.float64, batch=2)
    with pytest.raises(ValueError, match="shapes differ"):
        tenth_direction_overlaps(case.model, case.x, case.x[:1])
    with pytest.raises(ValueError, match="shapes differ"):
        lstsq_drivers(case.model, case.x, case.x.flatten(1))
