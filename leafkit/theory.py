"""Helpers for the theory chapters (Sections 2 and 3): checks of Proposition 2.1, of the KL
expansions (3.1)-(3.2) and of Theorem 3.1, with the small tables and plots that show them.

Nothing here is needed by the experiments of Section 4; it turns the statements of the paper into
numbers a notebook can assert: the memory of a dense ``G`` (Table 1), the rank of ``G`` as a
function of the tolerance, the ratio of the KL divergence to its quadratic term, max-pool ties,
Hessians of the scores, principal angles between the subspaces ``D_x``, two plane fields in
``R^3`` that a reader can picture, and a survey of the involutivity residual over architectures.

Paper: Sections 2-3 (eq. 2.4-2.5, 3.1-3.11, Proposition 2.1, Table 1, Theorem 3.1, the Remark).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from .geometry import (_flat_parameters, _scores, check_batch, kl_divergence,
                       log_prob_jacobian, numerical_rank)
from .frobenius import score_hessian_vector_products
from .projection import tangent_basis

__all__ = [
    "DATASET_SHAPES",
    "PLANE_FIELDS",
    "PlaneField",
    "SurveyCase",
    "Table",
    "ARCHITECTURES",
    "activation_patterns",
    "circle",
    "count_maxpool_ties",
    "format_bytes",
    "involutivity_survey",
    "kl_second_order",
    "memory_table",
    "numerical_rank",
    "parameter_kl_second_order",
    "plot_involutivity_survey",
    "plot_kl_check",
    "plot_plane_fields",
    "plot_rank_vs_tolerance",
    "plot_spectra",
    "principal_angles",
    "score_hessian_vector_products",
    "survey_models",
    "tangent_angles_along",
]


# --------------------------------------------------------------------------- small tables

class Table:
    """Rows of named values that print as text and render as HTML in a notebook.

    Args:
        rows: one ``dict`` per row, the same keys in every row.
        columns: the keys to show, in order (default: all keys of the first row); other keys
            stay available through :meth:`column` (e.g. per-point tensors behind a summary).
        formats: per column, a format spec (``".2e"``) or a function value -> ``str``.
    """

    def __init__(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                 formats: Mapping[str, str | Callable[[object], str]] | None = None):
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns if columns is not None else (self.rows[0] if self.rows else []))
        self.formats = dict(formats or {})

    def column(self, name: str) -> list:
        """All values of one column (shown or not)."""
        return [r[name] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def _cell(self, name: str, value: object) -> str:
        fmt = self.formats.get(name)
        if callable(fmt):
            return fmt(value)
        if fmt is not None:
            return format(value, fmt)
        return str(value)

    def _cells(self) -> list[list[str]]:
        return [[self._cell(c, r[c]) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self._cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def format_bytes(size: float) -> str:
    """``1.2e9 -> '1.20 GB'``: decimal units (kB = 1000 B), three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- Table 1, ranks

#: Input shape and number of classes of the data sets of Table 1.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "MNIST": ((1, 28, 28), 10),
    "CIFAR-10": ((3, 32, 32), 10),
    "CIFAR-100": ((3, 32, 32), 100),
    "ImageNet": ((3, 224, 224), 1000),
}


def memory_table(shapes: Mapping[str, tuple[tuple[int, ...], int]] = DATASET_SHAPES, *,
                 dtype: torch.dtype = torch.float32) -> Table:
    """Table 1, computed: the size of ``G``, the bound on its rank and what storing it costs.

    Per data set: ``n`` (entries of one input), ``C``, the rank bound ``C - 1`` of
    Proposition 2.1, the bytes of one dense ``n x n`` matrix ``G`` and of the factored form
    (``J``, ``C x n``, plus ``p``) that leafkit works with, and their ratio.

    Args:
        shapes: data set name -> (input shape, number of classes).
        dtype: the floating-point type whose size counts.

    Returns:
        A :class:`Table` with columns ``data set, input, n, C, rank bound C-1, dense G,
        factored (J, p), dense / factored``.

    Paper: Table 1, Proposition 2.1.
    """
    item = torch.empty((), dtype=dtype).element_size()
    rows = []
    for name, (shape, C) in shapes.items():
        if C < 2 or not shape or any(s < 1 for s in shape):
            raise ValueError(f"{name}: need C >= 2 classes and a non-empty input shape, got "
                             f"shape {shape} and C = {C}")
        n = math.prod(shape)
        dense, factored = n * n * item, (C * n + C) * item
        rows.append({"data set": name, "input": "x".join(map(str, shape)), "n": n, "C": C,
                     "rank bound C-1": C - 1, "dense G": dense, "factored (J, p)": factored,
                     "dense / factored": dense / factored})
    return Table(rows, formats={"dense G": format_bytes, "factored (J, p)": format_bytes,
                                "dense / factored": ".0f"})


def plot_spectra(eigenvalues: Tensor, num_classes: int, *, labels: Sequence[str] | None = None,
                 show: int = 30, ax=None):
    """Eigenvalues of ``G`` over the largest, descending, on a log scale: ``C - 1`` of them, then
    the drop to round-off. A dotted line marks the index ``C - 1``.

    Args:
        eigenvalues: ``(B, m)`` eigenvalues per sample.
        num_classes: ``C``.
        labels: one legend entry per sample.
        show: how many of the largest eigenvalues to draw.
        ax: a matplotlib axis (default: a new figure).

    Returns:
        The axis.

    Paper: Proposition 2.1 (``rank G <= C - 1``).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    lam = eigenvalues.detach().abs().sort(-1, descending=True).values[:, :show].cpu()
    k = torch.arange(1, lam.shape[1] + 1)
    for b, row in enumerate(lam):
        ax.semilogy(k, (row / row[0]).clamp_min(1e-40), ".-",
                    label=None if labels is None else labels[b])
    ax.axvline(num_classes - 0.5, color="gray", ls=":", label=f"C - 1 = {num_classes - 1}")
    ax.set_xlabel("index of the eigenvalue (descending)")
    ax.set_ylabel("eigenvalue / largest")
    ax.legend(fontsize=8)
    return ax


def plot_rank_vs_tolerance(rtols: Tensor, ranks: Mapping[str, Tensor], num_classes: int, *,
                           ax=None):
    """Estimated rank against the relative tolerance, one band (min to max over the samples)
    per method, with the true rank ``C - 1`` as a dashed line.

    Args:
        rtols: ``(T,)`` tolerances.
        ranks: label -> ``(B, T)`` ranks from :func:`numerical_rank`.
        num_classes: ``C``.
        ax: a matplotlib axis (default: a new figure).

    Returns:
        The axis.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    t = rtols.cpu()
    for label, r in ranks.items():
        r = r.cpu().float()
        line, = ax.semilogx(t, r.median(0).values, "o-", ms=3, label=label)
        ax.fill_between(t, r.amin(0), r.amax(0), color=line.get_color(), alpha=0.2)
    ax.axhline(num_classes - 1, color="black", ls="--", lw=1, label=f"C - 1 = {num_classes - 1}")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("relative tolerance")
    ax.set_ylabel("estimated rank of G")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------- KL expansions

def kl_second_order(model: nn.Module, x: Tensor, v: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Both sides of eq. (3.2) along a direction: ``KL(p(x + e v) || p(x))`` and ``e^2 v^T G v``.

    The KL comes from :func:`leafkit.geometry.kl_divergence` (from the scores, no cancellation);
    ``v^T G v = sum_i p_i (g_i . v)^2`` from the Jacobian, without forming ``G``. All ``B x E``
    displaced inputs go through the model in one batch. Use a float64 model for small ``e``.

    Args:
        model: a classifier returning ``(B, C)``, in eval mode.
        x: inputs ``(B, *input_shape)``.
        v: directions, the shape of ``x``.
        eps: ``(E,)`` step lengths.

    Returns:
        ``(kl, quad)``, both ``(B, E)`` float64. To second order ``kl = quad / 2``.

    Paper: eq. (3.2) (which drops the factor 1/2), eq. (2.5).
    """
    check_batch(x)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1)
    B, E = x.shape[0], eps.numel()
    J, log_p = log_prob_jacobian(model, x)
    vGv = (log_p.exp() * (J @ v.reshape(B, -1, 1)).squeeze(-1).square()).sum(1)
    steps = eps.view(1, E, *[1] * (x.dim() - 1)) * v.unsqueeze(1)
    kl = kl_divergence(model, x.unsqueeze(1).expand_as(steps).reshape(B * E, *x.shape[1:]),
                       steps.reshape(B * E, *x.shape[1:])).view(B, E)
    return kl, (eps.square().view(1, E) * vGv.view(B, 1)).double()


class _ParameterLine(nn.Module):
    """The scores ``s(x_r, w + t_r u)`` as a module of ``t`` ``(R, 1)``: row ``r`` moves the
    parameters by ``t_r`` along ``u`` and evaluates the model on its own input ``x_r``."""

    def __init__(self, model: nn.Module, x: Tensor, u: Tensor):
        super().__init__()
        self.model, self.x, self.u = model, x, u
        self.w, self.unflatten = _flat_parameters(model)

    def forward(self, t: Tensor) -> Tensor:
        def one(tr: Tensor, xr: Tensor) -> Tensor:
            params = self.unflatten(self.w + tr[0] * self.u)
            return functional_call(self.model, params, (xr.unsqueeze(0),))[0]

        return vmap(one)(t, self.x)


def parameter_kl_second_order(model: nn.Module, x: Tensor, u: Tensor,
                              eps: Tensor) -> tuple[Tensor, Tensor]:
    """Both sides of eq. (3.1): ``KL(p(y|x, w + e u) || p(y|x, w))`` and ``e^2 u^T F(x, w) u``.

    ``u^T F u = sum_i p_i (d/de log p_i)^2`` by one forward-mode product in ``w`` (no ``d x d``
    matrix); the KL by :func:`leafkit.geometry.kl_divergence` applied to the model seen as a
    function of the step ``e`` along ``u``.

    Args:
        model: a classifier returning ``(B, C)``, in eval mode (all parameters count, in the
            order of ``named_parameters()``).
        x: inputs ``(B, *input_shape)``.
        u: a parameter direction ``(d,)``.
        eps: ``(E,)`` step lengths.

    Returns:
        ``(kl, quad)``, both ``(B, E)`` float64. To second order ``kl = quad / 2``.

    Paper: eq. (3.1) (which drops the factor 1/2), eq. (2.4).
    """
    check_batch(x)
    w, unflatten = _flat_parameters(model)
    if u.shape != w.shape:
        raise ValueError(f"u must be a flat parameter vector of shape ({w.numel()},), "
                         f"got {tuple(u.shape)}")
    eps = torch.as_tensor(eps, dtype=w.dtype, device=w.device).reshape(-1)
    B, E = x.shape[0], eps.numel()
    x = x.detach()

    def log_p(params: Tensor) -> Tensor:
        return torch.log_softmax(functional_call(model, unflatten(params), (x,)), -1)

    with torch.no_grad():
        log_p0, dlog_p = jvp(log_p, (w,), (u,))
    uFu = (log_p0.exp() * dlog_p.square()).sum(1)
    rows = x.repeat_interleave(E, 0)
    line = _ParameterLine(model, rows, u)
    t = eps.repeat(B).view(B * E, 1)
    kl = kl_divergence(line, torch.zeros_like(t), t).view(B, E)
    return kl, (eps.square().view(1, E) * uFu.view(B, 1)).double()


def plot_kl_check(eps: Tensor, curves: Mapping[str, tuple[Tensor, Tensor]], *,
                  what: str = "\\epsilon^2 v^T G v"):
    """Two panels: KL against its quadratic term on log-log axes (with the lines ``KL = q`` and
    ``KL = q / 2``), and the ratio ``KL / q`` against ``e``.

    Args:
        eps: ``(E,)`` step lengths.
        curves: label -> ``(kl, quad)`` from :func:`kl_second_order` or
            :func:`parameter_kl_second_order`, each ``(B, E)``; every sample is one line.
        what: the quadratic term, as TeX, for the axis labels.

    Returns:
        The figure.

    Paper: eq. (3.1)-(3.2).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    e = eps.detach().cpu()
    all_q = torch.cat([q.flatten() for _, q in curves.values()]).cpu()
    ref = torch.tensor([all_q.min().item(), all_q.max().item()])
    left.loglog(ref, ref, color="gray", ls="--", lw=1, label="KL = q  (as printed)")
    left.loglog(ref, ref / 2, color="black", ls=":", lw=1, label="KL = q / 2")
    for k, (label, (kl, q)) in enumerate(curves.items()):
        color = f"C{k}"
        for b in range(kl.shape[0]):
            name = label if b == 0 else None
            left.loglog(q[b].cpu(), kl[b].cpu(), ".-", color=color, alpha=0.7, label=name)
            right.semilogx(e, (kl[b] / q[b]).cpu(), ".-", color=color, alpha=0.7, label=name)
    right.axhline(0.5, color="black", ls=":", lw=1)
    first = max(float((kl[:, 0] / q[:, 0]).max()) for kl, q in curves.values())
    right.set_ylim(0, max(1.1, 1.25 * first))  # third-order terms at the largest e may run off
    left.set_xlabel(f"$q = {what}$")
    left.set_ylabel("KL")
    left.legend(fontsize=8)
    right.set_xlabel(r"$\epsilon$")
    right.set_ylabel("KL / q")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def count_maxpool_ties(model: nn.Module, x: Tensor) -> Tensor:
    """How many max-pool windows of each sample hold their largest value twice or more.

    At such a tie the network is not differentiable: the max switches input under an arbitrarily
    small move, and autograd silently picks one side. Windows whose maximum is 0 are not counted:
    after a ReLU they are flat (every entry is a switched-off unit), so the choice is harmless.

    Args:
        model: a network with :class:`torch.nn.MaxPool2d` layers (no padding, no dilation),
            in eval mode.
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(B,)`` integer counts, summed over all max-pool layers (and calls).

    Paper: eq. (3.2) (the expansion needs a differentiable model).
    """
    check_batch(x)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    if not pools:
        raise ValueError("the model has no nn.MaxPool2d layer")
    counts: list[Tensor] = []

    def hook(module: nn.MaxPool2d, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        if module.padding not in (0, (0, 0)) or module.dilation not in (1, (1, 1)):
            raise ValueError("count_maxpool_ties supports max-pooling without padding or dilation")
        z = inputs[0]
        win = nn.functional.unfold(z.flatten(0, 1).unsqueeze(1), module.kernel_size,
                                   stride=module.stride)  # (B*ch, k*k, windows)
        top = win.amax(1, keepdim=True)
        tied = ((win == top).sum(1) > 1) & (top.squeeze(1) != 0)
        counts.append(tied.view(z.shape[0], -1).sum(1))

    handles = [p.register_forward_hook(hook) for p in pools]
    try:
        with torch.no_grad():
            _scores(model, x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(counts).sum(0)


# --------------------------------------------------------------------------- Theorem 3.1

def principal_angles(Q1: Tensor, Q2: Tensor) -> Tensor:
    """Principal angles between the column spaces of two batches of orthonormal bases.

    Computed from the sines (singular values of ``(I - Q1 Q1^T) Q2``), which stay accurate for
    tiny angles, where ``arccos`` of the cosines loses half the digits.

    Args:
        Q1: ``(B, n, k1)`` orthonormal columns.
        Q2: ``(B, n, k2)`` orthonormal columns, ``k2 <= k1`` (else the two are swapped).

    Returns:
        ``(B, min(k1, k2))`` angles in radians, ascending. All zero iff one space contains the
        other.

    Paper: Section 3 (inside a linear region of a ReLU net, ``D_x`` is a fixed subspace).
    """
    if Q1.dim() != 3 or Q2.dim() != 3 or Q1.shape[:2] != Q2.shape[:2]:
        raise ValueError(f"Q1 and Q2 must be (B, n, k) with the same B and n, got "
                         f"{tuple(Q1.shape)} and {tuple(Q2.shape)}")
    if Q2.shape[-1] > Q1.shape[-1]:
        Q1, Q2 = Q2, Q1
    outside = Q2 - Q1 @ (Q1.mT @ Q2)
    sines = torch.linalg.svdvals(outside).clamp(max=1.0)
    return torch.arcsin(sines).flip(-1)


def activation_patterns(model: nn.Module, x: Tensor) -> Tensor:
    """The linear region of a ReLU / max-pool network at each input, as a boolean code.

    Records which units every :class:`torch.nn.ReLU` module switches on (1 or 0) and which entry
    wins each window of every :class:`torch.nn.MaxPool2d` (its flat index). Two inputs with equal
    codes lie in the same linear region, where the scores are one affine map ``s = A x + b``.

    Args:
        model: a network with ReLU and/or max-pool modules, in eval mode.
        x: inputs ``(B, *input_shape)``.

    Returns:
        ``(B, P)`` integer codes.
    """
    check_batch(x)
    codes: list[Tensor] = []

    def relu_hook(_m: nn.Module, _inputs: tuple[Tensor, ...], out: Tensor) -> None:
        codes.append((out > 0).flatten(1).long())

    def pool_hook(m: nn.MaxPool2d, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        _, winner = nn.functional.max_pool2d(inputs[0], m.kernel_size, m.stride, m.padding,
                                             m.dilation, m.ceil_mode, return_indices=True)
        codes.append(winner.flatten(1))

    hooks = [m.register_forward_hook(relu_hook if isinstance(m, nn.ReLU) else pool_hook)
             for m in model.modules() if isinstance(m, (nn.ReLU, nn.MaxPool2d))]
    if not hooks:
        raise ValueError("the model has no nn.ReLU or nn.MaxPool2d module: no linear regions")
    try:
        with torch.no_grad():
            _scores(model, x)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(codes, 1)


def tangent_angles_along(model: nn.Module, x: Tensor, direction: Tensor,
                         radii: Tensor | Sequence[float]) -> tuple[Tensor, Tensor | None]:
    """The largest principal angle between ``D_x`` and ``D_{x + r d}`` for several distances ``r``.

    All ``B (R + 1)`` points share one Jacobian call; bases come from
    :func:`leafkit.projection.tangent_basis` (QR of ``C - 1`` rows of ``J``).

    Args:
        model: a classifier returning ``(B, C)``, in eval mode.
        x: inputs ``(B, *input_shape)``.
        direction: unit directions, the shape of ``x``.
        radii: ``(R,)`` distances.

    Returns:
        ``(angles, same_region)``: ``angles`` ``(B, R)`` in radians; ``same_region`` ``(B, R)``
        booleans from :func:`activation_patterns` (``x + r d`` in the linear region of ``x``),
        or ``None`` for a model without ReLU or max-pool modules.

    Paper: Section 3 (the leaves of a ReLU net are flat inside a linear region).
    """
    check_batch(x)
    if direction.shape != x.shape:
        raise ValueError(f"direction must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(direction.shape)}")
    radii = torch.as_tensor(radii, dtype=x.dtype, device=x.device).reshape(-1)
    B, R = x.shape[0], radii.numel()
    moved = x.unsqueeze(1) + radii.view(1, R, *[1] * (x.dim() - 1)) * direction.unsqueeze(1)
    points = torch.cat([x.unsqueeze(1), moved], 1).reshape(B * (R + 1), *x.shape[1:])
    J, log_p = log_prob_jacobian(model, points)
    Q = tangent_basis(J, log_p).view(B, R + 1, *J.shape[2:3], -1)
    Q0 = Q[:, :1].expand(B, R, *Q.shape[2:])
    angles = principal_angles(Q0.reshape(B * R, *Q.shape[2:]),
                              Q[:, 1:].reshape(B * R, *Q.shape[2:])).amax(-1).view(B, R)
    if not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in model.modules()):
        return angles, None
    codes = activation_patterns(model, points).view(B, R + 1, -1)
    return angles, (codes[:, 1:] == codes[:, :1]).all(-1)


# --------------------------------------------------------------------------- plane fields in R^3

@dataclass(frozen=True)
class PlaneField:
    """The plane field ``D = span{X, Y}`` on ``R^3`` with ``X = d/dx + a(x, y) d/dz`` and
    ``Y = d/dy + b(x, y) d/dz``: at each point the plane of the 1-form ``dz - a dx - b dy``.

    ``[X, Y] = (db/dx - da/dy) d/dz``, so ``D`` is involutive exactly where ``da/dy = db/dx``
    (the 1-form is closed and the leaves are the graphs ``z = f(x, y) + c`` with
    ``df = a dx + b dy``). Otherwise a loop drawn tangent to the planes does not close: it climbs
    by the integral of ``db/dx - da/dy`` over the area it encircles (Stokes).

    Attributes:
        name: a short label.
        a, b: functions of two tensors ``(x, y)`` returning a tensor of their shape.
    """

    name: str
    a: Callable[[Tensor, Tensor], Tensor]
    b: Callable[[Tensor, Tensor], Tensor]

    def X(self, p: Tensor) -> Tensor:
        """The field ``X`` at points ``p`` ``(P, 3)``, shape ``(P, 3)``."""
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        return torch.stack([one, zero, self.a(p[:, 0], p[:, 1])], -1)

    def Y(self, p: Tensor) -> Tensor:
        """The field ``Y`` at points ``p`` ``(P, 3)``, shape ``(P, 3)``."""
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        return torch.stack([zero, one, self.b(p[:, 0], p[:, 1])], -1)

    def bracket(self, p: Tensor) -> Tensor:
        """The Lie bracket ``[X, Y] = (DY) X - (DX) Y`` at points ``p`` ``(P, 3)``, by forward-mode
        derivatives (no finite differences), shape ``(P, 3)``."""
        def one(q: Tensor) -> Tensor:
            X = lambda r: self.X(r.unsqueeze(0))[0]  # noqa: E731
            Y = lambda r: self.Y(r.unsqueeze(0))[0]  # noqa: E731
            return jvp(Y, (q,), (X(q),))[1] - jvp(X, (q,), (Y(q),))[1]
        return vmap(one)(p)

    def residual(self, p: Tensor) -> Tensor:
        """``||(I - P_D) [X, Y]|| / ||[X, Y]||`` at points ``p`` ``(P, 3)`` (0 where the bracket
        vanishes): 0 everywhere iff ``D`` is involutive. Shape ``(P,)``."""
        Q = torch.linalg.qr(torch.stack([self.X(p), self.Y(p)], -1)).Q  # (P, 3, 2)
        br = self.bracket(p)
        outside = br - (Q @ (Q.mT @ br.unsqueeze(-1))).squeeze(-1)
        norm = br.norm(dim=-1)
        return torch.where(norm > 0, outside.norm(dim=-1) / norm.clamp_min(1e-300), 0.0)

    def lift(self, xy: Tensor, z0: float = 0.0) -> Tensor:
        """The curve tangent to ``D`` above a plane curve ``xy`` ``(T, 2)``, starting at height
        ``z0``: ``z' = a x' + b y'`` integrated by the trapezoid rule. Shape ``(T, 3)``."""
        a, b = self.a(xy[:, 0], xy[:, 1]), self.b(xy[:, 0], xy[:, 1])
        dx, dy = xy[1:, 0] - xy[:-1, 0], xy[1:, 1] - xy[:-1, 1]
        dz = 0.5 * (a[1:] + a[:-1]) * dx + 0.5 * (b[1:] + b[:-1]) * dy
        z = z0 + torch.cat([torch.zeros_like(dz[:1]), dz.cumsum(0)])
        return torch.cat([xy, z.unsqueeze(-1)], -1)


#: Two plane fields that differ in one coefficient: the planes of ``dz - y dx - x dy = d(z - xy)``
#: (involutive, leaves ``z = xy + c``) and of ``dz - y dx`` (the standard contact structure, as far
#: from involutive as a plane field in ``R^3`` can be).
PLANE_FIELDS: dict[str, PlaneField] = {
    "involutive": PlaneField("involutive: dz = y dx + x dy", a=lambda x, y: y, b=lambda x, y: x),
    "contact": PlaneField("not involutive: dz = y dx", a=lambda x, y: y,
                          b=lambda x, y: torch.zeros_like(x)),
}


def circle(radius: float = 1.0, steps: int = 400, dtype: torch.dtype = torch.float64) -> Tensor:
    """A counter-clockwise circle in the plane, ``(steps + 1, 2)``, closed (last = first)."""
    t = torch.linspace(0, 2 * math.pi, steps + 1, dtype=dtype)
    return radius * torch.stack([t.cos(), t.sin()], -1)


def plot_plane_fields(fields: Mapping[str, PlaneField] = PLANE_FIELDS, *, radius: float = 1.0,
                      grid: int = 5, extent: float = 1.2):
    """One 3-D panel per plane field: small squares in the planes ``D_p`` on a grid in ``z = 0``
    (the fields do not depend on ``z``), and the lift of a circle of the given radius (red), with
    its start (dot) and end (cross) marked.

    Returns:
        The figure.

    Paper: Section 3 (distributions, involutivity (3.4), the Frobenius theorem).
    """
    fig = plt.figure(figsize=(5 * len(fields), 4.6))
    g = torch.linspace(-extent, extent, grid, dtype=torch.float64)
    px, py = torch.meshgrid(g, g, indexing="ij")
    h = 0.5 * extent / grid  # half the side of a square, in x and y
    for k, field in enumerate(fields.values()):
        ax = fig.add_subplot(1, len(fields), k + 1, projection="3d")
        p = torch.stack([px.flatten(), py.flatten(), torch.zeros_like(px.flatten())], -1)
        for q, u, v in zip(p, field.X(p), field.Y(p)):  # the planes do not depend on z
            corners = torch.stack([q - h * u - h * v, q + h * u - h * v,
                                   q + h * u + h * v, q - h * u + h * v, q - h * u - h * v])
            ax.plot_trisurf(*corners[:4].T.numpy(), color="tab:blue", alpha=0.25, linewidth=0)
            ax.plot(*corners.T.numpy(), color="tab:blue", lw=0.5)
        curve = field.lift(circle(radius), z0=0.0).numpy()
        ax.plot(*curve.T, color="red", lw=2)
        ax.scatter(*curve[0], color="red", s=25)
        ax.scatter(*curve[-1], color="red", marker="x", s=40)
        ax.set_title(field.name, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the survey

@dataclass
class SurveyCase:
    """One network of the involutivity survey.

    Attributes:
        architecture: ``"MLP"`` or ``"CNN"`` (the paper's CNN shape, with max-pool).
        activation: ``relu``, ``tanh``, ``softplus``, ``gelu`` or ``sigmoid``.
        weights: ``"random"`` (initialization) or ``"trained"``.
        model: the network, in eval mode.
        accuracy: its test accuracy, or ``None`` where not measured.
    """

    architecture: str
    activation: str
    weights: str
    model: nn.Module
    accuracy: float | None = None


def _small_mlp(act: str) -> nn.Module:
    from .models import MLP
    return MLP(784, (64, 64), activation_name=act)


def _small_cnn(act: str) -> nn.Module:
    from .models import MnistCNN
    return MnistCNN(channels=(4, 8), hidden=32, activation_name=act)


#: The survey's architectures: name -> activation name -> a fresh network.
ARCHITECTURES: dict[str, Callable[[str], nn.Module]] = {"MLP": _small_mlp, "CNN": _small_cnn}


def survey_models(data, *, architectures: Sequence[str] = ("MLP", "CNN"),
                  activations: Sequence[str] = ("relu", "tanh", "softplus", "gelu", "sigmoid"),
                  epochs: float = 2, lr: float = 0.1, seed: int = 0,
                  progress: bool = False) -> list[SurveyCase]:
    """Small networks for the survey, each at its initialization and after a short training.

    ``MLP``: 784 -> 64 -> 64 -> 10. ``CNN``: the paper's CNN shrunk to 4 and 8 channels and 32
    hidden units (conv, conv, max-pool, fc, fc). Each is trained with plain SGD
    (:func:`leafkit.train`, cached on disk; about one second each on two cores); its ``random``
    version is step 0 of the same run, so both share the initialization.

    Args:
        data: an :class:`~leafkit.data.MNISTData`.
        architectures: keys of ``ARCHITECTURES``.
        activations: activation names.
        epochs: passes over the training images.
        lr: SGD learning rate (larger than the paper's 0.01, so that a few epochs suffice).
        seed: initialization and batch order.
        progress: show training progress bars.

    Returns:
        ``2 * len(architectures) * len(activations)`` cases.
    """
    from .training import accuracy, steps_for_epochs, train
    bad = [a for a in architectures if a not in ARCHITECTURES]
    if bad:
        raise ValueError(f"unknown architectures {bad}; choose from {sorted(ARCHITECTURES)}")
    steps = steps_for_epochs(epochs, len(data.train_x))
    cases = []
    for arch in architectures:
        for act in activations:
            run = train(ARCHITECTURES[arch](act).config, data.train_x, data.train_y, steps=steps,
                        checkpoint_steps=(0,), lr=lr, seed=seed, progress=progress)
            for weights, step in (("random", 0), ("trained", steps)):
                model = run.model(step)
                cases.append(SurveyCase(arch, act, weights, model,
                                        accuracy(model, data.test_x, data.test_y)))
    return cases


def involutivity_survey(cases: Sequence[SurveyCase], x: Tensor, *,
                        dtype: torch.dtype = torch.float64) -> Table:
    """The involutivity residual of every case on the same inputs.

    Args:
        cases: from :func:`survey_models` (or built by hand).
        x: inputs ``(B, *input_shape)``; for max-pool networks keep them off max-pool ties
            (e.g. add a ``1e-2`` jitter to raw digits).
        dtype: computing precision (each model is deep-copied to it).

    Returns:
        A :class:`Table` with columns ``architecture, activation, weights, test accuracy,
        median residual, max residual``; the hidden column ``residuals`` holds the ``(B,)``
        per-point values.

    Paper: Theorem 3.1, eq. (3.4)-(3.11); the Remark (smooth activations).
    """
    from .frobenius import involutivity_residual
    rows = []
    for case in cases:
        res = involutivity_residual(case.model, x, dtype=dtype).cpu()
        rows.append({"architecture": case.architecture, "activation": case.activation,
                     "weights": case.weights,
                     "test accuracy": float("nan") if case.accuracy is None else case.accuracy,
                     "median residual": res.median().item(), "max residual": res.max().item(),
                     "residuals": res})
    return Table(rows, columns=["architecture", "activation", "weights", "test accuracy",
                                "median residual", "max residual"],
                 formats={"test accuracy": ".2f", "median residual": ".1e",
                          "max residual": ".1e"})


def plot_involutivity_survey(table: Table, *, floor: float = 1e-17, ax=None):
    """Every per-point residual of :func:`involutivity_survey`, one row per network, on a log
    scale; random weights in one colour, trained in another. Exact zeros are drawn at ``floor``.

    Returns:
        The axis.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.28 * len(table) + 1.2))
    colors = {"random": "tab:blue", "trained": "tab:orange"}
    for k, row in enumerate(table):
        res = row["residuals"].double().clamp_min(floor)
        ax.scatter(res, k + torch.linspace(-0.25, 0.25, len(res)), s=8, alpha=0.7,
                   color=colors.get(row["weights"], "gray"))
    for weights, color in colors.items():
        ax.scatter([], [], s=8, color=color, label=f"{weights} weights")
    ax.set_xscale("log")
    ax.set_yticks(range(len(table)), [f"{r['architecture']} {r['activation']} ({r['weights']})"
                                      for r in table], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("involutivity residual (float64)")
    ax.legend(fontsize=8, loc="lower right")
    return ax
