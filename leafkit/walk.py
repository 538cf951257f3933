"""The step loop behind every path of :mod:`leafkit.paths`: a batch of paths walked together.

One engine serves both kinds of path. At each step a *step rule* gives, for the paths still
running, the direction to move in; the engine normalizes it to length ``step_size``, clamps to
``bounds``, freezes the paths that have stopped (a mask, never a Python loop over samples), and
records points. It makes no host-device synchronisation except a cheap check every
``check_every`` steps: are all paths done, is every value still finite, what does the progress bar
show, does the user's ``stop`` rule fire. Paths that stopped are dropped from the batch at those
checks, so the Jacobian is only computed where it is needed. Results are copied to the CPU once.

Paper: Algorithm 4.1 (the step ``x_t = x_{t-1} + alpha v / ||v||``), Section 4.2.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checks import _scores, check_model, eval_mode

__all__ = ["STOP_REASONS", "PathResult", "StepRule", "StopRule", "WalkOptions", "walk"]

StopRule = Callable[[int, Tensor], "bool | Tensor"]
#: ``rule(x, idx) -> (direction, log_p, scale)`` for the running paths ``x = x_all[idx]``: the
#: ``(b, n)`` direction to normalize, the ``(b, C)`` log-probabilities at ``x``, and the ``(b,)``
#: norm of the vector that was projected (0 when there was nothing to project: the path is at its
#: target). A direction shorter than ``64 eps`` times ``scale`` counts as zero.
StepRule = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]

# Stop codes, kept on the device during the loop and turned into words once at the end.
_RUNNING, _ARRIVED, _MAX_STEPS, _AT_TARGET, _VANISHED, _USER, _DONE, _FROZEN = range(8)
STOP_REASONS: dict[int, str] = {
    _ARRIVED: "arrived: ||target - x|| <= tol",
    _MAX_STEPS: "max_steps reached",
    _AT_TARGET: "vanished: x equals the target, so there is no direction to move in",
    _VANISHED: "vanished: the projected direction is zero (the vector to project is orthogonal "
               "to the subspace, e.g. J = Jac_x log p = 0 on a dead or flat model)",
    _USER: "stopped by the `stop` rule",
    _DONE: "completed all steps",
    _FROZEN: "frozen: over the last freeze_window steps its distance fell by less than freeze_rtol "
             "times its starting distance",
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
        stop_reason: one string per path, a value of :data:`STOP_REASONS`.
        final: `(B, *input_shape)` the last point of each path.
        kind: ``"horizontal"`` or ``"vertical"``.
    """

    points: Tensor
    record_steps: Tensor
    distance: Tensor
    probs: Tensor
    steps_taken: Tensor
    arrived: Tensor
    stop_reason: list[str]
    final: Tensor
    kind: str

    @property
    def predicted(self) -> Tensor:
        """`(B, K)` the most likely class at each recorded point."""
        return self.probs.argmax(-1)

    @property
    def frozen(self) -> Tensor:
        """`(B,)` whether each path was stopped because it froze (``freeze_window``); such a
        path froze at step ``steps_taken``."""
        return torch.tensor([reason == STOP_REASONS[_FROZEN] for reason in self.stop_reason])

    def to(self, device: torch.device | str) -> PathResult:
        """A copy with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return PathResult(**{k: v.to(device) if isinstance(v, Tensor) else v
                             for k, v in moved.items()})


@dataclass(frozen=True)
class WalkOptions:
    """How a batch of paths walks; validated when made.

    Attributes:
        step_size: ``alpha``, the length of every step (finite, positive).
        max_steps: the most steps a path takes (a non-negative integer).
        tol: a path arrives when its distance is at most ``tol`` (checked before each step);
            ``None``: no arrival.
        bounds: ``(lo, hi)`` to clamp every coordinate after each step, or ``None``.
        record_every: keep a point every that many steps; ``None``: only the start and the end.
        check_every: steps between the checks (the only host-device synchronisations).
        progress: show a tqdm bar, updated at the checks.
        stop: ``stop(step, distance) -> bool`` called at the checks with the ``(B,)`` distances on
            the device; ``True`` stops every running path. A one-element tensor is read as a bool.
        freeze_window: stop each path that has *frozen*: at a check at step ``t >=
            freeze_window``, its smallest distance so far is less than ``freeze_rtol`` times its
            starting distance below its smallest distance up to step ``t - freeze_window``. The
            path keeps its place and the others go on; ``None``: no path freezes. Meant for
            distances to a target, which a moving path makes smaller.
        freeze_rtol: the tolerance of ``freeze_window`` (a non-negative number).
    """

    step_size: float = 0.1
    max_steps: int = 5000
    tol: float | None = None
    bounds: tuple[float, float] | None = None
    record_every: int | None = None
    check_every: int = 50
    progress: bool = True
    stop: StopRule | None = None
    freeze_window: int | None = None
    freeze_rtol: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("max_steps", "record_every", "check_every", "freeze_window"):  # 3.0 -> 3, after the checks
            value = getattr(self, name)
            if _is_whole(value):
                object.__setattr__(self, name, int(value))
        if not _is_number(self.step_size) or not (0 < self.step_size < math.inf):
            raise ValueError(f"step_size must be a finite positive number, got {self.step_size!r}")
        if not _is_whole(self.max_steps) or self.max_steps < 0:
            raise ValueError(f"the number of steps must be a non-negative integer, got "
                             f"{self.max_steps!r}")
        if self.tol is not None and (not _is_number(self.tol) or not 0 <= self.tol < math.inf):
            raise ValueError(f"tol must be a finite non-negative number or None, got {self.tol!r}")
        if self.bounds is not None:
            b = self.bounds
            if (not isinstance(b, (tuple, list)) or len(b) != 2
                    or not all(_is_number(v) and math.isfinite(v) for v in b) or not b[0] < b[1]):
                raise ValueError(f"bounds must be (lo, hi), two finite numbers with lo < hi, or "
                                 f"None, got {b!r}")
        if self.record_every is not None and (not _is_whole(self.record_every)
                                              or self.record_every < 1):
            raise ValueError(f"record_every must be a positive integer or None, got "
                             f"{self.record_every!r}")
        if not _is_whole(self.check_every) or self.check_every < 1:
            raise ValueError(f"check_every must be a positive integer, got {self.check_every!r}")
        if self.freeze_window is not None and (not _is_whole(self.freeze_window)
                                               or self.freeze_window < 1):
            raise ValueError(f"freeze_window must be a positive integer or None, got "
                             f"{self.freeze_window!r}")
        if not _is_number(self.freeze_rtol) or not 0 <= self.freeze_rtol < math.inf:
            raise ValueError(f"freeze_rtol must be a finite non-negative number, got "
                             f"{self.freeze_rtol!r}")
        if self.stop is not None and not callable(self.stop):
            raise ValueError(f"stop must be a function stop(step, distance) -> bool or None, got "
                             f"{type(self.stop).__name__}")


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_whole(v: object) -> bool:
    return _is_number(v) and float(v).is_integer()


def walk(model: nn.Module, x0: Tensor, rule: StepRule, distance: Callable[[Tensor], Tensor], *,
         options: WalkOptions, kind: str) -> PathResult:
    """Walk the paths that start at ``x0`` `(B, *input_shape)` by ``rule``, as ``options`` say.

    The inputs must have been checked (:func:`leafkit.checks.check_batch`); the model is checked
    here once (dtype, device, output shape), put in eval mode for the walk and its mode restored.
    ``distance(x)`` gives the `(B,)` distances recorded at every step (and compared with ``tol``).

    Raises:
        ValueError: a model of another dtype or device than ``x0``, or a bad output at the start.
        FloatingPointError: a distance or a model output that turns NaN or inf during the walk,
            found at the first check after it happens (every ``check_every`` steps).
    """
    check_model(model, x0)
    with eval_mode(model):
        with torch.no_grad():
            _scores(model, x0)  # checked: shape (B, C), finite
        return _Walk(model, x0, rule, distance, options, kind).run()


class _Walk:
    """The state of one :func:`walk`: positions, the running set, stop codes, records."""

    def __init__(self, model: nn.Module, x0: Tensor, rule: StepRule,
                 distance: Callable[[Tensor], Tensor], options: WalkOptions, kind: str):
        B, device = x0.shape[0], x0.device
        self.model = model
        self.rule, self.distance, self.opt, self.kind = rule, distance, options, kind
        self.end_code = _MAX_STEPS if kind == "horizontal" else _DONE
        self.x = x0.detach().clone()
        self.idx = torch.arange(B, device=device)  # the paths whose next step is computed
        self.n_idx = B  # len(idx), known on the host; idx shrinks at the checks as paths stop
        self.active = torch.ones(B, dtype=torch.bool, device=device)
        self.code = torch.full((B,), _RUNNING, dtype=torch.long, device=device)
        self.steps_taken = torch.zeros(B, dtype=torch.long, device=device)
        self.dist = torch.empty(B, options.max_steps + 1, dtype=x0.dtype, device=device)
        self.log_p: Tensor | None = None
        self.kept: list[tuple[int, Tensor, Tensor]] = []  # (step, x, p)
        self.eps = torch.finfo(x0.dtype).eps

    def run(self) -> PathResult:
        opt = self.opt
        bar = tqdm(total=opt.max_steps, desc=f"{self.kind} paths", unit="step",
                   disable=not opt.progress, leave=False)
        t = 0
        with bar:
            while True:
                dist = self.distance(self.x)
                self.dist[:, t] = dist
                arrived_now = None
                if opt.tol is not None:
                    arrived_now = self.active & (dist <= opt.tol)
                    self.code = torch.where(arrived_now, _ARRIVED, self.code)
                    self.active = self.active & ~arrived_now
                last = t == opt.max_steps
                if t % opt.check_every == 0 and not last:
                    last = self._check(t, dist, arrived_now, bar)
                if last:
                    self._finish(t)
                    break
                self._step(t)
                t += 1
            bar.update(t - bar.n)
        return self._result(t)

    def _check(self, t: int, dist: Tensor, arrived_now: Tensor | None, bar) -> bool:
        """The periodic check (one host-device sync); returns whether the walk ends now."""
        bad_p = (torch.zeros((), device=dist.device) if self.log_p is None
                 else (~torch.isfinite(self.log_p.index_select(0, self.idx))).any(1).sum())
        frozen_now = self._freeze(t)
        n_active, n_arrived, d_min, bad_d, bad_p = torch.stack(
            [self.active.sum().to(dist.dtype), (self.code == _ARRIVED).sum().to(dist.dtype),
             dist.min(), (~torch.isfinite(dist)).sum().to(dist.dtype),
             bad_p.to(dist.dtype)]).tolist()
        if bad_d or bad_p:
            what = "model output (log-probabilities)" if bad_p else "distance"
            raise FloatingPointError(
                f"the {what} of {int(bad_p or bad_d)} path(s) became NaN or inf by step {t} of "
                f"the {self.kind} paths (step_size={self.opt.step_size}): the points left the "
                "range where the model is finite. Use a smaller step_size, bounds=, or a stop rule")
        n_active = int(n_active)
        if self.opt.progress:
            bar.update(t - bar.n)
            arrived = {} if self.opt.tol is None else {"arrived": int(n_arrived)}
            bar.set_postfix(running=n_active, **arrived, min_dist=f"{d_min:.3g}")
        if n_active == 0:
            return True
        if self.opt.stop is not None and _stop_fires(self.opt.stop, t, dist):
            self.code = torch.where(self.active, _USER, self.code)
            self.active = torch.zeros_like(self.active)
            return True
        if n_active < self.n_idx:  # the paths that stopped now take one more, still step for p
            keep = self.active
            for now in (arrived_now, frozen_now):
                keep = keep if now is None else keep | now
            self.idx = keep.nonzero().squeeze(1)
            self.n_idx = self.idx.numel()
        return False

    def _freeze(self, t: int) -> Tensor | None:
        """Stop the running paths whose best distance improved by at most ``freeze_rtol`` times
        the start over the last ``freeze_window`` steps; returns the mask of those (or None)."""
        window = self.opt.freeze_window
        if window is None or t < window:
            return None
        best_then = self.dist[:, : t - window + 1].amin(1)
        best_now = self.dist[:, : t + 1].amin(1)
        frozen = self.active & (best_then - best_now <= self.opt.freeze_rtol * self.dist[:, 0])
        self.code = torch.where(frozen, _FROZEN, self.code)
        self.active = self.active & ~frozen
        return frozen

    def _keep(self, t: int) -> None:
        self.kept.append((t, self.x.clone(), self.log_p.exp()))

    def _step(self, t: int) -> None:
        """One step of the running paths: direction, vanishing test, normalized move, clamp."""
        idx, opt = self.idx, self.opt
        xs = self.x.index_select(0, idx)
        v, lp, scale = self.rule(xs, idx)
        self.log_p = _scatter_rows(self.log_p, idx, lp.detach(), self.x.shape[0])
        if t == 0 or (opt.record_every is not None and t % opt.record_every == 0):
            self._keep(t)
        v = v.detach()
        v_norm = v.norm(dim=1)
        running = self.active.index_select(0, idx)
        vanished = running & (v_norm <= _VANISH_RTOL * self.eps * scale)
        moving = running & ~vanished
        code_now = torch.where(scale == 0, _AT_TARGET, _VANISHED)
        self.code.index_copy_(0, idx, torch.where(vanished, code_now,
                                                  self.code.index_select(0, idx)))
        self.active.index_copy_(0, idx, moving)
        step = (opt.step_size / torch.where(moving, v_norm, torch.ones_like(v_norm)))[:, None] * v
        x_new = xs + step.view_as(xs)
        if opt.bounds is not None:
            x_new = x_new.clamp(opt.bounds[0], opt.bounds[1])
        shape = (-1, *[1] * (self.x.dim() - 1))
        self.x.index_copy_(0, idx, torch.where(moving.view(shape), x_new, xs))
        self.steps_taken.index_add_(0, idx, moving.long())

    def _finish(self, t: int) -> None:
        """The probabilities at the final points (one checked forward pass), recorded."""
        xs = self.x.index_select(0, self.idx)
        with torch.no_grad():
            out = self.model(xs)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"the model output at the end of the {self.kind} paths "
                                     f"(step {t}) holds NaN or inf values")
        self.log_p = _scatter_rows(self.log_p, self.idx, F.log_softmax(out, dim=-1),
                                   self.x.shape[0])
        self._keep(t)

    def _result(self, t: int) -> PathResult:
        code = torch.where(self.active, self.end_code, self.code)
        steps, xs, ps = zip(*self.kept)
        return PathResult(
            points=torch.stack(xs, dim=1).cpu(), record_steps=torch.tensor(steps),
            distance=self.dist[:, : t + 1].cpu(), probs=torch.stack(ps, dim=1).cpu(),
            steps_taken=self.steps_taken.cpu(), arrived=(code == _ARRIVED).cpu(),
            stop_reason=[STOP_REASONS[c] for c in code.tolist()], final=self.x.cpu(),
            kind=self.kind)


def _stop_fires(stop: StopRule, t: int, dist: Tensor) -> bool:
    """Call the user's rule; a bool, or a one-element tensor read as one."""
    answer = stop(t, dist)
    if isinstance(answer, Tensor):
        if answer.numel() != 1:
            raise TypeError(f"the stop rule must return True or False (or a one-element tensor), "
                            f"got a tensor of shape {tuple(answer.shape)} at step {t}: reduce it, "
                            "e.g. bool((distance < 1).all())")
        return bool(answer)
    if not isinstance(answer, bool):
        raise TypeError(f"the stop rule must return True or False, got {type(answer).__name__} "
                        f"{answer!r} at step {t}")
    return answer


def _scatter_rows(full: Tensor | None, idx: Tensor, rows: Tensor, B: int) -> Tensor:
    """Write ``rows`` into ``full[idx]``, allocating ``full`` `(B, ...)` on first use."""
    if full is None:
        full = torch.zeros(B, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
    return full.index_copy(0, idx, rows)
