"""Out-of-distribution scores from one Jacobian, ROC AUC with a seeded bootstrap, and noise sets.

Every score of a batch comes from one pass of :func:`leafkit.geometry.score_jacobian` (the ``C``
backward passes that give ``Jac_x s`` and ``s``):

* ``trace``: ``Tr G = sum_i p_i ||g_i||^2``, eq. (4.1), the soft rank of the local data matrix.
  Tron et al. report it lower on data than on noise for trained networks, so a *high* trace
  counts as out of distribution.
* ``max_softmax``: ``max_i p_i``, the baseline of Hendrycks and Gimpel (2017); *low* is out.
* ``energy``: ``logsumexp_i s_i`` (minus the free energy of Liu et al., 2020, at temperature 1);
  *low* is out.
* ``leaf_margin``: the first-order distance, moving inside the leaf, to the nearest decision
  boundary: ``min_{j != c} (log p_c - log p_j) / ||g_c - g_j||`` with ``c`` the predicted class.
  ``g_c - g_j = grad_x (s_c - s_j)`` lies in ``D_x`` (eq. 3.3), so this is how far a point moves
  along its leaf, to first order, before the prediction changes; *low* is out.

:func:`roc_auc` uses scikit-learn's ``roc_auc_score``; the bootstrap counts the same
Mann-Whitney statistic for all resamples at once (sorted resamples and ``searchsorted``), tested
against scikit-learn.

Paper: eq. (2.5), (3.3), (4.1); beyond the paper (its conclusion, and Tron et al.).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from .checks import check_batch
from .data import pixel_bounds
from .geometry import _trace, log_prob_jacobian_from_scores, score_jacobian
from .tables import Table

__all__ = ["NOISE_KINDS", "SCORES", "OODScores", "auc_table", "bootstrap_auc", "energy_score",
           "leaf_margin", "max_softmax", "noise_images", "ood_scores", "roc_auc"]

#: score name -> +1 when a high value means "out of distribution", -1 when a low value does.
SCORES: dict[str, int] = {"trace": 1, "max_softmax": -1, "energy": -1, "leaf_margin": -1}
NOISE_KINDS = ("gaussian", "uniform")


@dataclass
class OODScores:
    """Per-sample scores of one batch, on the CPU; see the module docstring for each.

    Attributes:
        trace: `(B,)` ``Tr G``, eq. (4.1).
        max_softmax: `(B,)` ``max_i p_i``.
        energy: `(B,)` ``logsumexp_i s_i``.
        leaf_margin: `(B,)` first-order distance along ``D_x`` to the nearest decision boundary.
        predicted: `(B,)` the predicted class.
    """

    trace: Tensor
    max_softmax: Tensor
    energy: Tensor
    leaf_margin: Tensor
    predicted: Tensor

    def __len__(self) -> int:
        return len(self.trace)

    def oodness(self, name: str) -> Tensor:
        """Score ``name`` oriented so that a higher value means "more out of distribution"
        (``log10 Tr G`` for the trace, minus the others), the orientation fixed in advance."""
        if name not in SCORES:
            raise ValueError(f"unknown score {name!r}; choose one of {tuple(SCORES)}")
        value = getattr(self, name).double()
        if name == "trace":
            value = value.clamp_min(1e-300).log10()
        return SCORES[name] * value

    @staticmethod
    def cat(parts: list[OODScores]) -> OODScores:
        """Scores of several batches, concatenated."""
        return OODScores(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                            for f in fields(OODScores)})


def max_softmax(s: Tensor) -> Tensor:
    """``max_i softmax(s)_i`` per row of scores ``s`` `(B, C)` (Hendrycks and Gimpel, 2017)."""
    _check_scores(s)
    return s.softmax(1).amax(1)


def energy_score(s: Tensor, temperature: float = 1.0) -> Tensor:
    """``T logsumexp(s / T)`` per row of raw scores ``s`` `(B, C)`: minus the free energy
    ``E(x) = -T logsumexp(s / T)`` of Liu et al. (2020). Meaningless for log-probabilities
    (their ``logsumexp`` is 0), so pass raw scores."""
    _check_scores(s)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return temperature * torch.logsumexp(s / temperature, dim=1)


def leaf_margin(J: Tensor, log_p: Tensor) -> Tensor:
    """``min_{j != c} (log p_c - log p_j) / ||g_c - g_j||``, ``c = argmax p``, per sample.

    The linearized distance to the nearest decision boundary ``s_c = s_j``; its gradients
    ``g_c - g_j`` lie in ``D_x``, so this distance is travelled inside the leaf. A zero
    ``g_c - g_j`` gives ``inf`` (no boundary in reach to first order).

    Args:
        J: `(B, C, n)` from :func:`leafkit.geometry.log_prob_jacobian`.
        log_p: `(B, C)`.

    Returns:
        `(B,)` distances (``>= 0``).

    Paper: eq. (3.3) (``D_x``), beyond the paper.
    """
    if J.dim() != 3 or log_p.shape != J.shape[:2]:
        raise ValueError(f"J must be (B, C, n) and log_p (B, C), got {tuple(J.shape)} and "
                         f"{tuple(log_p.shape)}")
    B = J.shape[0]
    c = log_p.argmax(1)
    rows = torch.arange(B, device=J.device)
    gap = log_p[rows, c, None] - log_p  # (B, C) >= 0
    norm = (J[rows, c, None] - J).norm(dim=-1)  # (B, C)
    d = torch.where(norm > 0, gap / norm.clamp_min(torch.finfo(J.dtype).tiny),
                    torch.full_like(gap, float("inf")))
    d[rows, c] = float("inf")
    return d.amin(1)


def ood_scores(model: nn.Module, x: Tensor, *, batch_size: int = 250) -> OODScores:
    """All the scores of :class:`OODScores` for a batch, from one score Jacobian per chunk.

    Args:
        model: a classifier returning raw scores `(B, C)` (not log-probabilities).
        x: inputs `(B, *input_shape)`.
        batch_size: chunk size (bounds memory: ``C * n`` floats per sample).

    Returns:
        OODScores on the CPU.

    Paper: eq. (4.1) (``Tr G``).
    """
    check_batch(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parts = []
    for chunk in x.split(batch_size):
        Js, s = score_jacobian(model, chunk)
        J, log_p = log_prob_jacobian_from_scores(Js, s)
        trace = _trace(J, log_p)
        parts.append(OODScores(trace=trace.cpu(), max_softmax=max_softmax(s).cpu(),
                               energy=energy_score(s).cpu(), leaf_margin=leaf_margin(J, log_p).cpu(),
                               predicted=log_p.argmax(1).cpu()))
    return OODScores.cat(parts)


def roc_auc(in_scores: Tensor, out_scores: Tensor) -> float:
    """ROC AUC of telling ``out_scores`` (positives) from ``in_scores`` by thresholding, higher
    meaning out: ``P(out > in) + P(out = in) / 2``, by ``sklearn.metrics.roc_auc_score``.

    Raises:
        ValueError: an empty or non-finite set, or not 1-D.
    """
    from sklearn.metrics import roc_auc_score

    a, b = _check_sets(in_scores, out_scores)
    labels = torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).numpy()
    return float(roc_auc_score(labels, torch.cat([a, b]).numpy()))


def _auc_many(a: Tensor, b: Tensor) -> Tensor:
    """Mann-Whitney AUC for each row: ``a`` `(R, n0)` in, ``b`` `(R, n1)` out -> `(R,)`."""
    a = a.sort(1).values.contiguous()
    b = b.contiguous()
    below = torch.searchsorted(a, b, side="left")
    upto = torch.searchsorted(a, b, side="right")
    return (below + upto).double().sum(1) / (2.0 * a.shape[1] * b.shape[1])


def bootstrap_auc(in_scores: Tensor, out_scores: Tensor, *, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The ROC AUC (:func:`roc_auc`) and a percentile bootstrap interval.

    Each of the ``n_boot`` resamples draws ``len(in)`` in-scores and ``len(out)`` out-scores with
    replacement (the two sets resampled separately), from a ``torch.Generator`` seeded with
    ``seed``; all resamples are counted at once.

    Returns:
        ``(auc, low, high)``, ``low``/``high`` the ``(1 -+ level) / 2`` quantiles.

    Raises:
        ValueError: bad sets (see :func:`roc_auc`), ``n_boot < 1`` or ``level`` not in (0, 1).
    """
    a, b = _check_sets(in_scores, out_scores)
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    gen = torch.Generator().manual_seed(seed)
    ia = torch.randint(len(a), (n_boot, len(a)), generator=gen)
    ib = torch.randint(len(b), (n_boot, len(b)), generator=gen)
    aucs = _auc_many(a[ia], b[ib])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(aucs, q).tolist()
    return roc_auc(a, b), low, high


def auc_table(reference: OODScores, others: Mapping[str, OODScores], *,
              scores: tuple[str, ...] = tuple(SCORES), n_boot: int = 1000,
              seed: int = 0) -> Table:
    """ROC AUC of every score for ``reference`` (in distribution) against each set of ``others``.

    Returns:
        A :class:`~leafkit.tables.Table`, one row a set: ``set``, ``n`` (its size) and, per
        score, ``(auc, low, high)`` shown as ``0.97 [0.95, 0.98]``; ``best``: the score with
        the highest AUC (a point estimate: look at the intervals before calling it a win).
    """
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown scores {unknown}; choose from {tuple(SCORES)}")
    rows = []
    for name, other in others.items():
        row = {"set": name, "n": len(other)}
        for k, score in enumerate(scores):
            row[score] = bootstrap_auc(reference.oodness(score), other.oodness(score),
                                       n_boot=n_boot, seed=seed + k)
        row["best"] = max(scores, key=lambda name: row[name][0])
        rows.append(row)

    def show(v):
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    return Table(rows, columns=["set", "n", *scores, "best"], formats={s: show for s in scores})


def noise_images(kind: str, n: int, shape: tuple[int, ...] = (1, 28, 28), *, seed: int = 0,
                 bounds: tuple[float, float] | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """``n`` noise images in the pixel box, drawn on the CPU from a seeded generator.

    ``"gaussian"``: standard normal in normalized units (the data's mean and spread per pixel),
    clamped to the box; ``"uniform"``: uniform in the box.

    Args:
        kind: ``"gaussian"`` or ``"uniform"``.
        n: how many.
        shape: the shape of one image.
        seed: generator seed.
        bounds: ``(lo, hi)``; default :func:`leafkit.data.pixel_bounds`.
        device: where the result goes (default CPU).

    Returns:
        `(n, *shape)` float32.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    lo, hi = pixel_bounds() if bounds is None else bounds
    if not lo < hi:
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds!r}")
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        x = torch.randn((n, *shape), generator=gen).clamp(lo, hi)
    else:
        x = lo + (hi - lo) * torch.rand((n, *shape), generator=gen)
    return x.to(device) if device is not None else x


def _check_scores(s: Tensor) -> None:
    if not isinstance(s, Tensor) or s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must be a tensor (B, C) with C >= 2, got "
                         f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")


def _check_sets(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    out = []
    for name, t in (("in_scores", a), ("out_scores", b)):
        t = torch.as_tensor(t).detach().cpu().double()
        if t.dim() != 1 or len(t) == 0:
            raise ValueError(f"{name} must be a non-empty 1-D set of scores, got shape "
                             f"{tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or inf values")
        out.append(t)
    return out[0], out[1]
