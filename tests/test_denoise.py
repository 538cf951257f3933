"""leafkit.denoise: MSE and PSNR of known images, the filters against closed forms and scipy, the
pull along ker G against its end point for a linear model, and the gradient of Tr G."""

from __future__ import annotations

import math

import pytest
import torch
from cases import assert_close
from scipy import ndimage
from torch import nn

from leafkit import MLP
from leafkit.denoise import (
    best_blur,
    gaussian_blur,
    kernel_pull,
    median_filter,
    mse,
    psnr,
    trace_gradient_kernel_share,
)


def test_mse_and_psnr_of_known_images():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    ref = torch.full((2, 1, 4, 4), 0.1, dtype=torch.float64)
    ref[1] = 0.5
    assert_close(mse(x, ref), torch.tensor([0.01, 0.25], dtype=torch.float64))
    assert_close(psnr(x, ref), torch.tensor([20.0, 10 * math.log10(4)], dtype=torch.float64))
    assert_close(psnr(x, ref, data_range=255.0)[0], torch.tensor(20.0 + 20 * math.log10(255),
                                                                 dtype=torch.float64))
    assert torch.isinf(psnr(ref, ref)).all()
    with pytest.raises(ValueError, match="one shape"):
        mse(x, ref[:1])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, ref, data_range=0)


def test_gaussian_blur_of_an_impulse_and_a_constant():
    sigma = 1.3
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[0, 0, 10, 10] = 1
    y = gaussian_blur(x, sigma)[0, 0]
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t**2 / (2 * sigma**2))
    want = torch.zeros(21, 21, dtype=torch.float64)
    want[10 - r:11 + r, 10 - r:11 + r] = torch.outer(k, k) / k.sum() ** 2
    assert_close(y, want)
    const = torch.full((3, 2, 9, 9), 0.7, dtype=torch.float64)
    assert_close(gaussian_blur(const, 2.0), const)
    assert torch.equal(gaussian_blur(const, 0.0), const)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(const, -1.0)
    with pytest.raises(ValueError, match="channels"):
        gaussian_blur(torch.ones(3, 9), 1.0)


def test_median_filter_against_scipy():
    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for size in (3, 5):
        want = torch.stack([torch.from_numpy(ndimage.median_filter(x[b, 0].numpy(), size=size,
                                                                   mode="nearest"))
                            for b in range(2)])[:, None]
        assert_close(median_filter(x, size), want)
    with pytest.raises(ValueError, match="odd"):
        median_filter(x, 4)


def test_best_blur_keeps_clean_images():
    clean = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma, out = best_blur(clean, clean, [0.0, 0.5, 1.0])
    assert sigma == 0.0 and torch.equal(out, clean)
    with pytest.raises(ValueError, match="empty"):
        best_blur(clean, clean, [])


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(30, 4).double().eval()


def test_kernel_pull_ends_at_x_plus_the_kernel_part_for_a_linear_model():
    model = _linear()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 30, dtype=torch.float64, generator=gen)
    target = torch.randn(3, 30, dtype=torch.float64, generator=gen)
    A = model.weight.detach()
    M = A.T @ (torch.eye(4, dtype=A.dtype) - 0.25)  # D_x = {A^T c : sum c = 0}, by hand
    P = M @ torch.linalg.pinv(M)
    want = x + (target - x) - (target - x) @ P
    out = kernel_pull(model, x, target, step_size=0.5, steps=40)
    assert_close(out, want)
    assert_close(model(out).softmax(1), model(x).softmax(1))  # the prediction never moved
    # a clean image pulled toward itself does not move; no steps, no move
    assert_close(kernel_pull(model, x, x, steps=5), x)
    assert torch.equal(kernel_pull(model, x, target, steps=0), x)
    # too few steps: the path stops short, at a distance steps * alpha from x
    short = kernel_pull(model, x, target, step_size=0.1, steps=3)
    assert_close((short - x).norm(dim=1), torch.full((3,), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape of x"):
        kernel_pull(model, x, target[:2])
    with pytest.raises(ValueError, match="step_size"):
        kernel_pull(model, x, target, step_size=0.0)


def test_trace_gradient_lies_in_D_x_for_piecewise_linear_models_only():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 30, dtype=torch.float64, generator=gen)
    assert float(trace_gradient_kernel_share(_linear(), x).max()) < 1e-10
    torch.manual_seed(1)
    relu = MLP(30, hidden=(16, 16), num_classes=4).double().eval()
    assert float(trace_gradient_kernel_share(relu, x).max()) < 1e-10
    tanh = MLP(30, hidden=(16,), num_classes=4, activation_name="tanh").double().eval()
    assert float(trace_gradient_kernel_share(tanh, x).min()) > 1e-3
    # the kernel part is a projection of the gradient: a ratio in [0, 1]
    assert float(trace_gradient_kernel_share(tanh, x).max()) <= 1
