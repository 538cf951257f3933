"""What to log while a classifier trains: the trace of its local data matrix (the paper's soft
rank) and the numerical rank of ``G`` and of ``J = Jac_x log p`` at chosen tolerances.

:func:`trace_hook` builds a hook for :func:`leafkit.train` (``hook=``); its log is cached with the
checkpoints. :func:`numerical_ranks` is the rank count it uses, also useful on its own.

Paper: Section 4 (eq. 4.1, Figure 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .checks import check_batch
from .geometry import local_data_trace_from_jacobian, log_prob_jacobian, numerical_rank
from .models import MnistCNN
from .training import REFERENCE_EPOCHS, TrainResult, steps_for_epochs, train

__all__ = ["RANK_RTOLS", "TRACE_TEST_IMAGES", "default_trace_images", "fixed_images",
           "numerical_ranks", "trace_hook", "trace_run"]

RANK_RTOLS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""Default relative tolerances at which :func:`trace_hook` counts ranks. Smaller ones are not
meaningful in float32: there the C-th singular value of ``J`` (zero in exact arithmetic) reads
about ``1e-8``–``1e-7`` of the first."""


def numerical_ranks(J: Tensor, log_p: Tensor, rtols: Sequence[float] = RANK_RTOLS
                    ) -> tuple[Tensor, Tensor]:
    """Numerical ranks of ``J`` and of ``G = J^T diag(p) J`` per sample, at several tolerances.

    The rank of a matrix at relative tolerance ``r`` is the number of its singular values above
    ``r`` times the largest. For ``J`` these are the singular values ``sigma_k`` of the ``C x n``
    Jacobian; for ``G`` (symmetric PSD) they are its eigenvalues ``lambda_k``, the squared singular
    values of ``diag(sqrt p) J``. Both come from ``C x C`` Gram matrices formed and diagonalized in
    float64 (the ``n x n`` matrix ``G`` is never formed); the float64 Gram resolves singular-value
    ratios down to about ``1e-7``, below which float32 rounding in ``J`` dominates anyway.

    Args:
        J: ``(B, C, n)`` from :func:`leafkit.geometry.log_prob_jacobian`.
        log_p: ``(B, C)``.
        rtols: relative tolerances, each in ``(0, 1)``.

    Returns:
        ``(rank_J, rank_G)``, each of shape ``(B, len(rtols))``, integer counts. By Proposition 2.1
        both are at most ``C - 1`` in exact arithmetic.

    Paper: Proposition 2.1, Section 4 ("the numerical rank is unreliable").
    """
    if J.dim() != 3 or log_p.shape != J.shape[:2]:
        raise ValueError(f"need J of shape (B, C, n) and log_p of shape (B, C), got "
                         f"{tuple(J.shape)} and {tuple(log_p.shape)}")
    if not rtols or any(not 0 < r < 1 for r in rtols):
        raise ValueError(f"rtols must be a non-empty sequence of numbers in (0, 1), got {rtols}")
    Jd = J.detach().double()
    gram = Jd @ Jd.mT  # (B, C, C): sigma_k(J)^2
    sqrt_p = log_p.detach().double().exp().sqrt()
    sigma = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    lam = torch.linalg.eigvalsh(sqrt_p[:, :, None] * gram * sqrt_p[:, None, :]).clamp_min(0)
    return numerical_rank(sigma, rtols), numerical_rank(lam, rtols)


def trace_hook(images: Tensor, labels: Tensor | None = None, *, rank_rtol: float = 1e-3,
               rtols: Sequence[float] = RANK_RTOLS, test: tuple[Tensor, Tensor] | None = None,
               batch_size: int | None = 100) -> Callable[[int, nn.Module], dict]:
    """A :func:`leafkit.train` hook that logs the trace and the numerical rank of ``G`` on fixed
    images.

    At each call it evaluates, over ``images``, ``Tr G = sum_i p_i ||g_i||^2`` (eq. 4.1) from the
    exact Jacobian (``C`` backward passes per chunk of images), and the numerical ranks of ``J`` and
    ``G`` (:func:`numerical_ranks`). With ``labels`` it also logs the loss and accuracy on those
    images (free: ``log p`` is already computed); with ``test`` the accuracy on a test set.

    Args:
        images: ``(N, *input_shape)`` the fixed images (the paper uses 1000 training images).
        labels: ``(N,)`` their labels, or ``None``.
        rank_rtol: the tolerance of the headline ranks ``rank_J`` and ``rank_G``; it is added to
            ``rtols`` if missing.
        rtols: tolerances of the rank profiles ``rank_J_by_rtol`` and ``rank_G_by_rtol``.
        test: ``(test_x, test_y)`` for the test accuracy, or ``None``.
        batch_size: images per Jacobian evaluation and per forward pass of the test images (bounds
            memory; on a CPU larger forward passes run slower per image: MnistCNN, one thread,
            0.42 ms at 100, 0.85 ms at 1000); ``None``: all at once.

    Returns:
        ``hook(step, model) -> dict`` with the floats ``trace_mean``, ``trace_median``,
        ``rank_J``, ``rank_G`` (mean over images at ``rank_rtol``), the lists ``rtols``,
        ``rank_J_by_rtol``, ``rank_G_by_rtol`` (means over images), and, when asked for,
        ``train_loss``, ``train_accuracy``, ``test_accuracy``.

    Paper: eq. (4.1), Section 4 and Figure 2 (1000 fixed images, every 100 steps).
    """
    check_batch(images, "images")
    if labels is not None and labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    rtols = tuple(sorted({float(r) for r in (*rtols, rank_rtol)}, reverse=True))
    head = rtols.index(float(rank_rtol))

    def hook(step: int, model: nn.Module) -> dict:
        dev = next(model.parameters()).device
        traces, ranks_J, ranks_G, log_ps = [], [], [], []
        for chunk in images.split(batch_size or len(images)):
            J, log_p = log_prob_jacobian(model, chunk.to(dev))
            traces.append(local_data_trace_from_jacobian(J, log_p))
            rank_J, rank_G = numerical_ranks(J, log_p, rtols)
            ranks_J.append(rank_J)
            ranks_G.append(rank_G)
            log_ps.append(log_p)
        trace = torch.cat(traces)
        rank_J = torch.cat(ranks_J).double().mean(0)
        rank_G = torch.cat(ranks_G).double().mean(0)
        record = {"trace_mean": trace.mean().item(), "trace_median": trace.median().item(),
                  "rank_J": rank_J[head].item(), "rank_G": rank_G[head].item(),
                  "rtols": list(rtols), "rank_J_by_rtol": rank_J.tolist(),
                  "rank_G_by_rtol": rank_G.tolist()}
        if labels is not None:
            log_p = torch.cat(log_ps).cpu()
            record["train_loss"] = -log_p.gather(1, labels[:, None].cpu()).mean().item()
            record["train_accuracy"] = (log_p.argmax(1) == labels.cpu()).double().mean().item()
        if test is not None:
            with torch.no_grad():
                pred = torch.cat([model(x.to(dev)).argmax(1).cpu()
                                  for x in test[0].split(batch_size or len(test[0]))])
            record["test_accuracy"] = (pred == test[1].cpu()).double().mean().item()
        return record

    return hook


def fixed_images(n_total: int, n_images: int, seed: int = 0) -> Tensor:
    """``n_images`` distinct indices out of ``n_total``, drawn by a seeded permutation (the offline
    training set is sorted by class, so its first images would all be zeros and ones)."""
    if not 0 < n_images <= n_total:
        raise ValueError(f"need 0 < n_images <= {n_total}, got {n_images}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n_images]


#: Test images of :func:`trace_run`'s logged test accuracy: all 1000 of the offline subset, 2000
#: fixed ones of full MNIST's 10000 (all of them would double the cost of each evaluation:
#: measured 18 s against 9 s for the trace alone on 2 CPU cores).
TRACE_TEST_IMAGES = 2000


def default_trace_images(data) -> int:
    """How many fixed images :func:`trace_run` averages over by default: the paper's 1000 on full
    MNIST (and its rehearsal stand-in), 500 on the offline subset (where 1000 would nearly double
    the cost of the whole run)."""
    return 1000 if data.full_size else 500


def trace_run(data, *, epochs: float = 30, n_images: int | None = None, every: int = 100,
              rank_rtol: float = 1e-3, seed: int = 0, device: torch.device | str | None = None,
              progress: bool = True) -> TrainResult:
    """Train the paper's CNN as :func:`leafkit.reference_run` does (same seed, same batches, so the
    weights at the reference step are the reference checkpoint's) for ``epochs`` epochs, logging
    :func:`trace_hook` every ``every`` steps on fixed training images, with the test accuracy on
    :data:`TRACE_TEST_IMAGES` fixed test images at most; cached like any run.

    Args:
        data: an :class:`~leafkit.data.MNISTData`.
        epochs: how long to train (the paper: 30 epochs of full MNIST, 30000 steps).
        n_images: how many fixed training images the trace is averaged over; ``None``:
            :func:`default_trace_images` (each evaluation takes ``C = 10`` backward passes per
            image).
        every: log every that many SGD steps (the paper: 100).
        rank_rtol: tolerance of the logged headline ranks.
        seed: seed of the training run and of the choice of images.

    Returns:
        TrainResult with checkpoints at the reference step (epoch 10) and at the end, and the log
        (one dict per logged step, see :func:`trace_hook`).

    Paper: Section 4 and Figure 2.
    """
    if n_images is None:
        n_images = default_trace_images(data)
    pick = fixed_images(len(data.train_x), n_images, seed)
    n_test = min(len(data.test_x), TRACE_TEST_IMAGES)
    test_pick = (slice(None) if n_test == len(data.test_x)
                 else fixed_images(len(data.test_x), n_test, seed))
    hook = trace_hook(data.train_x[pick], data.train_y[pick], rank_rtol=rank_rtol,
                      test=(data.test_x[test_pick], data.test_y[test_pick]))
    n = len(data.train_x)
    key = (f"leafkit.monitoring.trace_hook(n_images={n_images}, pick_seed={seed}, "
           f"rank_rtol={rank_rtol}, rtols={RANK_RTOLS}, "
           f"test={'all' if n_test == len(data.test_x) else n_test})")
    return train(MnistCNN().config, data.train_x, data.train_y,
                 steps=steps_for_epochs(epochs, n), seed=seed,
                 checkpoint_steps=(steps_for_epochs(REFERENCE_EPOCHS, n),), hook=hook,
                 hook_every=every, hook_key=key, device=device, progress=progress)
