"""Paths on the leaves (horizontal, Algorithm 4.1) and across them (Section 4.2), many at once.

A *horizontal path* walks from a source image toward a target image while staying tangent to the
distribution ``D_x = span_i g_i(x)`` (the row space of ``J = Jac_x log p``): it is Riemannian
gradient descent on ``||target - x||^2`` for the Euclidean metric induced on the leaf, without a
retraction. A *path across leaves* (vertical path) does the opposite: it walks along a fixed
direction projected onto ``ker G(x) = D_x^perp``, where the model's prediction does not change to
second order.

Both kinds share one step loop (:func:`leafkit.walk.walk`) and one Jacobian route: the ``C``
backward passes of the score Jacobian, from which ``J`` follows by eq. (3.7); only the
``"authors"`` projection takes ``J`` by backward through ``log_softmax``, as their code does. Inputs are checked
once here; the loop makes no host-device synchronisation except its periodic checks. Everything
follows the device and dtype of the inputs; results are copied to the CPU once, at the end.

Paper: Algorithm 4.1 (horizontal path), Section 4.2 (paths across leaves), Figures 3-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .checks import _scores, check_batch, check_model, eval_mode
from .geometry import log_prob_jacobian_from_scores
from .jacobian import _log_prob_jacobian_direct, _score_jacobian
from .projection import _full_rank_basis, _orthonormal_columns, _project_tangent, _tangent_basis
from .walk import STOP_REASONS, PathResult, StopRule, WalkOptions, walk

# PathResult, WalkOptions and STOP_REASONS live in leafkit.walk (imported here for convenience)
__all__ = ["PROJECTIONS", "horizontal_direction", "horizontal_path", "vertical_path"]

Projection = Literal["exact", "authors", "scores", "random"]
PROJECTIONS: tuple[str, ...] = ("exact", "authors", "scores", "random")


def horizontal_direction(model: nn.Module, x: Tensor, target: Tensor, *,
                         projection: Projection = "exact",
                         generator: torch.Generator | None = None,
                         ) -> tuple[Tensor, Tensor]:
    """One step's direction of Algorithm 4.1: ``target - x`` projected onto ``D_x``.

    Args:
        model: classifier returning raw scores `(B, C)`; run in eval mode, its mode restored.
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
    names = _projection_per_path(projection, len(x))
    _check_inputs(x, target=target)
    check_model(model, x)
    with eval_mode(model):
        with torch.no_grad():
            _scores(model, x)  # checked: shape (B, C), finite
        v, log_p = _direction(model, x, (target - x).flatten(1),
                              _group_positions(names, x.device), generator)
    return v.view_as(x), log_p


def horizontal_path(model: nn.Module, source: Tensor, target: Tensor, *,
                    step_size: float = 0.1, max_steps: int = 5000, tol: float | None = 1.0,
                    bounds: tuple[float, float] | None = None,
                    projection: Projection | Sequence[Projection] = "exact",
                    record_every: int | None = None, progress: bool = True, seed: int = 0,
                    stop: StopRule | None = None, check_every: int = 50,
                    freeze_window: int | None = None, freeze_rtol: float = 1e-3) -> PathResult:
    """Horizontal paths (Algorithm 4.1) from each ``source[b]`` toward ``target[b]``.

    ``x_0 = source``; at each step ``J = Jac_x log p(x_{t-1})``, ``v`` = the projection of
    ``target - x_{t-1}`` onto ``D_{x_{t-1}}`` (the row space of ``J``) and
    ``x_t = x_{t-1} + step_size * v / ||v||``. Before each step a path whose distance to its
    target is at most ``tol`` stops (the authors' rule) and stays put while the others go on; a
    path also stops after ``max_steps`` steps, when ``v`` vanishes (``x == target`` with
    ``tol=None``, or ``J = 0``: no NaN is produced), when ``stop`` says so, or, with
    ``freeze_window``, when it has frozen (not a rule of the paper: it saves the steps of paths
    that no longer get closer; ``PathResult.frozen`` marks them).

    Inputs are batched: a single pair is passed as a batch of one (``source[None]``,
    ``target[None]``), and the result keeps the batch axis. The model is put in eval mode for the
    run and its previous mode restored afterwards; its parameters are never differentiated.

    ``projection`` selects the subspace ``v`` lives in:

    * ``"exact"`` (default): ``D_x`` itself, through an orthonormal basis of rank ``C - 1``
      (:func:`leafkit.projection.tangent_basis`, QR after dropping the most likely class's row,
      which is a combination of the others since ``sum_i p_i g_i = 0``, eq. 2.9).
    * ``"authors"``: what the authors' code computes (torch 1.7, ``torch.lstsq``). Their network
      ends in ``log_softmax``; they take ``J`` by one backward per class through it, normalize
      the ``C`` gradient columns and solve least squares on all ``C`` with ``gels`` (QR without
      pivoting), which treats the `(n, C)` matrix as full rank although its rank is ``C - 1``
      (eq. 2.9). Computed here the same way: ``J`` by backward through ``log_softmax`` (for these
      rows only, in the same backward passes as the other paths' score Jacobian), columns normalized (a zero column is
      left at zero), ``Q`` from ``torch.linalg.qr`` (unpivoted Householder QR, as ``gels``),
      ``v = Q Q^T d``. ``Q``'s last column is a unit vector orthogonal to ``D_x`` made of
      rounding error, but not a random one: at confident points (``1 - p_max <= 3e-4``) it is
      almost exactly the direction that raises all scores equally (``J_s^T 1`` off ``D_x``,
      measured ``|cos|`` near 1 by :mod:`leafkit.authors`), because the most likely class's row
      ``g_max = sum_{i != max} p_i (g_s,max - g_s,i)`` is computed from ``1 - fl(p_max)``;
      elsewhere it is rounding noise. Such paths depend on the route of ``J``, the batch, the
      device and the library (a different order of operations gives a different tenth
      direction), so they are not reproducible bit for bit across machines. (The authors
      multiply ``J`` by the ``gels`` coefficients, which equals ``Q Q^T d`` in exact arithmetic
      but adds a rounding term of its own; :func:`leafkit.authors.lstsq_projection` measures it.)
    * ``"scores"``: the row space of ``Jac_x s`` for the raw scores ``s`` (rank ``C``), which
      adds to ``D_x`` the direction that shifts all scores equally.
    * ``"random"``: a control for ``"authors"``: ``D_x`` plus, at each step, one fresh uniformly
      random unit vector ``r`` orthogonal to ``D_x``, weighted as the authors' extra direction
      is, i.e. the projection onto ``D_x + span(r)``: ``v = P d + <r, d> r``. Drawn from a
      ``torch.Generator`` on the inputs' device seeded with ``seed``.

    A sequence of ``B`` names gives each path its own projection: the paths still share one
    batched Jacobian per step (the ``"authors"`` paths' rows through ``log_softmax``), so
    comparing projections on the same pairs costs one batched run.

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
            called at the checks; returning ``True`` (or a one-element tensor that is true)
            stops all paths still running.
        check_every: steps between the checks (the only host-device synchronisations).
        freeze_window: stop a path once its smallest distance to the target so far has improved
            by at most ``freeze_rtol`` times its starting distance over the last
            ``freeze_window`` steps (tested at the checks); it froze at ``steps_taken``.
            ``None`` (default): every path runs to its budget, as in Algorithm 4.1.
        freeze_rtol: the tolerance of ``freeze_window``.

    Returns:
        PathResult with ``distance`` = distance to the target.

    Raises:
        ValueError: unknown ``projection`` (or ``None``), or a sequence of them whose length is
            not ``B``; ``source``/``target`` empty, not finite, of another dtype than float32 or
            float64, or of different shapes, dtypes or devices; a model whose parameters have
            another dtype or device than the inputs, or whose output is not ``(B, C)`` scores;
            options rejected by :class:`~leafkit.walk.WalkOptions` (a step size that is not a
            finite positive number, ``bounds`` that are not ``(lo, hi)`` with ``lo < hi``, ...).
        TypeError: a ``stop`` rule that returns neither a bool nor a one-element tensor.
        FloatingPointError: a distance or model output that turns NaN or inf during the walk
            (found at the next check).

    Paper: Algorithm 4.1; Figures 4, 5 and 6.
    """
    _check_inputs(source, target=target)
    names = _projection_per_path(projection, len(source))
    options = WalkOptions(step_size=step_size, max_steps=max_steps, tol=tol, bounds=bounds,
                          record_every=record_every, check_every=check_every, progress=progress,
                          stop=stop, freeze_window=freeze_window, freeze_rtol=freeze_rtol)
    target_flat = target.detach().flatten(1)
    generator = (torch.Generator(device=source.device).manual_seed(seed)
                 if "random" in names else None)
    plan: list[tuple[str, Tensor]] = _group_positions(names, source.device)
    plan_idx: Tensor | None = None

    def rule(x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nonlocal plan, plan_idx
        d = target_flat.index_select(0, idx) - x.flatten(1)
        if len(plan) > 1 and idx is not plan_idx:  # the running set changes only at the checks
            plan_idx = idx
            plan = _group_positions([names[i] for i in idx.tolist()], idx.device)
        v, log_p = _direction(model, x, d, plan, generator)
        return v, log_p, d.norm(dim=1)

    return walk(model, source, rule, lambda x: (target_flat - x.flatten(1)).norm(dim=1),
                options=options, kind="horizontal")


def vertical_path(model: nn.Module, x: Tensor, direction: Tensor | None = None, *,
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
        ValueError: ``x`` empty, not finite or not float32/float64; ``direction`` of the wrong
            shape, not finite, or zero for some path; a model of another dtype or device, or a
            bad model output; options rejected by :class:`~leafkit.walk.WalkOptions`.
        TypeError: a ``stop`` rule that returns neither a bool nor a one-element tensor.
        FloatingPointError: a distance or model output that turns NaN or inf during the walk.

    Paper: Section 4.2, Figure 3 (and the noisy sources of Figure 6).
    """
    _check_inputs(x)
    options = WalkOptions(step_size=step_size, max_steps=steps, bounds=bounds,
                          record_every=record_every, check_every=check_every, progress=progress,
                          stop=stop)
    u0 = _unit_directions(x, direction, seed)
    start = x.detach().flatten(1)

    def rule(xs: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        J, log_p = log_prob_jacobian_from_scores(*_score_jacobian(model, xs))
        u = u0.index_select(0, idx)  # where J = 0 the basis is zero and ker G all of R^n
        u = u - _project_tangent(_tangent_basis(J, log_p), u)
        return u, log_p, torch.ones_like(log_p[:, 0])

    return walk(model, x, rule, lambda xt: (xt.flatten(1) - start).norm(dim=1),
                options=options, kind="vertical")


def _projection_per_path(projection: str | Sequence[str], B: int) -> list[str]:
    """The projection name of each of the ``B`` paths, validated."""
    if isinstance(projection, str):
        names = [projection] * B
    elif isinstance(projection, Sequence):
        names = list(projection)
    else:
        raise ValueError(f"projection must be one of {PROJECTIONS} or a sequence of {B} such "
                         f"names (one per path), got {projection!r}")
    if len(names) != B:
        raise ValueError(f"projection must be one name or a sequence of {B} names (one per "
                         f"path), got {len(names)}")
    for name in dict.fromkeys(names):
        _check_projection(name)
    return names


def _group_positions(names: list[str], device: torch.device) -> list[tuple[str, Tensor]]:
    """``[(name, positions)]``: for each projection name, the `(m,)` positions that use it."""
    return [(name, torch.tensor([k for k, other in enumerate(names) if other == name],
                                device=device)) for name in dict.fromkeys(names)]


def _direction(model: nn.Module, x: Tensor, d: Tensor, plan: list[tuple[str, Tensor]],
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """`(b, n)` projection of ``d`` `(b, n)` and `(b, C)` ``log p`` at ``x``, for the groups of
    rows of ``plan`` (``[(name, positions)]``, see :func:`_group_positions`). One forward and
    ``C`` backward passes serve all rows: the ``"authors"`` rows differentiate ``log_softmax``
    (their code's route), the others the scores, from which ``J`` follows by eq. (3.7)."""
    if any(name == "authors" for name, _ in plan):
        rows = None
        if len(plan) > 1:
            rows = torch.zeros(len(d), dtype=torch.bool, device=d.device)
            rows[plan[[name for name, _ in plan].index("authors")][1]] = True
        jac, out = _log_prob_jacobian_direct(model, x, rows)
    else:
        jac, out = _score_jacobian(model, x)
    if len(plan) == 1:
        return _project(jac, out, d, plan[0][0], generator)
    v, log_p = torch.empty_like(d), torch.empty_like(out)
    for name, pos in plan:
        v[pos], log_p[pos] = _project(jac[pos], out[pos], d[pos], name, generator)
    return v, log_p


def _project(jac: Tensor, out: Tensor, d: Tensor, projection: str,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """`(b, n)` projection of ``d`` for ``projection`` and `(b, C)` ``log p``, from ``jac``
    `(b, C, n)` and ``out`` `(b, C)`: ``J = Jac_x log p`` and ``log p`` for ``"authors"``, the
    score Jacobian and the scores otherwise."""
    if projection == "authors":
        return _zero_where_flat(_project_tangent(_full_rank_basis(jac), d), jac), out
    J, log_p = log_prob_jacobian_from_scores(jac, out)
    if projection == "scores":
        v = _project_tangent(_orthonormal_columns(jac.mT), d)  # the C score gradients
        return _zero_where_flat(v, jac), log_p
    basis = _tangent_basis(J, log_p)  # (b, n, C - 1)
    v = _project_tangent(basis, d)
    if projection == "random":
        r = torch.randn(d.shape, generator=generator, device=d.device, dtype=d.dtype)
        r = r - _project_tangent(basis, r)
        r = r / r.norm(dim=1, keepdim=True)
        v = v + (r * d).sum(dim=1, keepdim=True) * r
    return _zero_where_flat(v, J), log_p


def _zero_where_flat(v: Tensor, J: Tensor) -> Tensor:
    """Zero the rows of ``v`` `(b, n)` where ``J`` `(b, C, n)` is exactly 0: the subspace is then
    ``{0}``, whatever basis QR returns for a zero matrix."""
    return v.masked_fill(_is_flat(J)[:, None], 0.0)


def _is_flat(J: Tensor) -> Tensor:
    """`(b,)` whether ``J`` `(b, C, n)` is exactly zero (a dead or constant model at ``x``)."""
    return J.flatten(1).abs().amax(dim=1) == 0


def _check_projection(projection: str) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of {PROJECTIONS}")


def _check_inputs(x: Tensor, *, target: Tensor | None = None) -> None:
    """Raise ValueError for an invalid batch (:func:`~leafkit.checks.check_batch`), or a target
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


def _unit_directions(x: Tensor, direction: Tensor | None, seed: int) -> Tensor:
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
