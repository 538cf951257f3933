"""Does the data leaf hold? Algorithm 4.1 over a grid of checkpoints, step sizes and dtypes.

One batched :func:`~leafkit.paths.horizontal_path` run per :class:`GridCell` walks every pair of
:func:`class_pairs` once per projection (``exact``, ``authors``, ``random``, ``scores``); each
path gets a verdict by :func:`closing_verdict` ("arrived", "slowly closing" or "stalled", from
its closing rate over the last window of its budget), and :func:`summarize_grid` turns the
per-path records into one row per cell and projection. :func:`dtype_spread` measures how far the
float32 and float64 runs of one cell end apart. :func:`shared_leaf_test` asks whether the greedy
walk can join two points known to share a leaf (two points of one exact path), which is what tells
a stall of the algorithm from a target on another leaf.

Paper: Section 4.3, Algorithm 4.1, Figure 4; Proposition 2.1 (rank ``C - 1``).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .cache import cache_dir, cached_records
from .cifar import CIFAR_BOUNDS, cifar_reference_model, load_cifar10
from .data import FULL_SIZE_SOURCES, MNISTData, load_mnist, pixel_bounds
from .examples import ExamplePairs, first_of_class, unsure_pairs
from .models import MnistCNN
from .path_metrics import plateau_change
from .paths import horizontal_path
from .tables import Table
from .training import REFERENCE_EPOCHS, steps_for_epochs, train

__all__ = ["CHECKPOINTS", "GRID_PROJECTIONS", "PATH_VERDICTS", "REDUCED_CIFAR_PAIRS", "GridCell",
           "checkpoint_model", "cifar_cell", "class_pairs", "closing_verdict", "dtype_spread",
           "full_grid", "grid_from_env", "reduced_grid", "run_cell", "run_cifar_cell", "run_grid",
           "shared_leaf_test", "summarize_grid"]

GRID_PROJECTIONS: tuple[str, ...] = ("exact", "authors", "random", "scores")
PATH_VERDICTS: tuple[str, ...] = ("arrived", "slowly closing", "stalled")

#: The checkpoints of the grid: ``train`` arguments on top of the paper's SGD (lr 0.01, batch 60).
CHECKPOINTS: dict[str, dict] = {
    "early": {"epochs": 1},
    "reference": {"epochs": REFERENCE_EPOCHS},
    "long": {"epochs": 50},
    "dropout": {"epochs": REFERENCE_EPOCHS, "dropout": True},
    "seed 1": {"epochs": REFERENCE_EPOCHS, "seed": 1},
    "seed 2": {"epochs": REFERENCE_EPOCHS, "seed": 2},
}


@dataclass(frozen=True)
class GridCell:
    """One run of the grid: a checkpoint (a key of :data:`CHECKPOINTS`; any name of a network
    for :func:`run_cell` alone, as in :func:`cifar_cell`), a step size ``alpha``, a dtype and a
    budget of steps."""

    checkpoint: str
    step_size: float
    dtype: torch.dtype
    max_steps: int

    @property
    def label(self) -> str:
        return (f"{self.checkpoint}, alpha {self.step_size:g}, "
                f"{str(self.dtype).removeprefix('torch.')}, {self.max_steps} steps")


def full_grid(max_steps: int = 5000) -> list[GridCell]:
    """Every checkpoint x step size 0.01 / 0.1 / 1.0 x float32 / float64 (36 cells)."""
    return [GridCell(c, a, d, max_steps) for c in CHECKPOINTS for a in (0.01, 0.1, 1.0)
            for d in (torch.float32, torch.float64)]


def reduced_grid(max_steps: int = 100) -> list[GridCell]:
    """The offline grid: the reference checkpoint in both dtypes and the early one in float32,
    at ``alpha = 1.0`` (so a short budget still covers several times the pair distance)."""
    return [GridCell("reference", 1.0, torch.float32, max_steps),
            GridCell("reference", 1.0, torch.float64, max_steps),
            GridCell("early", 1.0, torch.float32, max_steps)]


def grid_from_env(env: Mapping[str, str] | None = None) -> tuple[str, list[GridCell]]:
    """``("full", full_grid())`` when ``LEAFKIT_GRID=full``, or ``LEAFKIT_DATA=full`` (or the
    rehearsal's ``standin``) without ``LEAFKIT_GRID=reduced``; else
    ``("reduced", reduced_grid())``.

    Raises:
        ValueError: ``LEAFKIT_GRID`` set to something other than ``full`` or ``reduced``.
    """
    env = os.environ if env is None else env
    grid = env.get("LEAFKIT_GRID", "").strip().lower()
    if grid not in ("", "full", "reduced"):
        raise ValueError(f"LEAFKIT_GRID must be 'full' or 'reduced', got {grid!r}")
    data = env.get("LEAFKIT_DATA", "").strip().lower()
    if grid == "full" or (not grid and data in FULL_SIZE_SOURCES):
        return "full", full_grid()
    return "reduced", reduced_grid()


#: Pairs of the reduced grid's CIFAR-10 cell. The offline images give 7; at one torch thread the
#: cell took 60 s with 7 (side by side with another chapter) and 31 s with 4 (alone).
REDUCED_CIFAR_PAIRS = 4


def cifar_cell(kind: str) -> GridCell:
    """The grid's CIFAR-10 cell (``kind`` as :func:`grid_from_env` returns it): the network of
    :func:`leafkit.cifar_reference_model`, step 0.25 (the authors' step 1 in their standardized
    units, as in the Figure 7 chapter), float32, 5000 steps in the full grid, 100 otherwise."""
    return GridCell("CIFAR-10 network", 0.25, torch.float32, 5000 if kind == "full" else 100)


def run_cifar_cell(kind: str, *, progress: bool = True) -> tuple[ExamplePairs, list[dict]]:
    """``(pairs, records)``: :func:`run_cell` of :func:`cifar_cell`, cached, with the four
    projections, on the pairs :func:`leafkit.examples.unsure_pairs` forms among the first 20
    CIFAR-10 test images (all 20 offline): all of them in the full grid, the first
    :data:`REDUCED_CIFAR_PAIRS` otherwise. Pixels are clamped to :data:`leafkit.CIFAR_BOUNDS`."""
    data = load_cifar10()
    model = cifar_reference_model(data)
    pairs = unsure_pairs(model, data.test_x[:20], data.test_y[:20],
                         count=None if kind == "full" else REDUCED_CIFAR_PAIRS)
    return pairs, run_cell(model, pairs, cifar_cell(kind), bounds=CIFAR_BOUNDS,
                           progress=progress, cache=True)


def class_pairs(data: MNISTData, shifts: Sequence[int] = (1, 5)) -> ExamplePairs:
    """Ordered pairs ``i -> (i + s) mod 10`` for every class ``i`` and shift ``s``, each image the
    first test image of its class (on the offline subset and on full MNIST alike): 20 pairs for
    the default shifts (``i -> i + 5`` and ``i + 5 -> i`` are both walked).

    Raises:
        ValueError: a shift that is 0 mod 10, or a class without test images.
    """
    if not shifts or any(int(s) % 10 == 0 for s in shifts):
        raise ValueError(f"shifts must be non-empty and non-zero mod 10, got {list(shifts)}")
    first = [first_of_class(data.test_y, c) for c in range(10)]
    src = [first[c] for s in shifts for c in range(10)]
    tgt = [first[(c + int(s)) % 10] for s in shifts for c in range(10)]
    rule = ("the first test image of each class, i -> i+s mod 10 for s in "
            f"{', '.join(map(str, shifts))}")
    return ExamplePairs(sources=data.test_x[src].clone(), targets=data.test_x[tgt].clone(),
                        source_index=tuple(src), target_index=tuple(tgt),
                        source_label=tuple(data.test_y[src].tolist()),
                        target_label=tuple(data.test_y[tgt].tolist()), mirrored=False, rule=rule)


def checkpoint_model(data: MNISTData, name: str, *, device=None, progress: bool = True) -> nn.Module:
    """The network of checkpoint ``name`` (:data:`CHECKPOINTS`), trained on ``data`` by
    :func:`leafkit.training.train` (cached), in eval mode, on ``device`` (default: ``data``'s).

    Raises:
        KeyError: an unknown checkpoint name.
    """
    if name not in CHECKPOINTS:
        raise KeyError(f"unknown checkpoint {name!r}; known: {list(CHECKPOINTS)}")
    spec = CHECKPOINTS[name]
    device = data.train_x.device if device is None else device
    model_config = MnistCNN(dropout=spec.get("dropout", False)).config
    run = train(model_config, data.train_x, data.train_y, seed=spec.get("seed", 0),
                steps=steps_for_epochs(spec["epochs"], len(data.train_x)), device=device,
                progress=progress)
    return run.model(device=device)


def closing_verdict(distance: Tensor, arrived: Tensor, *, window: int,
                    stall_rate: float = 0.01) -> tuple[list[str], Tensor]:
    """The verdict of each path, from how fast it was still closing in at the end.

    The closing rate is how much the path's best distance so far, ``m_t = min_{s <= t} d_s``,
    fell over the last ``window`` steps, as a fraction of the starting distance, per 1000 steps:
    ``(m[T - w] - m[T]) / d[0] * 1000 / w``. On a curve that only falls this is the fall of the
    distance itself; a path that zigzags around a plateau (a fixed step overshooting the point
    where the projected offset vanishes) does not count as moving. A path that did not arrive is
    "stalled" when that rate is below ``stall_rate`` (default: 1% of its start per 1000 steps),
    else "slowly closing" (it was still getting closer to its target).

    Args:
        distance: `(B, T + 1)` distance to the target at every step.
        arrived: `(B,)` whether each path arrived.
        window: steps of the last window, ``1 <= window <= T``.
        stall_rate: the rate below which a path counts as stalled.

    Returns:
        ``(verdicts, rate)``: one of :data:`PATH_VERDICTS` a path, and `(B,)` the closing rates.
    """
    if not stall_rate > 0:
        raise ValueError(f"stall_rate must be positive, got {stall_rate}")
    best = distance.cummin(dim=1).values
    rate = plateau_change(best, window) / distance[:, 0].clamp_min(1e-30) * (1000 / window)
    verdicts = ["arrived" if a else "stalled" if r < stall_rate else "slowly closing"
                for a, r in zip(arrived.tolist(), rate.tolist())]
    return verdicts, rate


def _window(max_steps: int) -> int:
    """The last 1000 steps, or the last fifth of a shorter budget."""
    return min(1000, max(1, max_steps // 5))


def run_cell(model: nn.Module, pairs: ExamplePairs, cell: GridCell, *,
             bounds: tuple[float, float] | None, projections: Sequence[str] = GRID_PROJECTIONS,
             tol: float = 1.0, stall_rate: float = 0.01, seed: int = 0,
             progress: bool = True, cache: bool = False) -> list[dict]:
    """One batched run of Algorithm 4.1: every pair once per projection, in ``cell.dtype``.

    With ``cache`` the records are read from ``cache_dir("grid")`` when a run with the same key
    stored them there, else computed and stored (:func:`leafkit.cache.cached_records`; the key
    holds the cell, these options, the device type, the model's weights, the pairs' images,
    leafkit's code and torch's version). The publishing workflow computes the full grid's cells
    in parallel jobs so (``python -m leafkit.robustness cell K``), and the chapter reads them.

    Returns:
        One record a path: ``cell``, ``projection``, ``pair`` (its label), ``start``, ``fraction``
        (final / start distance), ``rate`` (see :func:`closing_verdict`), ``window``,
        ``verdict``, ``reached`` (whether the final prediction is the class the model gives
        the target image), ``steps`` (steps taken) and ``frozen`` (stopped early because it had
        frozen, see :func:`_walk_cell`).

    Paper: Algorithm 4.1 (``alpha``, at most ``T`` steps, stop at ``||d - x|| <= tol``).
    """
    options = {"bounds": bounds, "projections": list(projections), "tol": tol,
               "stall_rate": stall_rate, "seed": seed}
    if not cache:
        return _walk_cell(model, pairs, cell, progress=progress, **options)
    config = {"cell": cell.label, **options, "device": next(model.parameters()).device.type}
    return cached_records("grid", config,
                          [*model.state_dict().values(), pairs.sources, pairs.targets],
                          lambda: _walk_cell(model, pairs, cell, progress=progress, **options))


def _walk_cell(model: nn.Module, pairs: ExamplePairs, cell: GridCell, *,
               bounds: tuple[float, float] | None, projections: Sequence[str], tol: float,
               stall_rate: float, seed: int, progress: bool) -> list[dict]:
    """The run of :func:`run_cell`, computed. A path that has frozen (its best distance fell by
    less than a tenth of the stall rate over the verdict's window) stops there, to save its
    steps, and is counted as stalled, which its last window was (not a rule of the paper)."""
    net = copy.deepcopy(model).to(cell.dtype).eval()
    dev = next(net.parameters()).device
    k = len(projections)
    src = pairs.sources.to(dev, cell.dtype).repeat(k, 1, 1, 1)
    tgt = pairs.targets.to(dev, cell.dtype).repeat(k, 1, 1, 1)
    names = [p for p in projections for _ in pairs.source_index]
    budget_window = _window(cell.max_steps)
    result = horizontal_path(net, src, tgt, projection=names, step_size=cell.step_size,
                             max_steps=cell.max_steps, tol=tol, bounds=bounds, seed=seed,
                             progress=progress, freeze_window=budget_window,
                             freeze_rtol=stall_rate * budget_window / 1000 / 10)
    window = min(budget_window, result.distance.shape[1] - 1)
    verdicts, rate = closing_verdict(result.distance, result.arrived, window=window,
                                     stall_rate=stall_rate)
    with torch.no_grad():
        wanted = net(tgt).argmax(-1).cpu()
    reached = result.probs[:, -1].argmax(-1) == wanted
    fraction = result.distance[:, -1] / result.distance[:, 0]
    labels = pairs.labels() * k
    return [{"cell": cell.label, "projection": names[b], "pair": labels[b],
             "start": float(result.distance[b, 0]), "fraction": float(fraction[b]),
             "rate": float(rate[b]), "window": window, "verdict": verdicts[b],
             "reached": bool(reached[b]), "steps": int(result.steps_taken[b]),
             "frozen": bool(result.frozen[b])} for b in range(len(names))]


def run_grid(data: MNISTData, cells: Sequence[GridCell], pairs: ExamplePairs, *,
             bounds: tuple[float, float] | None, progress: bool = True, cache: bool = True,
             **options) -> list[dict]:
    """:func:`run_cell` for every cell (a progress bar over the cells), one checkpoint trained or
    loaded at a time, each cell read from the cache when it holds one computed with the same key
    (``cache``); ``options`` go to :func:`run_cell`. Returns all per-path records."""
    records: list[dict] = []
    models: dict[str, nn.Module] = {}
    for cell in tqdm(cells, desc="grid cells", disable=not progress):
        if cell.checkpoint not in models:
            models = {cell.checkpoint: checkpoint_model(data, cell.checkpoint, progress=progress)}
        records += run_cell(models[cell.checkpoint], pairs, cell, bounds=bounds,
                            progress=progress, cache=cache, **options)
    return records


def summarize_grid(records: Sequence[dict]) -> Table:
    """One row per cell and projection: paths, how many arrived / are slowly closing / stalled
    (and how many of those froze and were stopped early), the median fraction of the start
    distance left, the median closing rate (per 1000 steps, over the window it states) and how
    many ended in the target's class."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["cell"], r["projection"]), []).append(r)
    rows = []
    for (cell, projection), rs in groups.items():
        count = {v: sum(r["verdict"] == v for r in rs) for v in PATH_VERDICTS}
        rows.append({"cell": cell, "projection": projection, "paths": len(rs),
                     "arrived": count["arrived"], "slowly closing": count["slowly closing"],
                     "stalled": count["stalled"], "frozen": sum(r["frozen"] for r in rs),
                     "median fraction left": statistics.median(r["fraction"] for r in rs),
                     "median rate /1000 steps": statistics.median(r["rate"] for r in rs),
                     "rate window (steps)": rs[0]["window"],
                     "target class reached": sum(r["reached"] for r in rs)})
    return Table(rows, formats={"median fraction left": ".3f", "median rate /1000 steps": ".3f"})


def dtype_spread(records: Sequence[dict]) -> Table:
    """How far float32 and float64 runs of the same checkpoint, step size and budget end apart:
    per projection, the median and largest ``|f32 - f64| / f64`` of each path's final fraction,
    and how many verdicts differ."""
    key = {}
    for r in records:
        cell = r["cell"]
        for dt in ("float32", "float64"):
            if f", {dt}," in cell:
                key.setdefault((cell.replace(dt, "*"), r["projection"], r["pair"]), {})[dt] = r
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for (cell, projection, _), both in key.items():
        if len(both) == 2:
            groups.setdefault((cell, projection), []).append((both["float32"], both["float64"]))
    rows = []
    for (cell, projection), ps in groups.items():
        rel = [abs(a["fraction"] - b["fraction"]) / b["fraction"] for a, b in ps]
        rows.append({"cell (both dtypes)": cell, "projection": projection, "paths": len(ps),
                     "median spread": statistics.median(rel), "largest spread": max(rel),
                     "verdicts differ": sum(a["verdict"] != b["verdict"] for a, b in ps)})
    return Table(rows, formats={"median spread": ".1%", "largest spread": ".1%"})


def shared_leaf_test(model: nn.Module, sources: Tensor, targets: Tensor, *, lead_steps: int,
                     step_size: float = 0.1, max_steps: int = 300, tol: float = 0.5,
                     stall_rate: float = 0.01, progress: bool = True) -> Table:
    """Can the greedy walk join two points known to share a leaf?

    ``x_k`` is the point after ``lead_steps`` exact steps of Algorithm 4.1 from ``x_0 = source``
    toward ``target`` (no pixel clamp, no arrival), so ``x_0`` and ``x_k`` lie on one leaf up to
    the Euler steps' drift (none inside a linear region of a ReLU net, where the leaves are flat).
    Then exact walks ``x_0 -> x_k`` and ``x_k -> x_0`` run in one batch. If they arrive, the greedy
    descent does reach targets on its own leaf and a stall on a test pair is evidence of another
    leaf; if they stall too, a stall says nothing about the leaves.

    Returns:
        A :class:`~leafkit.tables.Table`, one row a walk: ``walk`` (its direction), ``pair``
        (the index of the source), ``lead length`` ``||x_k - x_0||``, ``fraction`` left,
        ``rate`` and ``verdict`` (:func:`closing_verdict`, last fifth of the budget).

    Paper: Algorithm 4.1; Section 4.3 ("any two test images appear connected").
    """
    lead = horizontal_path(model, sources, targets, step_size=step_size, max_steps=lead_steps,
                           tol=None, projection="exact", progress=progress)
    x0, xk = sources.to(lead.final.device), lead.final.to(sources.device)
    out = horizontal_path(model, torch.cat([x0, xk]), torch.cat([xk, x0]), step_size=step_size,
                          max_steps=max_steps, tol=tol, projection="exact", progress=progress)
    window = min(_window(max_steps), out.distance.shape[1] - 1)
    verdicts, rate = closing_verdict(out.distance, out.arrived, window=window,
                                     stall_rate=stall_rate)
    P = len(sources)
    rows = [{"walk": "x_0 -> x_k" if b < P else "x_k -> x_0", "pair": b % P,
             "lead length": float(out.distance[b, 0]),
             "fraction": float(out.distance[b, -1] / out.distance[b, 0]),
             "rate": float(rate[b]), "verdict": verdicts[b]} for b in range(2 * P)]
    return Table(rows, formats={"lead length": ".2f", "fraction": ".3f", "rate": ".3f"})


def _main(argv: list[str]) -> int:
    """``cells`` (list the grid of :func:`grid_from_env`, then its CIFAR-10 cell) or ``cell K``
    (compute cell ``K``, or ``cell cifar``, as the chapter does, and store it in the cache)."""
    kind, cells = grid_from_env()
    if argv == ["cells"]:
        for k, cell in enumerate(cells):
            print(k, cell.label)
        print("cifar", cifar_cell(kind).label)
        return 0
    if argv[:1] == ["cell"] and len(argv) == 2 and (
            argv[1] == "cifar" or argv[1].isdigit() and int(argv[1]) < len(cells)):
        start = time.perf_counter()
        if argv[1] == "cifar":
            label = cifar_cell(kind).label
            run_cifar_cell(kind)
        else:
            label, data = cells[int(argv[1])].label, load_mnist()
            run_grid(data, [cells[int(argv[1])]], class_pairs(data), bounds=pixel_bounds())
        print(f"{kind} grid, cell {argv[1]} ({label}): stored in {cache_dir('grid')} after "
              f"{time.perf_counter() - start:.0f} s")
        return 0
    print(f"usage: python -m leafkit.robustness cells\n"
          f"       python -m leafkit.robustness cell K   (0 <= K < {len(cells)}, the {kind} grid)\n"
          f"       python -m leafkit.robustness cell cifar", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
