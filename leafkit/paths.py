"""Paths on the leaves (horizontal, Algorithm 4.1) and across them (Section 4.2), many at once.

A *horizontal path* walks from a source image toward a target image while staying tangent to the
distribution ``D_x = span_i g_i(x)`` (the row space of ``J = Jac_x log p``): it is Riemannian
gradient descent on ``||target - x||^2`` without a retraction. A *path across leaves* (vertical
path) does the opposite: it walks along a fixed direction projected onto ``ker G(x) = D_x^perp``,
where the model's prediction does not change to second order.

Both functions run a batch of ``B`` paths together: one Jacobian per step for the whole batch, a
mask (never a Python loop over samples) that freezes the paths that have stopped, and no
host-device synchronisation inside the step loop except a cheap check every ``check_every`` steps
(are all paths done? the progress bar; the user's ``stop`` rule). Paths that stopped are dropped
from the batch at those checks, so the Jacobian is only computed where it is needed. Everything
follows the device and dtype of the inputs; results are copied to the CPU once, at the end.

Paper: Algorithm 4.1 (horizontal path), Section 4.2 (paths across leaves), Figures 3-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .geometry import check_batch, check_scores, eval_mode, log_prob_jacobian, score_jacobian
from .projection import project_kernel, project_tangent, tangent_basis

Projection = Literal["exact", "authors", "scores", "random"]
PROJECTIONS: tuple[str, ...] = ("exact", "authors", "scores", "random")
StopRule = Callable[[int, torch.Tensor], bool]
# (x `(b, *input_shape)`, idx `(b,)`) -> (direction `(b, n)`, log p `(b, C)`, projected norm `(b,)`)
StepDirection = Callable[[torch.Tensor, torch.Tensor],
                         tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

# Stop codes, kept on the device during the loop and turned into words once at the end.
_RUNNING, _ARRIVED, _MAX_STEPS, _AT_TARGET, _VANISHED, _USER, _DONE = range(7)
STOP_REASONS: dict[int, str] = {
    _ARRIVED: "arrived: ||target - x|| <= tol",
    _MAX_STEPS: "max_steps reached",
    _AT_TARGET: "vanished: x equals the target, so there is no direction to move in",
    _VANISHED: "vanished: the projected direction is zero (the vector to project is orthogonal "
               "to the subspace, e.g. J = Jac_x log p = 0 on a dead or flat model)",
    _USER: "stopped by the `stop` rule",
    _DONE: "completed all steps",
}
_VANISH_RTOL = 64.0  # a projection shorter than 64 eps times the projected vector counts as zero


@dataclass
class PathResult:
    """A batch of paths, on the CPU, detached.

    Attributes:
        points: `(B, K, *input_shape)` the recorded points: the start (step 0), every
            ``record_every``-th step, and the final point (the last step of the loop).
        record_steps: `(K,)` the step index of each recorded point.
        distance: `(B, T + 1)` distance to the target (horizontal) or to the start (vertical) at
            every step ``0..T`` of the loop; after a path stops its value stays constant.
        probs: `(B, K, C)` class probabilities ``p(y|x)`` at the recorded points.
        steps_taken: `(B,)` how many steps each path actually moved.
        arrived: `(B,)` whether the path came within ``tol`` of its target (always ``False`` for
            vertical paths, which have no target).
        stop_reason: one string per path, a value of :data:`STOP_REASONS` (``"arrived..."``,
            ``"max_steps reached"``, ``"vanished: ..."``, ``"stopped by the `stop` rule"``,
            ``"completed all steps"``).
        final: `(B, *input_shape)` the last point of each path.
        kind: ``"horizontal"`` or ``"vertical"``.
    """

    points: torch.Tensor
    record_steps: torch.Tensor
    distance: torch.Tensor
    probs: torch.Tensor
    steps_taken: torch.Tensor
    arrived: torch.Tensor
    stop_reason: list[str]
    final: torch.Tensor
    kind: str

    @property
    def predicted(self) -> torch.Tensor:
        """`(B, K)` the most likely class at each recorded point."""
        return self.probs.argmax(-1)

    def to(self, device: torch.device | str) -> PathResult:
        """A copy with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return PathResult(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                             for k, v in moved.items()})


def horizontal_direction(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                         projection: Projection = "exact",
                         generator: torch.Generator | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's direction of Algorithm 4.1: ``target - x`` projected onto ``D_x``.

    Args:
        model: classifier returning raw scores `(B, C)`; used as it is (set eval mode yourself).
        x: `(B, *input_shape)` current points.
        target: `(B, *input_shape)` targets.
        projection: which subspace to project on; see :func:`horizontal_path`.
        generator: random source for ``projection="random"`` (on ``x``'s device; ``None``:
            torch's global generator).

    Returns:
        ``(v, log_p)``: `(B, *input_shape)` the projection, not normalized, and `(B, C)` the
        log-probabilities at ``x``.

    Paper: Algorithm 4.1.
    """
    _check_projection(projection)
    _check_inputs(x, target=target)
    v, log_p = _direction(model, x, (target - x).flatten(1), projection, generator)
    return v.view_as(x), log_p


def horizontal_path(model: nn.Module, source: torch.Tensor, target: torch.Tensor, *,
                    step_size: float = 0.1, max_steps: int = 5000, tol: float | None = 1.0,
                    bounds: tuple[float, float] | None = None,
                    projection: Projection | Sequence[Projection] = "exact",
                    record_every: int | None = None, progress: bool = True, seed: int = 0,
                    stop: StopRule | None = None, check_every: int = 50) -> PathResult:
    """Horizontal paths (Algorithm 4.1) from each ``source[b]`` toward ``target[b]``.

    ``x_0 = source``; at each step ``J = Jac_x log p(x_{t-1})``, ``v`` = the projection of
    ``target - x_{t-1}`` onto ``D_{x_{t-1}}`` (the row space of ``J``) and
    ``x_t = x_{t-1} + step_size * v / ||v||``. Before each step a path whose distance to its
    target is at most ``tol`` stops (the authors' rule) and is frozen while the others go on; a
    path also stops after ``max_steps`` steps, when ``v`` vanishes (``x == target`` with
    ``tol=None``, or ``J = 0``: no NaN is produced), or when ``stop`` says so.

    Inputs are batched: a single pair is passed as a batch of one (``source[None]``,
    ``target[None]``), and the result keeps the batch axis. The model is put in eval mode for the
    run and its previous mode restored afterwards; its parameters are never differentiated.

    ``projection`` selects the subspace ``v`` lives in:

    * ``"exact"`` (default): ``D_x`` itself, through an orthonormal basis of rank ``C - 1``
      (:func:`leafkit.projection.tangent_basis`, QR after dropping the most likely class's row,
      which is a combination of the others since ``sum_i p_i g_i = 0``, eq. 2.9).
    * ``"authors"``: what the authors' code computes. It projects onto the span of all ``C``
      normalized gradients ``g_i / ||g_i||`` by least squares, which on CUDA (``gels`` driver,
      QR without pivoting) treats the `(n, C)` matrix as full rank although its rank is
      ``C - 1``: its last singular value is rounding error (about ``1e-7`` of the first in
      float32). The least-squares projection then equals ``Q Q^T d`` with ``Q`` `(n, C)` from the
      QR of that matrix, and ``Q``'s last column is a unit vector made of rounding error,
      orthogonal to ``D_x``, i.e. a pseudo-random direction in ``ker G``. Implemented exactly
      so: ``torch.linalg.qr`` of the normalized matrix, ``v = Q Q^T d`` (a zero gradient column,
      as for the most likely class of a saturated softmax, is left at zero instead of dividing
      by zero). It differs from ``"exact"`` only by a component orthogonal to ``D_x``; being
      made of rounding error, that component changes with the batch size, the device and the
      library version, so such paths are not reproducible bit for bit.
    * ``"scores"``: the row space of ``Jac_x s`` for the raw scores ``s`` (rank ``C``), which
      adds to ``D_x`` the direction that shifts all scores equally.
    * ``"random"``: a control for ``"authors"``: ``D_x`` plus, at each step, one fresh uniformly
      random unit vector ``r`` orthogonal to ``D_x``, weighted as the authors' extra direction
      is, i.e. the projection onto ``D_x + span(r)``: ``v = P d + <r, d> r``. Drawn from a
      ``torch.Generator`` on the inputs' device seeded with ``seed``.

    A sequence of ``B`` names gives each path its own projection: the paths still share one
    Jacobian per step, so comparing projections on the same pairs costs one batched run.

    Args:
        model: classifier returning raw scores `(B, C)` for inputs `(B, *input_shape)`.
        source: `(B, *input_shape)` starting points.
        target: `(B, *input_shape)` destinations.
        step_size: ``alpha``, the length of every step (the paper uses 0.1).
        max_steps: ``T``, the most steps a path takes (the paper: 5000 or 10000).
        tol: a path arrives when ``||target - x|| <= tol``, checked before each step; ``None``
            disables arrival (every path runs to ``max_steps`` unless ``v`` vanishes).
        bounds: ``(lo, hi)`` to clamp every coordinate after each step (the authors' code clamps
            to the valid pixel box, :func:`leafkit.data.pixel_bounds`; Algorithm 4.1 does not).
        projection: ``"exact"``, ``"authors"``, ``"scores"`` or ``"random"`` (see above), or a
            sequence of ``B`` such names, one per path.
        record_every: keep a point (and its probabilities) every that many steps; ``None`` keeps
            only the start and the final point. Points are kept on the inputs' device until the
            end, so mind ``B * T / record_every`` images of memory.
        progress: show a tqdm bar (paths arrived, smallest distance), updated at the checks.
        seed: seed of the random directions of ``projection="random"`` (unused otherwise).
        stop: optional rule ``stop(step, distance)`` with ``distance`` `(B,)` on the device,
            called at the checks; returning ``True`` stops all paths still running.
        check_every: steps between the checks (the only host-device synchronisations).

    Returns:
        PathResult with ``distance`` = distance to the target.

    Raises:
        ValueError: unknown ``projection``, or a sequence of them whose length is not ``B``;
            ``source``/``target`` empty, not finite, or of
            different shapes, dtypes or devices; a non-positive ``step_size``,
            ``record_every`` or ``check_every``; a negative ``max_steps`` or ``tol``;
            ``bounds`` with ``lo >= hi``.

    Paper: Algorithm 4.1; Figures 4, 5 and 6.
    """
    _check_inputs(source, target=target)
    names = _projection_per_path(projection, len(source))
    _check_options(step_size, max_steps, tol, bounds, record_every, check_every)
    target_flat = target.detach().flatten(1)
    generator = (torch.Generator(device=source.device).manual_seed(seed)
                 if "random" in names else None)
    mixed = len(set(names)) > 1
    plan: str | list[tuple[str, torch.Tensor]] = names[0]
    plan_idx: torch.Tensor | None = None

    def step_direction(x: torch.Tensor, idx: torch.Tensor):
        nonlocal plan, plan_idx
        d = target_flat.index_select(0, idx) - x.flatten(1)
        if mixed and idx is not plan_idx:  # the running set changes only at the checks
            plan_idx = idx
            plan = _group_positions([names[i] for i in idx.tolist()], idx.device)
        v, log_p = _direction(model, x, d, plan, generator)
        return v, log_p, d.norm(dim=1)

    return _walk(model, source, step_direction,
                 distance=lambda x: (target_flat - x.flatten(1)).norm(dim=1),
                 vanished_code=lambda scale: torch.where(scale == 0, _AT_TARGET, _VANISHED),
                 end_code=_MAX_STEPS, tol=tol, step_size=step_size, max_steps=max_steps,
                 bounds=bounds, record_every=record_every, progress=progress, stop=stop,
                 check_every=check_every, kind="horizontal")


def vertical_path(model: nn.Module, x: torch.Tensor, direction: torch.Tensor | None = None, *,
                  step_size: float = 0.1, steps: int = 1000, seed: int = 0,
                  bounds: tuple[float, float] | None = None, record_every: int | None = None,
                  progress: bool = True, stop: StopRule | None = None,
                  check_every: int = 50) -> PathResult:
    """Paths across leaves (Section 4.2): move along a fixed direction projected onto ``ker G``.

    ``u_0`` = ``direction`` normalized per path; at each step ``u = u_0`` projected onto
    ``ker G(x_{t-1}) = D_{x_{t-1}}^perp`` and ``x_t = x_{t-1} + step_size * u / ||u||``. To
    second order the prediction does not change along the path (eq. 3.2), while the image
    fills with noise (Figure 3). A path stops early only if ``u`` vanishes (the direction lies
    in ``D_x``) or ``stop`` says so; ``arrived`` is always ``False`` (there is no target).

    Inputs are batched: a single image is passed as a batch of one (``x[None]``). The model is
    put in eval mode for the run and its previous mode restored afterwards.

    Args:
        model: classifier returning raw scores `(B, C)` for inputs `(B, *input_shape)`.
        x: `(B, *input_shape)` starting points.
        direction: `(B, *input_shape)` one direction per path, or `input_shape` shared by all;
            ``None`` draws a standard normal direction per path from a ``torch.Generator`` on
            ``x``'s device seeded with ``seed``.
        step_size: ``alpha``, the length of every step.
        steps: the number of steps.
        seed: seed of the random directions when ``direction`` is ``None``.
        bounds: ``(lo, hi)`` to clamp every coordinate after each step (default: no clamping).
        record_every: keep a point every that many steps; ``None`` keeps the start and the end.
        progress: show a tqdm bar, updated at the checks.
        stop: optional rule ``stop(step, distance)`` (distance to the start, `(B,)`), called at
            the checks; returning ``True`` stops all paths.
        check_every: steps between the checks (the only host-device synchronisations).

    Returns:
        PathResult with ``distance`` = ``||x_t - x_0||``.

    Raises:
        ValueError: ``x`` empty or not finite; ``direction`` of the wrong shape, not finite, or
            zero for some path; a non-positive ``step_size``, ``record_every`` or
            ``check_every``; a negative ``steps``; ``bounds`` with ``lo >= hi``.

    Paper: Section 4.2, Figure 3 (and the noisy sources of Figure 6).
    """
    _check_inputs(x)
    _check_options(step_size, steps, None, bounds, record_every, check_every)
    u0 = _unit_directions(x, direction, seed)
    start = x.detach().flatten(1)

    def step_direction(xs: torch.Tensor, idx: torch.Tensor):
        J, log_p = log_prob_jacobian(model, xs, validate=False)  # inputs checked once
        u = u0.index_select(0, idx)
        u = torch.where(_is_flat(J)[:, None], u, project_kernel(J, u, log_p))  # J = 0: ker G = R^n
        return u, log_p, torch.ones_like(log_p[:, 0])

    return _walk(model, x, step_direction,
                 distance=lambda xt: (xt.flatten(1) - start).norm(dim=1),
                 vanished_code=lambda scale: torch.full_like(scale, _VANISHED, dtype=torch.long),
                 end_code=_DONE, tol=None, step_size=step_size, max_steps=steps, bounds=bounds,
                 record_every=record_every, progress=progress, stop=stop,
                 check_every=check_every, kind="vertical")


def _projection_per_path(projection: str | Sequence[str], B: int) -> list[str]:
    """The projection name of each of the ``B`` paths, validated."""
    names = [projection] * B if isinstance(projection, str) else list(projection)
    if len(names) != B:
        raise ValueError(f"projection must be one name or a sequence of {B} names (one per "
                         f"path), got {len(names)}")
    for name in dict.fromkeys(names):
        _check_projection(name)
    return names


def _group_positions(names: list[str], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """``[(name, positions)]``: for each projection name, the `(m,)` positions that use it."""
    return [(name, torch.tensor([k for k, other in enumerate(names) if other == name],
                                device=device)) for name in dict.fromkeys(names)]


def _direction(model: nn.Module, x: torch.Tensor, d: torch.Tensor,
               projection: str | list[tuple[str, torch.Tensor]],
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(b, n)` projection of ``d`` `(b, n)` for ``projection``, and `(b, C)` ``log p`` at ``x``.

    ``projection`` is one name, or ``[(name, positions)]`` from :func:`_group_positions` to give
    each group of rows its own projection from one shared Jacobian.
    """
    Js, s = score_jacobian(model, x, validate=False)  # inputs checked once, no sync a step
    log_p = F.log_softmax(s, dim=-1)
    if isinstance(projection, str):
        return _project(Js, log_p, d, projection, generator), log_p
    v = torch.empty_like(d)
    for name, pos in projection:
        v[pos] = _project(Js[pos], log_p[pos], d[pos], name, generator)
    return v, log_p


def _project(Js: torch.Tensor, log_p: torch.Tensor, d: torch.Tensor, projection: str,
             generator: torch.Generator | None) -> torch.Tensor:
    """`(b, n)` projection of ``d`` given the score Jacobian ``Js`` `(b, C, n)` and ``log_p``."""
    if projection == "scores":
        q = torch.linalg.qr(Js.mT).Q  # (b, n, C): the C score gradients, full rank
        return _zero_where_flat(project_tangent(Js, d, basis=q), Js)
    J = Js - log_p.exp().unsqueeze(1) @ Js  # Jac_x log p, as in log_prob_jacobian
    if projection == "authors":
        cols = J.mT  # (b, n, C)
        norms = cols.norm(dim=1, keepdim=True)
        q = torch.linalg.qr(cols / torch.where(norms > 0, norms, torch.ones_like(norms))).Q
        v = project_tangent(J, d, basis=q)
    else:
        basis = tangent_basis(J, log_p)  # (b, n, C - 1)
        v = project_tangent(J, d, basis=basis)
        if projection == "random":
            r = torch.randn(d.shape, generator=generator, device=d.device, dtype=d.dtype)
            r = project_kernel(J, r, basis=basis)
            r = r / r.norm(dim=1, keepdim=True)
            v = v + (r * d).sum(dim=1, keepdim=True) * r
    return _zero_where_flat(v, J)


def _zero_where_flat(v: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    """Zero the rows of ``v`` `(b, n)` where ``J`` `(b, C, n)` is exactly 0: the subspace is then
    ``{0}``, whatever basis QR returns for a zero matrix."""
    return v.masked_fill(_is_flat(J)[:, None], 0.0)


def _is_flat(J: torch.Tensor) -> torch.Tensor:
    """`(b,)` whether ``J`` `(b, C, n)` is exactly zero (a dead or constant model at ``x``)."""
    return J.flatten(1).abs().amax(dim=1) == 0


def _walk(model: nn.Module, x0: torch.Tensor, step_direction: StepDirection, *,
          distance: Callable[[torch.Tensor], torch.Tensor],
          vanished_code: Callable[[torch.Tensor], torch.Tensor], end_code: int,
          tol: float | None, step_size: float, max_steps: int,
          bounds: tuple[float, float] | None, record_every: int | None, progress: bool,
          stop: StopRule | None, check_every: int, kind: str) -> PathResult:
    """The step loop shared by both kinds of path.

    ``step_direction(x, idx)`` returns, for the running subset ``x = x_all[idx]``, the `(b, n)`
    direction to normalize, the `(b, C)` log-probabilities at ``x`` and the `(b,)` norm of the
    vector that was projected (a direction shorter than ``64 eps`` times it counts as zero).
    """
    B, device = x0.shape[0], x0.device
    x = x0.detach().clone()
    idx = torch.arange(B, device=device)  # the paths whose next step is computed
    n_idx = B  # len(idx), known on the host; idx shrinks at the checks as paths stop
    active = torch.ones(B, dtype=torch.bool, device=device)
    code = torch.full((B,), _RUNNING, dtype=torch.long, device=device)
    steps_taken = torch.zeros(B, dtype=torch.long, device=device)
    dist_buf = torch.empty(B, max_steps + 1, dtype=x.dtype, device=device)
    log_p = None
    kept_x: list[torch.Tensor] = []
    kept_p: list[torch.Tensor] = []
    kept_t: list[int] = []
    eps = torch.finfo(x.dtype).eps
    bar = tqdm(total=max_steps, desc=f"{kind} paths", unit="step", disable=not progress,
               leave=False)
    t = 0
    with eval_mode(model), bar:
        while True:
            dist = distance(x)
            dist_buf[:, t] = dist
            arrived_now = active & (dist <= tol) if tol is not None else None
            if arrived_now is not None:
                code = torch.where(arrived_now, _ARRIVED, code)
                active = active & ~arrived_now
            last = t == max_steps
            if t % check_every == 0 and not last:
                n_active, n_arrived, d_min = torch.stack(  # one host-device sync
                    [active.sum().to(dist.dtype), (code == _ARRIVED).sum().to(dist.dtype),
                     dist.min()]).tolist()
                n_active = int(n_active)
                if progress:
                    bar.update(t - bar.n)
                    arrived = {} if tol is None else {"arrived": int(n_arrived)}
                    bar.set_postfix(running=n_active, **arrived, min_dist=f"{d_min:.3g}")
                if n_active == 0:
                    last = True
                elif stop is not None and stop(t, dist):
                    code = torch.where(active, _USER, code)
                    active = torch.zeros_like(active)
                    last = True
                elif n_active < n_idx:
                    keep = active if arrived_now is None else active | arrived_now
                    idx = keep.nonzero().squeeze(1)
                    n_idx = idx.numel()
            xs = x.index_select(0, idx)
            if last:
                with torch.no_grad():
                    out = model(xs)
                check_scores(out, xs)
                lp = F.log_softmax(out, dim=-1)
                log_p = _scatter_rows(log_p, idx, lp, B)
                kept_x.append(x.clone())
                kept_p.append(log_p.exp())
                kept_t.append(t)
                break
            v, lp, scale = step_direction(xs, idx)
            log_p = _scatter_rows(log_p, idx, lp.detach(), B)
            if t == 0 or (record_every is not None and t % record_every == 0):
                kept_x.append(x.clone())
                kept_p.append(log_p.exp())
                kept_t.append(t)
            v = v.detach()
            v_norm = v.norm(dim=1)
            running = active.index_select(0, idx)
            vanished = running & (v_norm <= _VANISH_RTOL * eps * scale)
            moving = running & ~vanished
            code.index_copy_(0, idx, torch.where(vanished, vanished_code(scale),
                                                 code.index_select(0, idx)))
            active.index_copy_(0, idx, moving)
            step = (step_size / torch.where(moving, v_norm, torch.ones_like(v_norm)))[:, None] * v
            x_new = xs + step.view_as(xs)
            if bounds is not None:
                x_new = x_new.clamp(bounds[0], bounds[1])
            x.index_copy_(0, idx, torch.where(moving.view(-1, *[1] * (x.dim() - 1)), x_new, xs))
            steps_taken.index_add_(0, idx, moving.long())
            t += 1
        bar.update(t - bar.n)
    code = torch.where(active, end_code, code)
    return PathResult(
        points=torch.stack(kept_x, dim=1).cpu(),
        record_steps=torch.tensor(kept_t, dtype=torch.long),
        distance=dist_buf[:, : t + 1].cpu(),
        probs=torch.stack(kept_p, dim=1).cpu(),
        steps_taken=steps_taken.cpu(),
        arrived=(code == _ARRIVED).cpu(),
        stop_reason=[STOP_REASONS[c] for c in code.tolist()],
        final=x.cpu(),
        kind=kind,
    )


def _scatter_rows(full: torch.Tensor | None, idx: torch.Tensor, rows: torch.Tensor,
                  B: int) -> torch.Tensor:
    """Write ``rows`` into ``full[idx]``, allocating ``full`` `(B, ...)` on first use."""
    if full is None:
        full = torch.zeros(B, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
    return full.index_copy(0, idx, rows)


def _check_projection(projection: str) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of {PROJECTIONS}")


def _check_inputs(x: torch.Tensor, *, target: torch.Tensor | None = None) -> None:
    """Raise ValueError for an invalid batch (:func:`~leafkit.geometry.check_batch`), or a target
    that does not match it."""
    check_batch(x, "source" if target is not None else "x")
    if target is None:
        return
    check_batch(target, "target")
    if target.shape != x.shape:
        raise ValueError(f"source and target shapes differ: {tuple(x.shape)} vs "
                         f"{tuple(target.shape)}")
    if target.dtype != x.dtype or target.device != x.device:
        raise ValueError(f"source and target must share dtype and device, got "
                         f"{x.dtype}/{x.device} and {target.dtype}/{target.device}")


def _check_options(step_size: float, max_steps: int, tol: float | None,
                   bounds: tuple[float, float] | None, record_every: int | None,
                   check_every: int) -> None:
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"the number of steps must be a non-negative integer, got {max_steps}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be non-negative or None, got {tol}")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds}")
    if record_every is not None and (int(record_every) != record_every or record_every < 1):
        raise ValueError(f"record_every must be a positive integer or None, got {record_every}")
    if int(check_every) != check_every or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every}")


def _unit_directions(x: torch.Tensor, direction: torch.Tensor | None, seed: int) -> torch.Tensor:
    """`(B, n)` unit directions: ``direction`` (per path or shared) or seeded normal draws."""
    B, shape = x.shape[0], x.shape[1:]
    if direction is None:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        u = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    else:
        if direction.shape == shape:
            direction = direction.expand_as(x)
        if direction.shape != x.shape:
            raise ValueError(f"direction must have shape {tuple(x.shape)} or {tuple(shape)}, "
                             f"got {tuple(direction.shape)}")
        check_batch(direction, "direction")
        u = direction.detach().to(device=x.device, dtype=x.dtype)
    u = u.reshape(B, -1)
    norms = u.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("direction is zero for some path")
    return u / norms
