"""Tests of leafkit.paths: horizontal paths (Algorithm 4.1), paths across leaves (Section 4.2)."""

from __future__ import annotations

import math

import cases
import oracles
import pytest
import torch
from torch import nn

from leafkit.geometry import log_prob_jacobian
from leafkit.models import MnistCNN
from leafkit.paths import (PROJECTIONS, PathResult, horizontal_direction, horizontal_path,
                           vertical_path)
from leafkit.projection import project_tangent

F64 = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture
def cnn() -> nn.Module:
    """A small ReLU CNN of the paper's architecture, float64, eval mode."""
    torch.manual_seed(0)
    return MnistCNN(channels=(4, 8), hidden=32).double().eval()


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """Three random sources and targets `(3, 1, 28, 28)`, float64 (no max-pool ties)."""
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(3, 1, 28, 28, generator=gen, dtype=torch.float64),
            torch.randn(3, 1, 28, 28, generator=gen, dtype=torch.float64))


@pytest.fixture
def linear() -> nn.Linear:
    """A linear softmax model ``s = A x + b`` on ``n = 20`` inputs and ``C = 5`` classes."""
    torch.manual_seed(2)
    return nn.Linear(20, 5).double()


def toward_row_space(model: nn.Linear, x: torch.Tensor, lengths: list[float]) -> torch.Tensor:
    """Targets ``x + A^T c``, ``sum(c) = 0``, at the given distances: in ``D_x`` everywhere."""
    gen = torch.Generator().manual_seed(3)
    c = torch.randn(x.shape[0], model.out_features, generator=gen, dtype=x.dtype)
    c = c - c.mean(dim=1, keepdim=True)
    d = c @ model.weight.detach()
    return x + d / d.norm(dim=1, keepdim=True) * torch.tensor(lengths, dtype=x.dtype)[:, None]


def assert_finite(result: PathResult) -> None:
    for name in ("points", "distance", "probs", "final"):
        assert torch.isfinite(getattr(result, name)).all(), f"{name} has NaN or inf"


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_tanh", "cnn"])
@pytest.mark.parametrize("projection", ["exact", "scores"])
def test_horizontal_path_matches_the_slow_reference(model_name, projection):
    # float64, 15 steps, clamped to a box: every step of every path against oracles.horizontal_path
    case = cases.make_case(model_name, torch.float64, batch=3)
    source = case.x
    target = source.roll(1, 0) + 0.5
    kw = dict(step_size=0.3, bounds=(-2.0, 2.5))
    result = horizontal_path(case.model, source, target, max_steps=15, tol=None, record_every=1,
                             projection=projection, progress=False, **kw)
    expected = oracles.horizontal_path(case.model, source, target, steps=15,
                                       projection=projection, **kw)
    cases.assert_close(result.points.flatten(2)[:, 1:], expected[:, 1:], rtol=1e-8, atol=1e-10,
                       what=f"{projection} path on {model_name}")
    assert result.steps_taken.tolist() == [15, 15, 15]
    assert result.stop_reason == ["max_steps reached"] * 3


@pytest.mark.parametrize("model_name", ["mlp_relu", "cnn"])
def test_authors_step_matches_the_slow_reference(model_name):
    # The authors' tenth direction is rounding error amplified by 1 / sigma_10 (~1e16 in
    # float64), so a whole path cannot be compared: measured, the oracle and leafkit (B = 1)
    # part after 2-6 of 100 float64 steps (max deviation ~1 per pixel), and a batched run
    # differs from a per-sample one from the first step (0.1-0.4 on a 0.3 step). What is
    # reproducible is the step from a given x by the same operations: for every point of a
    # 100-step float64 oracle path, leafkit's single-path step lands on the oracle's next point.
    case = cases.make_case(model_name, torch.float64, batch=1)
    source, target = case.x, case.x + 0.5
    kw = dict(step_size=0.3, bounds=(-2.0, 2.5))
    expected = oracles.authors_horizontal_path(case.model, source, target, steps=100, **kw)[0]
    worst = 0.0
    for t in range(100):
        x = expected[t].view_as(source)
        one = horizontal_path(case.model, x, target, max_steps=1, tol=None, projection="authors",
                              progress=False, **kw)
        worst = max(worst, (one.final.flatten() - expected[t + 1]).abs().max().item())
    assert worst <= 1e-12, f"a step differs from the oracle's by {worst:.1e}"


@pytest.mark.parametrize("model_name", ["mlp_relu", "mlp_tanh", "cnn"])
def test_vertical_path_matches_the_slow_reference(model_name):
    case = cases.make_case(model_name, torch.float64, batch=2)
    direction = torch.randn(case.x.shape, generator=torch.Generator().manual_seed(7),
                            dtype=torch.float64)
    result = vertical_path(case.model, case.x, direction, step_size=0.2, steps=15,
                           record_every=1, progress=False)
    expected = oracles.vertical_path(case.model, case.x, direction, step_size=0.2, steps=15)
    cases.assert_close(result.points.flatten(2), expected, rtol=1e-8, atol=1e-10,
                       what=f"vertical path on {model_name}")


def test_linear_model_path_arrives_on_a_straight_line(linear):
    # D_x = A^T {c : sum c = 0} for every x, so target - x stays in D_x and each step shortens
    # the distance by exactly step_size: 2.05 -> 0.05 <= tol after 20 steps (0.15 > tol after 19).
    source = torch.randn(2, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    target = toward_row_space(linear, source, [2.05, 1.05])
    result = horizontal_path(linear, source, target, step_size=0.1, tol=0.1, max_steps=100,
                             progress=False, check_every=3)
    assert result.arrived.tolist() == [True, True]
    assert result.steps_taken.tolist() == [20, 10]
    assert all(r.startswith("arrived") for r in result.stop_reason)
    assert (result.distance[:, -1] <= 0.1).all()
    steps = torch.arange(21, dtype=torch.float64)
    expected = torch.tensor([[2.05], [1.05]], dtype=torch.float64) - 0.1 * steps
    torch.testing.assert_close(result.distance[:, :21], expected.clamp(min=0.05), **F64)
    # the last record is the final point, with its own probabilities (paths stopped at different
    # steps and were dropped from the batch at the checks)
    torch.testing.assert_close(result.points[:, -1], result.final)
    torch.testing.assert_close(result.probs[:, -1], linear(result.final).softmax(-1), **F64)


def test_frozen_paths_stop_and_moving_ones_do_not(linear):
    # D_x is the same plane for every x. Toward a target 1 off the plane and 3.05 along it the
    # exact path reaches its closest point (distance sqrt(1 + 0.05^2)) at step 30, then zigzags
    # there; with a window of 10 steps the check at step 40 finds no progress and freezes it.
    # The other target lies in the plane at 2.05: that path moves until it arrives (step 20).
    source = torch.randn(2, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    along = toward_row_space(linear, source, [3.05, 2.05]) - source
    rows = linear.weight.detach() - linear.weight.detach().mean(0)  # D_x = their row space
    plane = torch.linalg.svd(rows).Vh[:4]  # rank C - 1 = 4
    off = torch.randn(20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    off = off - plane.T @ (plane @ off)
    target = source + along + torch.stack([off / off.norm(), torch.zeros_like(off)])
    kwargs = dict(step_size=0.1, tol=0.1, max_steps=200, progress=False, check_every=5)
    frozen = horizontal_path(linear, source, target, freeze_window=10, freeze_rtol=1e-3, **kwargs)
    assert frozen.frozen.tolist() == [True, False]
    assert frozen.stop_reason[0].startswith("frozen") and frozen.arrived.tolist() == [False, True]
    assert frozen.steps_taken.tolist() == [40, 20]
    closest = math.sqrt(1 + 0.05**2)
    assert frozen.distance[0, 30:].min().item() == pytest.approx(closest, rel=1e-9)
    assert (frozen.distance[0, 40:] == frozen.distance[0, 40]).all()  # it stays where it froze
    full = horizontal_path(linear, source, target, **kwargs)  # no freezing: the whole budget
    assert full.steps_taken.tolist() == [200, 20] and not full.frozen.any()
    assert full.distance[0].min().item() == pytest.approx(closest, rel=1e-9)
    torch.testing.assert_close(full.distance[:, :41], frozen.distance[:, :41], **F64)
    with pytest.raises(ValueError, match="freeze_window"):
        horizontal_path(linear, source, target, freeze_window=0, **kwargs)
    with pytest.raises(ValueError, match="freeze_rtol"):
        horizontal_path(linear, source, target, freeze_window=5, freeze_rtol=-1.0, **kwargs)


@pytest.mark.parametrize("projection", ["exact", "scores"])
def test_horizontal_batched_equals_one_at_a_time(cnn, images, projection):
    # not "authors": its extra direction is rounding error, which changes with the batch size
    source, target = images
    kw = dict(step_size=0.2, max_steps=12, tol=None, record_every=5, progress=False,
              projection=projection)
    batch = horizontal_path(cnn, source, target, **kw)
    for b in range(3):
        one = horizontal_path(cnn, source[b:b + 1], target[b:b + 1], **kw)
        torch.testing.assert_close(one.points[0], batch.points[b], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(one.distance[0], batch.distance[b], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(one.probs[0], batch.probs[b], rtol=1e-9, atol=1e-9)


def test_vertical_batched_equals_one_at_a_time(cnn, images):
    source, direction = images
    kw = dict(step_size=0.2, steps=12, record_every=5, progress=False)
    batch = vertical_path(cnn, source, direction, **kw)
    assert batch.record_steps.tolist() == [0, 5, 10, 12]
    for b in range(3):
        one = vertical_path(cnn, source[b:b + 1], direction[b:b + 1], **kw)
        torch.testing.assert_close(one.points[0], batch.points[b], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(one.distance[0], batch.distance[b], rtol=1e-9, atol=1e-9)


def test_vertical_steps_are_orthogonal_to_D_and_move_away(cnn, images):
    source, _ = images
    result = vertical_path(cnn, source, step_size=0.1, steps=8, record_every=1, progress=False)
    assert not result.arrived.any()
    assert result.stop_reason == ["completed all steps"] * 3
    pts = result.points.flatten(2)  # (B, 9, n)
    for t in range(8):
        J, _ = log_prob_jacobian(cnn, result.points[:, t])
        dx = pts[:, t + 1] - pts[:, t]
        torch.testing.assert_close(dx.norm(dim=1), torch.full((3,), 0.1, dtype=torch.float64))
        inner = torch.einsum("bcn,bn->bc", J, dx).abs()
        assert (inner <= 1e-10 * J.norm(dim=2) * dx.norm(dim=1, keepdim=True)).all()
    assert (result.distance.diff(dim=1) > 0).all()


def test_vertical_on_linear_model_is_a_straight_line(linear):
    source = torch.zeros(2, 20, dtype=torch.float64)
    result = vertical_path(linear, source, step_size=0.1, steps=30, seed=5, progress=False)
    torch.testing.assert_close(result.distance, 0.1 * torch.arange(31.0).double().expand(2, -1),
                               **F64)
    # the prediction does not change across leaves (to second order; exactly for a linear model)
    torch.testing.assert_close(result.probs[:, 0], result.probs[:, -1], **F64)


@pytest.mark.parametrize("projection", ["authors", "scores", "random"])
def test_projections_agree_with_exact_on_D(cnn, images, projection):
    # "authors" and "random" add a direction orthogonal to D_x, "scores" the direction that shifts
    # all scores equally: the part in D_x is the exact projection in every case.
    source, target = images
    v_exact, _ = horizontal_direction(cnn, source, target)
    v, _ = horizontal_direction(cnn, source, target, projection=projection,
                                generator=torch.Generator().manual_seed(0))
    J, log_p = log_prob_jacobian(cnn, source)
    torch.testing.assert_close(project_tangent(J, v.flatten(1), log_p).view_as(v), v_exact,
                               rtol=1e-9, atol=1e-9)
    extra = (v - v_exact).flatten(1)
    assert (extra.norm(dim=1) > 1e-6 * v_exact.flatten(1).norm(dim=1)).all()
    if projection != "scores":
        assert (torch.einsum("bcn,bn->bc", J, extra).abs()
                <= 1e-9 * J.norm(dim=2) * extra.norm(dim=1, keepdim=True)).all()


def test_random_projection_is_seeded(cnn, images):
    source, target = images
    kw = dict(max_steps=5, tol=None, projection="random", progress=False)
    a = horizontal_path(cnn, source, target, seed=7, **kw)
    b = horizontal_path(cnn, source, target, seed=7, **kw)
    c = horizontal_path(cnn, source, target, seed=8, **kw)
    torch.testing.assert_close(a.final, b.final, rtol=0, atol=0)
    assert not torch.allclose(a.final, c.final)


def test_unknown_projection_is_rejected(cnn, images):
    with pytest.raises(ValueError, match="exact.*authors.*scores.*random"):
        horizontal_path(cnn, *images, projection="svd", progress=False)
    assert PROJECTIONS == ("exact", "authors", "scores", "random")


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_source_equal_to_target(cnn, images, projection):
    source = images[0]
    arrived = horizontal_path(cnn, source, source.clone(), projection=projection, progress=False)
    assert arrived.arrived.all() and (arrived.steps_taken == 0).all()
    assert arrived.record_steps.tolist() == [0] and arrived.distance.shape == (3, 1)
    assert all(r.startswith("arrived") for r in arrived.stop_reason)
    assert_finite(arrived)
    # without the tol check the projection of target - x = 0 vanishes: a clean stop, no NaN
    stuck = horizontal_path(cnn, source, source.clone(), tol=None, max_steps=10,
                            projection=projection, progress=False)
    assert not stuck.arrived.any() and (stuck.steps_taken == 0).all()
    assert all("equals the target" in r for r in stuck.stop_reason)
    torch.testing.assert_close(stuck.final, source, rtol=0, atol=0)
    assert_finite(stuck)


@pytest.fixture
def dead_model() -> nn.Module:
    """A ReLU net whose hidden units are all off: constant saturated scores, ``J = 0`` exactly."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        net[0].bias.fill_(-1e3)
        net[2].bias.copy_(torch.tensor([200.0, 0.0, 0.0, 0.0, 0.0]))
    return net.eval()


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_flat_model_stops_cleanly(dead_model, projection):
    source = torch.randn(4, 20, generator=torch.Generator().manual_seed(7))
    target = source + 5.0
    result = horizontal_path(dead_model, source, target, max_steps=50, projection=projection,
                             progress=False)
    assert (result.probs.max(dim=-1).values == 1.0).all()  # saturated softmax
    assert (result.steps_taken == 0).all() and not result.arrived.any()
    assert all(r.startswith("vanished") and "J = " in r for r in result.stop_reason)
    torch.testing.assert_close(result.final, source, rtol=0, atol=0)
    assert_finite(result)
    # ker G is everything: a path across leaves moves freely
    across = vertical_path(dead_model, source, steps=10, progress=False)
    torch.testing.assert_close(across.distance[:, -1], torch.full((4,), 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_saturated_softmax_gives_no_nan(linear, projection):
    # p_max = 1 exactly in float32: g of the top class is exactly 0, the other g_i are not
    # (grad log p_i = A^T (e_i - p)), so D_x keeps rank C - 1 and the path goes on.
    model = nn.Linear(20, 5)
    with torch.no_grad():
        model.weight.copy_(linear.weight * 100.0)
        model.bias.copy_(torch.tensor([1e4, 0.0, 0.0, 0.0, 0.0]))
    source = torch.randn(3, 20, generator=torch.Generator().manual_seed(8))
    target = torch.randn(3, 20, generator=torch.Generator().manual_seed(9))
    result = horizontal_path(model, source, target, max_steps=20, tol=0.0, projection=projection,
                             progress=False)
    assert (result.probs[:, 0].max(dim=-1).values == 1.0).all()
    assert_finite(result)
    assert (result.steps_taken == 20).all()


def test_bounds_are_respected(cnn, images):
    source, _ = images
    source = source.clamp(-0.4, 0.4)
    target = torch.full_like(source, 3.0)
    lo, hi = -0.5, 0.5
    result = horizontal_path(cnn, source, target, step_size=0.5, max_steps=20, tol=None,
                             bounds=(lo, hi), record_every=1, progress=False)
    assert result.points.min() >= lo and result.points.max() <= hi
    assert result.final.max() == hi  # the target pulls outside the box, the clamp holds it back
    across = vertical_path(cnn, source, step_size=0.5, steps=20, bounds=(lo, hi),
                           record_every=1, progress=False)
    assert across.points.min() >= lo and across.points.max() <= hi


def test_record_every_and_result_layout(cnn, images):
    source, target = images
    result = horizontal_path(cnn, source, target, max_steps=20, tol=None, record_every=7,
                             progress=False)
    assert result.record_steps.tolist() == [0, 7, 14, 20]
    assert result.points.shape == (3, 4, 1, 28, 28)
    assert result.probs.shape == (3, 4, 10) and result.predicted.shape == (3, 4)
    assert result.distance.shape == (3, 21)
    torch.testing.assert_close(result.points[:, 0], source, rtol=0, atol=0)
    torch.testing.assert_close(result.points[:, -1], result.final, rtol=0, atol=0)
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    torch.testing.assert_close(result.probs[:, -1], cnn(result.final).softmax(-1).detach())
    torch.testing.assert_close(result.distance[:, 7],
                               (target - result.points[:, 1]).flatten(1).norm(dim=1))
    assert result.points.device.type == "cpu" and not result.points.requires_grad
    default = horizontal_path(cnn, source, target, max_steps=3, tol=None, progress=False)
    assert default.record_steps.tolist() == [0, 3]


def test_stop_rule_and_model_mode(cnn, images):
    source, target = images
    cnn.train()
    result = horizontal_path(cnn, source, target, max_steps=100, tol=None, check_every=5,
                             stop=lambda step, dist: step >= 10, progress=False)
    assert cnn.training  # put in eval mode for the run, then restored
    assert result.steps_taken.tolist() == [10, 10, 10]
    assert result.distance.shape == (3, 11)
    assert all("stop" in r for r in result.stop_reason)


def test_progress_bar_runs(cnn, images):
    result = vertical_path(cnn, images[0], steps=3, progress=True, check_every=1)
    assert result.steps_taken.tolist() == [3, 3, 3]


def test_bad_inputs_are_rejected(cnn, images):
    source, target = images
    nan = source.clone()
    nan[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        horizontal_path(cnn, nan, target, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        horizontal_path(cnn, source, nan, progress=False)
    with pytest.raises(ValueError, match="shape"):
        horizontal_path(cnn, source, target[:2], progress=False)
    with pytest.raises(ValueError, match="empty"):
        horizontal_path(cnn, source[:0], target[:0], progress=False)
    with pytest.raises(ValueError, match="dimensions"):
        horizontal_path(cnn, source[0, 0, 0], target[0, 0, 0], progress=False)
    with pytest.raises(ValueError, match="step_size"):
        horizontal_path(cnn, source, target, step_size=0.0, progress=False)
    with pytest.raises(ValueError, match="bounds"):
        horizontal_path(cnn, source, target, bounds=(1.0, -1.0), progress=False)
    with pytest.raises(ValueError, match="record_every"):
        vertical_path(cnn, source, record_every=0, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        vertical_path(cnn, nan, progress=False)
    with pytest.raises(ValueError, match="direction must have shape"):
        vertical_path(cnn, source, torch.ones(5), progress=False)
    with pytest.raises(ValueError, match="direction contains"):
        vertical_path(cnn, source, nan, progress=False)
    with pytest.raises(ValueError, match="zero"):
        vertical_path(cnn, source, torch.zeros_like(source), progress=False)


def test_one_projection_per_path_equals_separate_runs(cnn, images):
    # a mixed batch shares the Jacobian; each path must follow its own projection, also after
    # another path has stopped (the running set shrinks at a check)
    source, target = images
    kw = dict(step_size=0.2, max_steps=12, tol=None, record_every=5, progress=False,
              check_every=4)
    names = ["exact", "scores", "exact"]  # not "authors": its rounding changes with the batch
    mixed = horizontal_path(cnn, source, target, projection=names, **kw)
    for b, name in enumerate(names):
        one = horizontal_path(cnn, source[b:b + 1], target[b:b + 1], projection=name, **kw)
        torch.testing.assert_close(one.points[0], mixed.points[b], rtol=1e-9, atol=1e-9)
    stopped = horizontal_path(cnn, source, torch.cat([source[:1], target[1:]]), tol=0.0,
                              max_steps=6, progress=False, check_every=2,
                              projection=["exact", "exact", "scores"])
    assert stopped.stop_reason[0].startswith("arrived")
    alone = horizontal_path(cnn, source[2:], target[2:], tol=0.0, max_steps=6, progress=False,
                            projection="scores")
    torch.testing.assert_close(alone.final[0], stopped.final[2], rtol=1e-9, atol=1e-9)


def test_mixed_plan_gives_the_authors_row_its_projection(cnn, images):
    # the authors' row shares the backward passes of a mixed batch: its part in D_x is the exact
    # projection, and it adds a direction orthogonal to D_x as when it runs alone
    source, target = images
    mixed, log_p = horizontal_direction(cnn, source, target, projection=["scores", "authors",
                                                                           "exact"])
    alone, log_p_alone = horizontal_direction(cnn, source[1:2], target[1:2], projection="authors")
    exact, _ = horizontal_direction(cnn, source[1:2], target[1:2])
    J, lp = log_prob_jacobian(cnn, source[1:2])
    torch.testing.assert_close(log_p[1:2], log_p_alone, rtol=1e-12, atol=1e-12)
    for v in (mixed[1:2], alone):
        torch.testing.assert_close(project_tangent(J, v.flatten(1), lp), exact.flatten(1),
                                   rtol=1e-9, atol=1e-9)
        extra = (v - exact).flatten(1)
        assert extra.norm() > 1e-6 * exact.norm()
        assert (J @ extra[0]).abs().max() <= 1e-9 * J.norm() * extra.norm()
    others, _ = horizontal_direction(cnn, source[::2], target[::2], projection=["scores", "exact"])
    torch.testing.assert_close(mixed[::2], others, rtol=1e-9, atol=1e-9)


def test_projection_sequence_of_wrong_length_is_rejected(cnn, images):
    with pytest.raises(ValueError, match="one per path"):
        horizontal_path(cnn, *images, projection=["exact", "authors"], progress=False)
    with pytest.raises(ValueError, match="unknown projection"):
        horizontal_path(cnn, *images, projection=["exact", "svd", "exact"], progress=False)
