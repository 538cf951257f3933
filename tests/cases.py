"""The case table of the unit tests: small models x dtypes x devices (CUDA when present), and the
one comparison helper the tests use, which names the worst entries when two tensors differ."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from leafkit import MLP, MnistCNN


def _normed_mlp() -> nn.Module:
    """An MLP with BatchNorm and Dropout, whose running statistics are not the initial ones."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Dropout(0.5), nn.Linear(16, 5))
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 12) * 2 + 1)  # train mode: moves the running statistics
    return net.eval()


#: name -> (a fresh model, the input shape of one sample)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "linear": (lambda: nn.Linear(6, 4), (6,)),
    "mlp_relu": (lambda: MLP(12, hidden=(16, 16), num_classes=5), (12,)),
    "mlp_tanh": (lambda: MLP(12, hidden=(16,), num_classes=5, activation_name="tanh"), (3, 4)),
    "cnn": (lambda: MnistCNN(channels=(4, 8), hidden=32), (1, 28, 28)),
    "mlp_batchnorm": (_normed_mlp, (12,)),
}
#: The front matter of a MyST-Markdown notebook chapter, for synthetic chapters in tests.
MYST_FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

DTYPES = (torch.float32, torch.float64)
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
#: comparison tolerances per dtype, for quantities of order one
TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-12},
              torch.float32: {"rtol": 2e-4, "atol": 2e-5}}


@dataclass
class Case:
    """One entry of the table: a model in eval mode and a batch, in one dtype on one device."""

    name: str
    model: nn.Module
    x: Tensor

    @property
    def tol(self) -> dict[str, float]:
        return TOLERANCES[self.x.dtype]


def make_case(name: str, dtype: torch.dtype = torch.float64, device: str = "cpu", *,
              batch: int = 2, seed: int = 0) -> Case:
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = factory().to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return Case(name, model, x.to(device=device, dtype=dtype))


def case_params(models: Sequence[str] = tuple(MODELS), dtypes: Sequence[torch.dtype] = DTYPES,
                devices: Sequence[str] = DEVICES) -> list:
    """Fixture params ``(name, dtype, device)`` with readable ids, e.g. ``cnn-float64-cpu``."""
    return [pytest.param((m, dt, dev), id=f"{m}-{str(dt).removeprefix('torch.')}-{dev}")
            for m in models for dt in dtypes for dev in devices]


def assert_close(actual: Tensor, expected: Tensor, *, rtol: float | None = None,
                 atol: float | None = None, what: str = "", worst: int = 5) -> None:
    """Fail unless ``|actual - expected| <= atol + rtol |expected|`` everywhere (shapes equal);
    the message lists the ``worst`` entries (index, actual, expected, error) and the largest
    absolute and relative errors. Default tolerances: :data:`TOLERANCES` of ``expected``'s dtype
    (float64's for other dtypes)."""
    default = TOLERANCES.get(expected.dtype, TOLERANCES[torch.float64])
    rtol = default["rtol"] if rtol is None else rtol
    atol = default["atol"] if atol is None else atol
    label = f"{what}: " if what else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"{label}shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    if not torch.equal(torch.isfinite(a), torch.isfinite(e)):
        raise AssertionError(f"{label}non-finite values differ: {int((~torch.isfinite(a)).sum())} "
                             f"in actual, {int((~torch.isfinite(e)).sum())} in expected")
    err = (a - e).abs().nan_to_num(0.0)
    excess = err - (atol + rtol * e.abs().nan_to_num(0.0))
    if (excess <= 0).all():
        return
    order = excess.flatten().argsort(descending=True)[:worst]
    rows = []
    for k in order.tolist():
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(k), a.shape))
        rows.append(f"  at {index}: actual {a.flatten()[k]:.6g}, expected {e.flatten()[k]:.6g}, "
                    f"error {err.flatten()[k]:.3g}")
    rel = (err / e.abs().clamp_min(1e-300)).max()
    raise AssertionError(f"{label}{int((excess > 0).sum())} of {a.numel()} entries differ beyond "
                         f"rtol={rtol}, atol={atol}; max abs error {err.max():.3g}, max rel error "
                         f"{rel:.3g}; worst:\n" + "\n".join(rows))
