import pytest
import torch

import leafkit
from leafkit.geometry import local_data_trace
from leafkit.monitoring import fixed_images, numerical_ranks, trace_hook

SMALL = leafkit.MnistCNN(channels=(2, 4), hidden=8).config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = leafkit.build_model(SMALL).eval()
    x = torch.randn(12, 1, 28, 28)
    y = torch.arange(12) % 10
    return model, x, y


def test_numerical_ranks_closed_form():
    # J = diag(sigma) V^T with known singular values; uniform p makes G's eigenvalues sigma^2 / C
    torch.manual_seed(0)
    C, n = 4, 6
    V = torch.linalg.qr(torch.randn(n, C, dtype=torch.float64)).Q
    sigma = torch.tensor([1.0, 3e-2, 3e-3, 1e-8], dtype=torch.float64)
    J = (sigma[:, None] * V.mT).unsqueeze(0)
    log_p = torch.full((1, C), 1.0 / C, dtype=torch.float64).log()
    rank_J, rank_G = numerical_ranks(J, log_p, rtols=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5))
    assert rank_J.tolist() == [[1, 2, 3, 3, 3]]  # sigma ratios 3e-2, 3e-3, 1e-8
    assert rank_G.tolist() == [[1, 1, 1, 2, 2]]  # eigenvalue ratios 9e-4, 9e-6, 1e-16


def test_numerical_ranks_bound_on_a_network(tiny):
    model, x, _ = tiny
    J, log_p = leafkit.geometry.log_prob_jacobian(model, x)
    rank_J, rank_G = numerical_ranks(J, log_p)
    assert rank_J.shape == rank_G.shape == (12, len(leafkit.monitoring.RANK_RTOLS))
    assert int(rank_J.max()) <= 9 and int(rank_G.max()) <= 9  # Proposition 2.1: rank <= C - 1
    assert bool((rank_G <= rank_J).all())


def test_trace_hook_matches_geometry(tiny):
    model, x, y = tiny
    record = trace_hook(x, y, batch_size=5, test=(x, y))(0, model)
    trace = local_data_trace(model, x)
    torch.testing.assert_close(torch.tensor(record["trace_mean"]), trace.mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(record["trace_median"]), trace.median(), rtol=1e-5,
                               atol=0)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y)
    assert record["train_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert record["train_accuracy"] == record["test_accuracy"] == leafkit.accuracy(model, x, y)
    assert record["rank_J"] == record["rank_J_by_rtol"][record["rtols"].index(1e-3)]


def test_trace_hook_chunking_does_not_matter(tiny):
    model, x, _ = tiny
    a = trace_hook(x, batch_size=None)(0, model)
    b = trace_hook(x, batch_size=5)(0, model)
    assert a.keys() == b.keys() and "train_loss" not in a and "test_accuracy" not in a
    assert a["trace_mean"] == pytest.approx(b["trace_mean"], rel=1e-5)
    assert a["rank_G_by_rtol"] == b["rank_G_by_rtol"]


def test_trace_hook_in_training(tiny, cache_tmp):
    _, x, y = tiny
    hook = trace_hook(x[:4], y[:4])
    first = leafkit.train(SMALL, x, y, steps=4, batch_size=6, hook=hook, hook_every=2,
                          hook_key="test-trace", progress=False)
    assert [r["step"] for r in first.log] == [0, 2, 4]
    again = leafkit.train(SMALL, x, y, steps=4, batch_size=6, hook=hook, hook_every=2,
                          hook_key="test-trace", progress=False)
    assert again.from_cache and again.log == first.log


def test_fixed_images_are_seeded_and_distinct():
    a, b = fixed_images(100, 30), fixed_images(100, 30)
    assert torch.equal(a, b) and len(a.unique()) == 30
    assert not torch.equal(a, fixed_images(100, 30, seed=1))
    with pytest.raises(ValueError, match="n_images"):
        fixed_images(10, 11)


def test_bad_arguments(tiny):
    _, x, y = tiny
    with pytest.raises(ValueError, match="labels must have shape"):
        trace_hook(x, y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        trace_hook(x, batch_size=0)
    with pytest.raises(ValueError, match="rtols"):
        numerical_ranks(torch.zeros(1, 3, 4), torch.zeros(1, 3), rtols=(2.0,))
    with pytest.raises(ValueError, match="need J of shape"):
        numerical_ranks(torch.zeros(3, 4), torch.zeros(1, 3))
