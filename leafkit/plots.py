"""Line and scatter plots of the chapters (matplotlib): spectra and ranks of ``G``, the KL checks,
the plane fields and the involutivity survey (Sections 2-3), the trace of ``G`` through training
(Figure 2), walks across leaves (Figure 3) and distances along horizontal paths (Figures 4-6).

Image plots (digits, path strips, frames) are in :mod:`leafkit.viz`. Every function draws on a
new figure (or the axis it is given) and returns it.

Paper: Proposition 2.1, eq. (3.1)-(3.2), Section 3, Theorem 3.1, Figures 2-6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from .planes import PLANE_FIELDS, PlaneField, circle
from .tables import Table

__all__ = ["plot_involutivity_survey", "plot_kl_check", "plot_path_distances", "plot_plane_fields",
           "plot_rank_vs_tolerance", "plot_spectra", "plot_trace_curve", "plot_walk"]


# --------------------------------------------------------------------------- Sections 2-3

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
        ranks: label -> ``(B, T)`` ranks from :func:`leafkit.geometry.numerical_rank`.
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


def plot_kl_check(eps: Tensor, curves: Mapping[str, tuple[Tensor, Tensor]], *,
                  what: str = "\\epsilon^2 v^T G v"):
    """Two panels: KL against its quadratic term on log-log axes (with the lines ``KL = q`` and
    ``KL = q / 2``), and the ratio ``KL / q`` against ``e``.

    Args:
        eps: ``(E,)`` step lengths.
        curves: label -> ``(kl, quad)`` from :func:`leafkit.expansions.kl_second_order` or
            :func:`leafkit.expansions.parameter_kl_second_order`, each ``(B, E)``; every sample is one line.
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

def plot_involutivity_survey(table: Table, *, floor: float = 1e-17, ax=None):
    """Every per-point residual of :func:`leafkit.survey.involutivity_survey`, one row per network, on a log
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


# --------------------------------------------------------------------------- Figures 2-6

def plot_trace_curve(log: Sequence[dict], steps_per_epoch: float, *,
                     reference_step: int | None = None, rank_key: str = "rank_G_by_rtol"):
    """Figure 2: the trace of ``G`` through training, with the numerical rank and the accuracy.

    Three panels against the SGD step: (a) the mean and the median of ``Tr G`` over the fixed
    images, log scale; (b) the mean numerical rank at each logged tolerance; (c) the accuracy on
    the logged images and on the test set, where logged. Epochs are marked on a top axis of (a)
    and the reference checkpoint by a dashed line in every panel.

    Args:
        log: ``TrainResult.log`` of :func:`leafkit.monitoring.trace_run` (dicts with ``step``,
            ``trace_mean``, ``trace_median``, ``rtols``, ``rank_J_by_rtol``, ``rank_G_by_rtol`` and
            optionally ``train_accuracy``, ``test_accuracy``).
        steps_per_epoch: SGD steps per epoch (for the epoch axis).
        reference_step: the step of the reference checkpoint, or ``None``.
        rank_key: ``"rank_G_by_rtol"`` or ``"rank_J_by_rtol"``, the rank shown in (b).

    Returns:
        The matplotlib figure.

    Paper: Figure 2.
    """
    steps = [r["step"] for r in log]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.semilogy(steps, [r["trace_mean"] for r in log], "o-", ms=3, label="mean")
    ax.semilogy(steps, [r["trace_median"] for r in log], "s-", ms=3, label="median")
    ax.set_ylabel(r"Tr $G$ over the fixed images")
    ax.set_title("(a) trace of G (soft rank)")
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                               lambda e: e * steps_per_epoch))
    top.set_xlabel("epoch")
    ax = axes[1]
    rtols = log[0]["rtols"]
    for i, r in enumerate(rtols):
        ax.plot(steps, [rec[rank_key][i] for rec in log], label=f"tol {r:.0e}")
    ax.set_ylabel("mean numerical rank")
    ax.set_title(f"(b) rank of {'G' if rank_key == 'rank_G_by_rtol' else 'J'} by tolerance")
    ax = axes[2]
    for key, label in (("train_accuracy", "fixed training images"), ("test_accuracy", "test set")):
        if key in log[0]:
            ax.plot(steps, [r[key] for r in log], label=label)
    ax.set_ylabel("accuracy")
    ax.set_title("(c) accuracy")
    for ax in axes:
        ax.set_xlabel("SGD step")
        if reference_step is not None:
            ax.axvline(reference_step, color="gray", ls="--", lw=1)
        ax.legend(fontsize=7)
    axes[0].legend(fontsize=7, title="reference: dashed" if reference_step is not None else None,
                   title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_walk(steps: Sequence[int] | torch.Tensor,
              curves: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
              labels: Sequence[str] | None = None):
    """Distance from the start and probability of the starting class along walks (Figure 3).

    Args:
        steps: ``(K,)`` the steps at which the curves are given.
        curves: ``{name: (distance, prob)}`` with ``distance`` and ``prob`` of shape ``(B, K)``,
            one entry per kind of walk (e.g. across leaves, and an unprojected control); each is
            drawn solid for the first kind, dashed for the second, and so on.
        labels: one label per path ``b`` (e.g. the starting digit).

    Returns:
        The matplotlib figure with two panels: distance (left) and probability (right).
    """
    steps = torch.as_tensor(steps).numpy()
    fig, (ax_d, ax_p) = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, (dist, prob)), style in zip(curves.items(), styles):
        for b in range(dist.shape[0]):
            label = f"{name}, {labels[b]}" if labels is not None else f"{name}, path {b}"
            color = colors[b % len(colors)]
            ax_d.plot(steps, torch.as_tensor(dist[b]).numpy(), style, color=color, label=label)
            ax_p.plot(steps, torch.as_tensor(prob[b]).numpy(), style, color=color, label=label)
    ax_d.set_xlabel("step")
    ax_d.set_ylabel(r"$\|x_t - x_0\|$")
    ax_d.set_title("distance from the start")
    ax_p.set_xlabel("step")
    ax_p.set_ylabel("p(starting class)")
    ax_p.set_ylim(0, 1.02)
    ax_p.set_title("probability of the starting class")
    ax_d.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_path_distances(result, labels: Sequence[str], projections: Sequence[str], *,
                        tol: float | None = 1.0):
    """Distance to the target and the model's confidence along horizontal paths.

    Left: ``||target - x_t||`` at every step. Right: the probability of the predicted class at
    the recorded points, with a dot where the predicted class changes (annotated with the new
    class). One color per pair (``labels``), one line style per projection (``projections``).

    Args:
        result: a horizontal :class:`~leafkit.paths.PathResult` of ``B`` paths.
        labels: `(B,)` the pair of each path, e.g. ``"0 -> 1"`` (paths with the same label share
            a color).
        projections: `(B,)` the projection of each path.
        tol: the arrival radius, drawn as a dotted line (``None``: not drawn).

    Returns:
        The matplotlib figure.

    Paper: Algorithm 4.1; Figures 4-6.
    """
    pairs = list(dict.fromkeys(labels))
    kinds = list(dict.fromkeys(projections))
    styles = ["-", "--", ":", "-."]
    fig, (ax_d, ax_p) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = result.record_steps.numpy()
    top, pred = result.probs.max(-1)
    top = top.numpy()
    for b, (label, kind) in enumerate(zip(labels, projections)):
        color = f"C{pairs.index(label) % 10}"
        style = styles[kinds.index(kind) % len(styles)]
        d = result.distance[b, : int(result.steps_taken[b]) + 1].numpy()
        ax_d.plot(d, style, color=color, label=f"{label}, {kind}")
        ax_p.plot(steps, top[b], style, color=color)
        change = ((pred[b, 1:] != pred[b, :-1]).nonzero().flatten() + 1).numpy()
        ax_p.plot(steps[change], top[b, change], "o", color=color, ms=4)
        for k in change.tolist():
            ax_p.annotate(str(int(pred[b, k])), (float(steps[k]), float(top[b, k])), fontsize=7,
                          xytext=(2, 2), textcoords="offset points")
    if tol is not None:
        ax_d.axhline(tol, color="gray", ls=":", lw=1)
    ax_d.set_xlabel("step")
    ax_d.set_ylabel(r"$\|x_{target} - x_t\|$")
    ax_d.set_title("distance to the target")
    ax_d.set_ylim(bottom=0)
    ax_d.legend(fontsize=7)
    ax_p.set_xscale("symlog", linthresh=100)  # class changes come early: stretch the start
    ax_p.set_xlabel("step (linear to 100, then log)")
    ax_p.set_ylabel("probability of the predicted class")
    ax_p.set_title("confidence; dots: the predicted class changes")
    ax_p.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig
