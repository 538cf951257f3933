"""Unit tests of leafkit.robustness: the verdict rule on synthetic distance curves, the pair rule,
the grid switch, and the grid run and shared-leaf test on a linear softmax model, whose leaves are
flat (affine subspaces ``x + row space of A restricted to sum-zero combinations``), so where a
greedy walk ends is known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import leafkit.cache
from leafkit import robustness
from leafkit.data import pixel_bounds
from leafkit.examples import ExamplePairs
from leafkit.robustness import (CHECKPOINTS, GridCell, checkpoint_model, class_pairs,
                                closing_verdict, dtype_spread, full_grid, grid_from_env,
                                reduced_grid, run_cell, shared_leaf_test, summarize_grid)


def test_verdicts_on_synthetic_distance_curves():
    t = torch.arange(2001, dtype=torch.float64)
    start = 40.0
    curves = torch.stack([
        start * torch.exp(-t / 200),  # exponential approach, flat at the end: stalled
        start - 0.0002 * t,  # linear, 0.2/1000 steps of 40 = 0.5%/1000: stalled
        start - 0.02 * t,  # linear, 20/1000 steps = 50%/1000: slowly closing
        torch.where(t < 1000, start - 0.02 * t, torch.tensor(20.0, dtype=torch.float64)),  # flat
        start + 0 * t,  # never moved
        start - 0.019 * t,  # arrived (the flag decides)
        20 + 5 * torch.sin(t / 10),  # zigzags around a plateau: its best stopped improving
        20 + 5 * torch.sin(t / 10) - 0.02 * t,  # zigzags while falling: still closing
    ])
    arrived = torch.tensor([False, False, False, False, False, True, False, False])
    verdicts, rate = closing_verdict(curves, arrived, window=1000)
    assert verdicts == ["stalled", "stalled", "slowly closing", "stalled", "stalled", "arrived",
                        "stalled", "slowly closing"]
    assert float(rate[6]) == 0.0
    torch.testing.assert_close(rate[1:3], torch.tensor([0.0002 / 40 * 1000, 0.02 / 40 * 1000],
                                                       dtype=torch.float64))
    assert float(rate[3]) == 0.0 and float(rate[4]) == 0.0
    # a shorter window: the rate is per 1000 steps, so the linear curves read the same
    _, short = closing_verdict(curves, arrived, window=100)
    torch.testing.assert_close(short[1:3], rate[1:3])
    # a lower tolerance turns the slow linear fall into "slowly closing"
    slow, _ = closing_verdict(curves[1:2], arrived[1:2], window=1000, stall_rate=0.001)
    assert slow == ["slowly closing"]
    with pytest.raises(ValueError, match="window"):
        closing_verdict(curves, arrived, window=5000)
    with pytest.raises(ValueError, match="stall_rate"):
        closing_verdict(curves, arrived, window=10, stall_rate=0.0)


def test_class_pairs_rule(fake_test_set):
    pairs = class_pairs(fake_test_set)
    assert len(pairs.source_index) == 20
    # fake_test_set: the first test image of class c is image c
    assert pairs.source_index == tuple(range(10)) * 2
    assert pairs.target_index == tuple((c + 1) % 10 for c in range(10)) + tuple(
        (c + 5) % 10 for c in range(10))
    torch.testing.assert_close(pairs.targets[3], fake_test_set.test_x[4])
    assert "i -> i+s mod 10" in pairs.rule
    with pytest.raises(ValueError, match="shifts"):
        class_pairs(fake_test_set, shifts=(10,))


def test_the_cifar_cell_has_the_full_budget_only_in_the_full_grid():
    full, reduced = robustness.cifar_cell("full"), robustness.cifar_cell("reduced")
    assert (full.max_steps, reduced.max_steps) == (5000, 100)
    assert full.step_size == reduced.step_size == 0.25 and full.dtype == torch.float32


def test_grid_switch():
    assert grid_from_env({})[0] == "reduced"
    assert grid_from_env({"LEAFKIT_GRID": "full"})[0] == "full"
    assert grid_from_env({"LEAFKIT_DATA": "standin"})[0] == "full"  # the rehearsal of full size
    assert grid_from_env({"LEAFKIT_DATA": "full"})[0] == "full"
    assert grid_from_env({"LEAFKIT_DATA": "full", "LEAFKIT_GRID": "reduced"})[0] == "reduced"
    with pytest.raises(ValueError, match="LEAFKIT_GRID"):
        grid_from_env({"LEAFKIT_GRID": "huge"})
    full = full_grid()
    assert len(full) == len(CHECKPOINTS) * 3 * 2
    assert {c.step_size for c in full} == {0.01, 0.1, 1.0}
    assert {c.checkpoint for c in reduced_grid()} <= set(CHECKPOINTS)
    with pytest.raises(KeyError, match="unknown checkpoint"):
        checkpoint_model(None, "latest")


def _linear_setting(P: int = 3, dtype=torch.float64):
    """A linear softmax model on 4x4 images and pairs whose target offset is a tangent part
    (in the row space of A's sum-zero combinations, the leaf) plus a known kernel part."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).to(dtype)
    A = model[1].weight.detach()
    basis, _ = torch.linalg.qr((A - A.mean(0)).T)  # (16, 4); rank 3: the sum-zero rows
    tangent_basis = basis[:, :3]
    g = torch.Generator().manual_seed(1)
    sources = torch.randn(P, 1, 4, 4, generator=g, dtype=dtype)
    tangent = torch.randn(P, 3, generator=g, dtype=dtype) @ tangent_basis.T * 3
    raw = torch.randn(P, 16, generator=g, dtype=dtype)
    kernel = raw - raw @ tangent_basis @ tangent_basis.T
    kernel = kernel / kernel.norm(dim=1, keepdim=True) * 2.0  # ||kernel part|| = 2
    targets = sources + (tangent + kernel).view(P, 1, 4, 4)
    return model, sources, targets, kernel


def _as_pairs(sources: torch.Tensor, targets: torch.Tensor) -> ExamplePairs:
    P = len(sources)
    return ExamplePairs(sources=sources, targets=targets, source_index=tuple(range(P)),
                        target_index=tuple(range(P)), source_label=(0,) * P,
                        target_label=(1,) * P, mirrored=False, rule="test")


def test_run_cell_stalls_at_the_kernel_part_on_a_linear_model():
    model, sources, targets, kernel = _linear_setting()
    P = len(sources)
    pairs = _as_pairs(sources, targets)
    cell = GridCell("reference", 0.05, torch.float64, 300)
    records = run_cell(model, pairs, cell, bounds=None, projections=("exact", "scores"),
                       tol=0.1, progress=False)
    assert len(records) == 2 * P
    start = (targets - sources).flatten(1).norm(dim=1)
    for r, s in zip(records[:P], start.tolist()):
        # the exact walk ends at the target's nearest point on the leaf: ||kernel part|| = 2 away
        assert r["projection"] == "exact" and r["verdict"] == "stalled"
        assert r["fraction"] * s == pytest.approx(2.0, abs=0.02)
        assert r["window"] == 60 and r["start"] == pytest.approx(s)
    table = summarize_grid(records)
    assert len(table) == 2 and table.column("paths") == [P, P]
    assert table.column("stalled")[0] == P
    assert all(a + c + s == P for a, c, s in zip(table.column("arrived"),
                                                  table.column("slowly closing"),
                                                  table.column("stalled")))


def test_dtype_spread_pairs_the_same_path_across_dtypes():
    def rec(dt, pair, fraction, verdict):
        return {"cell": f"reference, alpha 1, {dt}, 10 steps", "projection": "exact",
                "pair": pair, "fraction": fraction, "verdict": verdict}

    records = [rec("float32", "a", 0.50, "stalled"), rec("float64", "a", 0.40, "stalled"),
               rec("float32", "b", 0.30, "stalled"), rec("float64", "b", 0.30, "slowly closing"),
               rec("float32", "c", 0.9, "stalled")]  # no float64 partner: left out
    (row,) = dtype_spread(records)
    assert row["paths"] == 2 and row["verdicts differ"] == 1
    assert row["largest spread"] == pytest.approx(0.25) and row["median spread"] == pytest.approx(0.125)


def test_shared_leaf_test_arrives_on_a_flat_leaf():
    model, sources, targets, _ = _linear_setting()
    table = shared_leaf_test(model, sources, targets, lead_steps=30, step_size=0.1, max_steps=200,
                             tol=0.15, progress=False)
    assert len(table) == 2 * len(sources)
    assert table.column("walk") == ["x_0 -> x_k"] * 3 + ["x_k -> x_0"] * 3
    # on a flat leaf the exact walk is a straight line inside the leaf: it arrives both ways
    assert table.column("verdict") == ["arrived"] * 6
    lead = torch.tensor(table.column("lead length"))
    assert ((lead > 2.5) & (lead <= 3.0 + 1e-9)).all()  # 30 steps of 0.1, nearly straight


def _never_walk(*args, **kwargs):
    raise AssertionError("a stored cell was computed again")


def test_run_cell_stores_its_records_and_reads_them_back(cache_tmp, monkeypatch):
    model, sources, targets, _ = _linear_setting()
    pairs = _as_pairs(sources, targets)
    cell = GridCell("reference", 0.05, torch.float64, 40)
    kw = dict(bounds=None, projections=("exact", "scores"), tol=0.1, progress=False)
    computed = run_cell(model, pairs, cell, **kw)
    assert not (cache_tmp / "grid").exists() or not any((cache_tmp / "grid").iterdir())
    assert run_cell(model, pairs, cell, cache=True, **kw) == computed
    assert len(list((cache_tmp / "grid").glob("*.json"))) == 1
    monkeypatch.setattr(robustness, "_walk_cell", _never_walk)
    assert run_cell(model, pairs, cell, cache=True, **kw) == computed  # read, not computed
    # whatever the records depend on is in the key: each change computes the cell again
    calls = []
    monkeypatch.setattr(robustness, "_walk_cell", lambda *a, **k: calls.append(1) or computed)
    nudged = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).to(torch.float64)
    nudged.load_state_dict(model.state_dict())
    with torch.no_grad():
        nudged[1].bias[0] += 1e-12
    run_cell(nudged, pairs, cell, cache=True, **kw)
    run_cell(model, _as_pairs(sources, targets + 1e-12), cell, cache=True, **kw)
    run_cell(model, pairs, GridCell("reference", 0.05, torch.float64, 41), cache=True, **kw)
    run_cell(model, pairs, cell, cache=True, **{**kw, "tol": 0.2})
    monkeypatch.setattr(leafkit.cache, "code_fingerprint", lambda: "another version of leafkit")
    run_cell(model, pairs, cell, cache=True, **kw)
    assert len(calls) == 5


def test_a_cell_stored_by_the_command_line_is_what_the_chapter_reads(cache_tmp, monkeypatch,
                                                                      fake_test_set, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    cells = [GridCell("reference", 1.0, torch.float32, 5), GridCell("early", 1.0, torch.float64, 5)]
    monkeypatch.setattr(robustness, "grid_from_env", lambda: ("tiny", cells))
    monkeypatch.setattr(robustness, "load_mnist", lambda: fake_test_set)
    monkeypatch.setattr(robustness, "checkpoint_model", lambda data, name, progress: model)
    assert robustness._main(["cells"]) == 0
    assert capsys.readouterr().out.splitlines() == (
        [f"{k} {c.label}" for k, c in enumerate(cells)]
        + [f"cifar {robustness.cifar_cell('tiny').label}"])
    asked = []
    monkeypatch.setattr(robustness, "run_cifar_cell", asked.append)
    assert robustness._main(["cell", "cifar"]) == 0 and asked == ["tiny"]
    assert robustness._main(["cell", "2"]) == 2  # out of range: the usage, nothing computed
    assert robustness._main(["cell", "1"]) == 0 and robustness._main(["cell", "0"]) == 0
    assert len(list((cache_tmp / "grid").glob("*.json"))) == 2
    monkeypatch.setattr(robustness, "_walk_cell", _never_walk)
    # the chapter's call: the same data, pairs, bounds and default options find both cells
    records = robustness.run_grid(fake_test_set, cells, class_pairs(fake_test_set),
                                  bounds=pixel_bounds(), progress=False)
    assert len(records) == 2 * 20 * len(robustness.GRID_PROJECTIONS)
    assert [r["cell"] for r in records[::80]] == [c.label for c in cells]
