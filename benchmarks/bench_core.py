"""Speed of leafkit's core against a naive reference that follows the authors' published method.

Run ``python benchmarks/bench_core.py`` (a few minutes on 2 CPU cores) or ``--quick`` (a smoke run
of a few seconds); ``--device cuda`` times on a GPU. It prints tables and asserts nothing: ratios
measured in the same run are what count, since absolute numbers move with the machine's load.

Model: the paper's ``MnistCNN`` at its random initialisation (seed 0), float32, eval mode; speed
does not depend on the weights. Inputs: MNIST test images (the offline subset when full MNIST is
absent), random pairs of them as sources and targets.

Naive reference (what the authors' code does, one path at a time): per sample
``torch.autograd.functional.jacobian`` of ``log_softmax(model(x))``, the gradients normalized as
columns, ``torch.linalg.lstsq`` onto them, a normalized step; for the trace, the dense
``G = J^T diag(p) J`` (784 x 784) per image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from leafkit import MnistCNN, load_mnist
from leafkit.geometry import local_data_trace, log_prob_jacobian
from leafkit.jacobian import BATCHED_BACKWARD_BYTES, CPU_JACOBIAN_CHUNK
from leafkit.paths import horizontal_path
from leafkit.projection import project_tangent, tangent_basis

STEP_SIZE = 0.1
BATCHES = (1, 8, 32, 128)


def timed(fns: dict[str, Callable[[], object]], repeats: int,
          device: torch.device) -> dict[str, float]:
    """Median wall time of each function over ``repeats`` rounds, after one warm-up round.

    The functions take turns within each round, so a change in the machine's load (other jobs
    share these cores) hits all of them alike and their ratios stay meaningful.
    """
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-add FLOPs (2 per MAC) of the conv and linear layers for one sample, analytically."""
    total = 0

    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * k * out[0].numel()
        else:
            total += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return total


# ---- the naive reference -------------------------------------------------------------------

def naive_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(C, n)` Jacobian of ``log p`` and `(C,)` ``log p`` for one image `(1, 28, 28)`."""
    def log_p(z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(model(z[None]), dim=-1)[0]

    J = torch.autograd.functional.jacobian(log_p, x)
    with torch.no_grad():
        lp = log_p(x)
    return J.reshape(J.shape[0], -1), lp


def naive_paths(model: nn.Module, source: torch.Tensor, target: torch.Tensor, steps: int,
                tol: float = 1.0) -> torch.Tensor:
    """The authors' method, one path after the other: lstsq onto the normalized gradients."""
    finals = []
    for s, d in zip(source, target):
        x = s.clone()
        for _ in range(steps):
            if (d - x).norm() <= tol:
                break
            J, _ = naive_jacobian(model, x)
            A = J.T / J.norm(dim=1)  # (n, C) normalized gradient columns
            coef = torch.linalg.lstsq(A, (d - x).reshape(-1, 1)).solution
            v = (A @ coef).view_as(x)
            x = x + STEP_SIZE * v / v.norm()
        finals.append(x)
    return torch.stack(finals)


def naive_trace(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``Tr G`` per image from the dense ``n x n`` matrix ``G = J^T diag(p) J``."""
    traces = []
    for x in images:
        J, lp = naive_jacobian(model, x)
        G = J.T @ (lp.exp()[:, None] * J)
        traces.append(torch.trace(G))
    return torch.stack(traces)


# ---- alternatives measured side by side ----------------------------------------------------

def vmap_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, n)` Jacobian of ``log p`` by ``torch.func.vmap(jacrev)``."""
    def log_p(xb: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(model(xb[None]), dim=-1)[0]

    return torch.func.vmap(torch.func.jacrev(log_p))(x).flatten(2)


def naive_c_passes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, n)` Jacobian of ``log p`` by one backward pass per class over the whole batch."""
    xg = x.detach().requires_grad_()
    lp = F.log_softmax(model(xg), dim=-1)
    rows = [torch.autograd.grad(lp[:, k].sum(), xg, retain_graph=True)[0]
            for k in range(lp.shape[1])]
    return torch.stack(rows, 1).flatten(2)


def batched_grads_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, n)` Jacobian of ``log p`` by one ``autograd.grad(..., is_grads_batched=True)``."""
    xg = x.detach().requires_grad_()
    lp = F.log_softmax(model(xg), dim=-1)
    C = lp.shape[1]
    eye = torch.eye(C, dtype=x.dtype, device=x.device)[:, None, :].expand(C, x.shape[0], C)
    (J,) = torch.autograd.grad(lp, xg, eye, is_grads_batched=True)
    return J.transpose(0, 1).flatten(2)


def lstsq_projection(J: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Batched least squares onto the normalized gradient columns (the naive projection)."""
    A = J.mT / J.norm(dim=2)[:, None, :]
    return (A @ torch.linalg.lstsq(A, d[..., None]).solution)[..., 0]


def authors_projection(J: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """QR of all C normalized gradient columns, ``Q Q^T d`` (``projection="authors"``)."""
    Q = torch.linalg.qr(J.mT / J.norm(dim=2)[:, None, :]).Q
    return project_tangent(J, d, basis=Q)


# ---- the run -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice for this machine); "
                             "1 avoids thread contention on a machine crowded with other jobs")
    parser.add_argument("--compile", action="store_true",
                        help="also time the Jacobian step with torch.compile(model) at B = 8 "
                             "(its first call compiles, tens of seconds; needs a C compiler)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 1 if args.quick else 3
    path_steps = 16 if args.quick else 512  # path-steps per timing (B x steps)
    n_trace = 32 if args.quick else 1000
    big = 8 if args.quick else 128
    n_many = 80 if args.quick else 500  # the trace hook's and the beyond chapter's batches

    torch.manual_seed(0)
    model = MnistCNN().to(device).eval()
    data = load_mnist(verbose=False)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.test_x), generator=gen)
    images = data.test_x[order].to(device)
    source, target = images[:128], images[128:256]
    n, C = images[0].numel(), 10
    k = C - 1

    print(f"leafkit core benchmark: MnistCNN (random init, float32), device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
          f"{'quick' if args.quick else 'default'} run, median of {repeats} rounds after a "
          "warm-up round, contenders interleaved within each round")
    print(f"data: {data.description.split(';')[0]}")

    a = torch.randn(2048, 2048, device=device)
    t_mm = timed({"mm": lambda: a @ a}, 2 if args.quick else 5, device)["mm"]
    gflops_mm = 2 * 2048**3 / t_mm / 1e9
    print(f"\nmatmul 2048x2048 float32: {t_mm * 1e3:.1f} ms = {gflops_mm:.1f} GFLOP/s")

    fwd = forward_flops(model, images)
    step_2x = C * 2 * fwd + fwd + 2 * n * k**2 + 4 * n * k
    step_1x = C * fwd + fwd + 2 * n * k**2 + 4 * n * k
    print(f"FLOPs per path-step: forward F = {fwd / 1e6:.2f} MFLOP (conv/linear MACs x 2); "
          f"C x backward + forward + QR (2 n k^2) + projection (4 n k), n = {n}, k = {k}:\n"
          f"  backward = 2F (brief's convention)          -> {step_2x / 1e6:.1f} MFLOP\n"
          f"  backward = F (input gradients only, what autograd runs here) -> "
          f"{step_1x / 1e6:.1f} MFLOP")

    print("\nhorizontal path-steps per second (Algorithm 4.1, exact projection)")
    print(f"{'B':>5} {'steps':>6} {'leafkit/s':>10} {'naive/s':>9} {'ratio':>6} "
          f"{'GFLOP/s (2F)':>13} {'GFLOP/s (F)':>12} {'% matmul (F)':>13}")
    for B in BATCHES if not args.quick else (1, 8):
        steps = max(4, path_steps // B)
        src, tgt = source[:B], target[:B]
        t = timed({"leafkit": lambda: horizontal_path(model, src, tgt, max_steps=steps,
                                                      tol=None, progress=False),
                   "naive": lambda: naive_paths(model, src, tgt, steps, tol=0.0)},
                  repeats, device)
        t_lk, t_nv = t["leafkit"], t["naive"]
        rate_lk, rate_nv = B * steps / t_lk, B * steps / t_nv
        print(f"{B:>5} {steps:>6} {rate_lk:>10.0f} {rate_nv:>9.0f} {rate_lk / rate_nv:>5.2f}x "
              f"{rate_lk * step_2x / 1e9:>13.1f} {rate_lk * step_1x / 1e9:>12.1f} "
              f"{100 * rate_lk * step_1x / 1e9 / gflops_mm:>12.0f}%")

    print(f"\ntrace of G over {n_trace} images (eq. 4.1)")
    x = images[:n_trace]
    tr_lk = local_data_trace(model, x, batch_size=200)
    tr_nv = naive_trace(model, x)
    t = timed({"leafkit": lambda: local_data_trace(model, x, batch_size=200),
               "naive": lambda: naive_trace(model, x)}, repeats, device)
    t_lk, t_nv = t["leafkit"], t["naive"]
    rel = float(((tr_lk - tr_nv).abs() / tr_nv.abs()).max())
    print(f"  leafkit local_data_trace (factored, batches of 200): {t_lk:8.3f} s")
    print(f"  naive (per image jacobian + dense 784x784 G):      {t_nv:8.3f} s")
    print(f"  ratio {t_nv / t_lk:.2f}x; largest relative difference of the traces {rel:.1e}")

    # leafkit takes one vmapped pass when B x bytes <= BATCHED_BACKWARD_BYTES, else C passes
    for size in dict.fromkeys((8, big)):
        xs = images[:size]
        route = ("one vmapped pass" if size * xs.element_size() <= BATCHED_BACKWARD_BYTES
                 else "C passes")
        print(f"\nJacobian strategies, B = {size} (seconds per call)")
        strategies = {
            f"leafkit log_prob_jacobian ({route})": lambda: log_prob_jacobian(model, xs),
            "C backward passes over the batch": lambda: naive_c_passes(model, xs),
            "autograd.grad is_grads_batched": lambda: batched_grads_jacobian(model, xs),
            "torch.func vmap(jacrev)": lambda: vmap_jacobian(model, xs),
        }
        for name, seconds in timed(strategies, repeats, device).items():
            print(f"  {name:<44} {seconds:8.4f}")
    xb = images[:big]

    many = images[:n_many]
    chunked = (f"in chunks of at most {CPU_JACOBIAN_CHUNK}"
               if device.type == "cpu" and n_many > CPU_JACOBIAN_CHUNK else "whole")
    print(f"\nJacobian of {n_many} images in one call (seconds per call)")
    t = timed({f"leafkit log_prob_jacobian ({chunked})": lambda: log_prob_jacobian(model, many),
               "C backward passes over the whole batch": lambda: naive_c_passes(model, many)},
              repeats, device)
    for name, seconds in t.items():
        print(f"  {name:<44} {seconds:8.4f}")

    if args.compile:  # the chapters' batches are small: Figure 6 walks 8 paths at once
        small = images[:8]
        compiled = torch.compile(model)
        start = time.perf_counter()
        log_prob_jacobian(compiled, small)
        first = time.perf_counter() - start
        t = timed({"eager": lambda: log_prob_jacobian(model, small),
                   "compiled": lambda: log_prob_jacobian(compiled, small)}, repeats, device)
        print(f"\ntorch.compile of the model, Jacobian step at B = 8 (seconds per call)\n"
              f"  eager {t['eager']:.4f}, compiled {t['compiled']:.4f}: "
              f"{t['eager'] / t['compiled']:.2f}x; the first compiled call took {first:.1f} s")

    print(f"\nprojection of d - x, B = {big}, J given (seconds per call)")
    J, log_p = log_prob_jacobian(model, xb)
    d = (target[:big] - xb).flatten(1)
    projections = {
        "tangent_basis qr (exact, rank C-1)": lambda: project_tangent(
            J, d, basis=tangent_basis(J, log_p, method="qr")),
        "tangent_basis svd (exact, rank cut-off)": lambda: project_tangent(
            J, d, basis=tangent_basis(J, log_p, method="svd")),
        "qr of all C normalized columns (authors)": lambda: authors_projection(J, d),
        "lstsq onto normalized columns (naive)": lambda: lstsq_projection(J, d),
    }
    for name, seconds in timed(projections, 5 * repeats, device).items():
        print(f"  {name:<44} {seconds:8.5f}")


if __name__ == "__main__":
    main()
