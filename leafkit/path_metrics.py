"""What to measure on a path of Algorithm 4.1 (all on :class:`~leafkit.paths.PathResult`).

How far it strays from the straight segment between its ends (:func:`segment_distance`,
:func:`interpolation_gap`, and the segment itself, :func:`linear_interpolation`), which classes it
passes through (:func:`classes_visited`) and how unsure the model is where the predicted class
changes (:func:`transitions`, :func:`entropy`), how much of the remaining offset to the target
lies outside ``D_x`` (:func:`kernel_fraction`), whether the distance has stopped falling
(:func:`plateau_change`, :func:`path_summary`), and when the residual noise pattern settles
(:func:`settling_step`).

Paper: Section 4.3, Algorithm 4.1, Figures 4-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checks import eval_mode
from .geometry import log_prob_jacobian
from .projection import project_kernel
from .tables import Table

__all__ = ["Transition", "classes_visited", "entropy", "interpolation_gap", "kernel_fraction",
           "linear_interpolation", "path_summary", "plateau_change", "segment_distance",
           "settling_step", "transitions"]


def linear_interpolation(source: torch.Tensor, target: torch.Tensor, frames: int) -> torch.Tensor:
    """Points ``(1 - s) source + s target`` for ``frames`` values of ``s`` evenly in ``[0, 1]``.

    Args:
        source: `(B, *shape)`.
        target: `(B, *shape)`.
        frames: number of points, at least 2.

    Returns:
        `(B, frames, *shape)`.
    """
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    s = torch.linspace(0, 1, frames, dtype=source.dtype, device=source.device)
    s = s.view(1, frames, *[1] * (source.dim() - 1))
    return (1 - s) * source.unsqueeze(1) + s * target.unsqueeze(1)


def segment_distance(points: torch.Tensor, source: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each point from the segment ``[source, target]``.

    Args:
        points: `(B, K, *shape)`, e.g. ``PathResult.points``.
        source: `(B, *shape)`.
        target: `(B, *shape)`.

    Returns:
        `(B, K)` distances.
    """
    a = source.flatten(1).unsqueeze(1)
    d = target.flatten(1).unsqueeze(1) - a  # (B, 1, n)
    r = points.flatten(2) - a  # (B, K, n)
    s = ((r * d).sum(-1, keepdim=True) / (d * d).sum(-1, keepdim=True).clamp_min(1e-30)).clamp(0, 1)
    return (r - s * d).norm(dim=-1)


def interpolation_gap(points: torch.Tensor, source: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """How far a path strays from linear interpolation: the largest :func:`segment_distance`
    along it, relative to ``||target - source||``.

    Returns:
        `(B,)`: 0 for a straight path; 0.5 means it once stood half the pair distance off the line.
    """
    far = segment_distance(points, source, target).amax(dim=1)
    return far / (target - source).flatten(1).norm(dim=1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of distributions `(..., C)`; ``log C`` at most."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


@dataclass(frozen=True)
class Transition:
    """A change of the predicted class between two recorded points of a path.

    Attributes:
        step: the first recorded step with the new class.
        before: the class predicted at the previous recorded point.
        after: the new class.
        max_prob: the largest class probability at ``step`` and at the point before, whichever
            is smaller (how unsure the model is around the change).
        entropy: the larger entropy (nats) of those two points.
    """

    step: int
    before: int
    after: int
    max_prob: float
    entropy: float


def transitions(probs: torch.Tensor, record_steps: torch.Tensor) -> list[list[Transition]]:
    """The class changes along each path, with the model's uncertainty around them.

    Args:
        probs: `(B, K, C)`, e.g. ``PathResult.probs``.
        record_steps: `(K,)` the step of each recorded point.

    Returns:
        For each path, its :class:`Transition` s in order.
    """
    pred = probs.argmax(-1)
    top = probs.amax(-1)
    ent = entropy(probs)
    out = []
    for b in range(probs.shape[0]):
        changes = (pred[b, 1:] != pred[b, :-1]).nonzero().flatten().tolist()
        out.append([Transition(int(record_steps[k + 1]), int(pred[b, k]), int(pred[b, k + 1]),
                               float(top[b, k:k + 2].min()), float(ent[b, k:k + 2].max()))
                    for k in changes])
    return out


def classes_visited(probs: torch.Tensor) -> list[list[int]]:
    """The predicted classes along each path, consecutive repeats removed.

    Args:
        probs: `(B, K, C)`.

    Returns:
        For each path, e.g. ``[2, 8, 3]``: it started as a 2 and passed through an 8 to a 3.
    """
    return [torch.unique_consecutive(row).tolist() for row in probs.argmax(-1)]


def kernel_fraction(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The share of the offset ``target - x`` that lies in ``ker G(x)``, outside ``D_x``.

    Near 1 means Algorithm 4.1 (exact projection) sees almost nothing left to close: the rest of
    the way to the target is made of noise directions.

    Args:
        model: the classifier; it runs in eval mode (its modes are restored).
        x: `(B, *shape)` current points (e.g. ``PathResult.final``).
        target: `(B, *shape)` targets.

    Returns:
        `(B,)` ``||P_ker (target - x)|| / ||target - x||``.

    Paper: Proposition 2.1 (``ker G = D_x^perp``), Algorithm 4.1.
    """
    with eval_mode(model):
        J, log_p = log_prob_jacobian(model, x)
    d = (target - x).flatten(1)
    return project_kernel(J, d, log_p).norm(dim=1) / d.norm(dim=1).clamp_min(1e-30)


def plateau_change(distance: torch.Tensor, window: int) -> torch.Tensor:
    """How much each path's distance fell over its last ``window`` steps.

    Args:
        distance: `(B, T + 1)`, e.g. ``PathResult.distance``.
        window: number of steps, ``1 <= window <= T``.

    Returns:
        `(B,)` ``distance[:, -window - 1] - distance[:, -1]``.
    """
    if not 1 <= window < distance.shape[1]:
        raise ValueError(f"window must be in [1, {distance.shape[1] - 1}], got {window}")
    return distance[:, -window - 1] - distance[:, -1]


def settling_step(points: torch.Tensor, target: torch.Tensor, record_steps: torch.Tensor, *,
                  rtol: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """When the residual ``x_t - target`` (the noise left on the image) stops changing.

    The residual's change is measured against the final residual:
    ``c_t = ||r_t - r_T|| / ||r_T||``; the pattern has settled at the first recorded step from
    which ``c_t`` stays at most ``rtol``.

    Args:
        points: `(B, K, *shape)` recorded points.
        target: `(B, *shape)` targets.
        record_steps: `(K,)` steps of the points.
        rtol: the relative change counted as settled.

    Returns:
        ``(steps, change)``: `(B,)` the settling step of each path and `(B, K)` ``c_t``.
    """
    r = points.flatten(2) - target.flatten(1).unsqueeze(1)
    change = (r - r[:, -1:]).norm(dim=-1) / r[:, -1].norm(dim=-1, keepdim=True).clamp_min(1e-30)
    above = change > rtol  # (B, K)
    # index of the last recorded point still above rtol, then the next one
    last_above = torch.where(above, torch.arange(above.shape[1], device=above.device), -1).amax(dim=1)
    first_settled = (last_above + 1).clamp(max=above.shape[1] - 1)
    return record_steps[first_settled], change


def path_summary(distance: torch.Tensor, steps_taken: torch.Tensor, arrived: torch.Tensor, *,
                 window: int, stall_rtol: float = 0.01, frozen: torch.Tensor | None = None,
                 projection: Sequence[str] | None = None,
                 pair: Sequence[str] | None = None) -> Table:
    """One row of numbers a path: where it started and ended, and whether it arrived, stalled,
    froze or was still closing in when its budget ran out.

    A path that did not arrive has *stalled* when its distance fell by less than
    ``stall_rtol`` times its starting distance over its last ``window`` steps (the last steps
    it took: a path stopped at step ``s`` is measured over steps ``s - window .. s``). A path
    that the walk stopped because it froze (``freeze_window`` of
    :func:`leafkit.horizontal_path`) has verdict ``"frozen"`` and counts as stalled.

    Args:
        distance: `(B, T + 1)` distance to the target at every step (``PathResult.distance``).
        steps_taken: `(B,)` steps each path moved.
        arrived: `(B,)` whether each path arrived.
        window: steps over which the last fall of the distance is measured.
        stall_rtol: the fall, relative to the start, below which a path counts as stalled.
        frozen: `(B,)` whether each path froze (``PathResult.frozen``); ``None``: none did.
        projection: `B` names of each path's projection, shown as the first column.
        pair: `B` labels of each path's pair (``"4 -> 9"``), shown next.

    Returns:
        A :class:`~leafkit.tables.Table`, one row a path, that renders as a table on a page.
        Each row holds ``start``, ``final``, ``fraction`` (final / start), ``steps``, ``drop``
        (fall over its last ``window`` steps), ``arrived``, ``stalled``, ``frozen`` and
        ``verdict`` (``"arrived"``, ``"frozen"``, ``"stalled"`` or ``"closing"``), plus
        ``projection`` and ``pair`` when given.

    Paper: Algorithm 4.1 (the stopping rule ``||d - x|| <= 1``), Figures 4-6.
    """
    B = distance.shape[0]
    if not 1 <= window < distance.shape[1]:
        raise ValueError(f"window must be in [1, {distance.shape[1] - 1}], got {window}")
    labels = {"projection": projection, "pair": pair}
    for name, values in labels.items():
        if values is not None and len(values) != B:
            raise ValueError(f"{name} needs one label per path ({B}), got {len(values)}")
    end = steps_taken.clamp(max=distance.shape[1] - 1)
    rows = []
    for b in range(B):  # B small numbers, already on the host: a row each
        s = int(end[b])
        start, final = float(distance[b, 0]), float(distance[b, -1])
        drop = float(distance[b, max(s - window, 0)] - distance[b, s])
        is_frozen = frozen is not None and bool(frozen[b])
        stalled = not bool(arrived[b]) and (is_frozen or drop < stall_rtol * start)
        verdict = ("arrived" if arrived[b] else "frozen" if is_frozen
                   else "stalled" if stalled else "closing")
        rows.append({**{k: v[b] for k, v in labels.items() if v is not None},
                     "verdict": verdict, "steps": int(steps_taken[b]), "start": start,
                     "final": final, "fraction": final / start, "drop": drop,
                     "arrived": bool(arrived[b]), "stalled": stalled, "frozen": is_frozen})
    shown = [k for k, v in labels.items() if v is not None]
    shown += ["verdict", "steps", "start", "final", "fraction", "drop"]
    fall = f"fall over the last {window} steps"
    return Table(rows, columns=shown,
                 formats={"start": ".2f", "final": ".2f", "fraction": ".0%", "drop": ".2f"},
                 headers={"final": "end", "fraction": "end / start", "drop": fall})
