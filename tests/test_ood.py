"""leafkit.ood: scores against closed forms, ROC AUC against known sets and scikit-learn, the
bootstrap interval, the noise sets, and the errors."""

from __future__ import annotations

import pytest
import torch
from cases import assert_close
from sklearn.metrics import roc_auc_score
from torch import nn

from leafkit import local_data_trace, log_prob_jacobian, pixel_bounds
from leafkit.ood import (
    SCORES,
    OODScores,
    _auc_many,
    auc_table,
    bootstrap_auc,
    energy_score,
    leaf_margin,
    max_softmax,
    noise_images,
    ood_scores,
    roc_auc,
)


def _linear(seed: int = 0, n: int = 6, C: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n, C).double().eval()


def test_roc_auc_of_known_sets():
    assert roc_auc(torch.tensor([0.0, 1, 2]), torch.tensor([3.0, 4])) == 1.0
    assert roc_auc(torch.tensor([3.0, 4]), torch.tensor([0.0, 1, 2])) == 0.0
    assert roc_auc(torch.ones(5), torch.ones(3)) == 0.5  # all tied
    # scikit-learn's documented example: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8] -> 0.75
    assert roc_auc(torch.tensor([0.1, 0.4]), torch.tensor([0.35, 0.8])) == 0.75


def test_batched_auc_counts_ties_as_scikit_learn_does():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (3, 40), generator=gen).double()  # many ties
    b = torch.randint(1, 7, (3, 25), generator=gen).double()
    want = [roc_auc_score([0] * 40 + [1] * 25, torch.cat([a[r], b[r]]).numpy()) for r in range(3)]
    assert_close(_auc_many(a, b), torch.tensor(want, dtype=torch.float64))


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_n():
    gen = torch.Generator().manual_seed(1)
    widths = []
    for n in (40, 2000):
        a, b = torch.randn(n, generator=gen), torch.randn(n, generator=gen) + 1
        auc, lo, hi = bootstrap_auc(a, b, n_boot=400, seed=3)
        assert lo <= auc <= hi
        assert lo < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(n): 7x narrower
    # the true AUC of N(1, 1) against N(0, 1) is Phi(1 / sqrt 2) = 0.760
    assert abs(auc - 0.7602) < 0.02


def test_bootstrap_is_seeded():
    a, b = torch.arange(30.0), torch.arange(30.0) + 10
    assert bootstrap_auc(a, b, n_boot=50, seed=5) == bootstrap_auc(a, b, n_boot=50, seed=5)
    assert bootstrap_auc(a, b, n_boot=50, seed=5) != bootstrap_auc(a, b, n_boot=50, seed=6)


@pytest.mark.parametrize("bad", [torch.tensor([]), torch.ones(2, 2), torch.tensor([1.0, float("nan")])])
def test_roc_auc_refuses_bad_sets(bad):
    with pytest.raises(ValueError, match="in_scores"):
        roc_auc(bad, torch.ones(3))


def test_bootstrap_refuses_bad_options():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_auc(torch.ones(3), torch.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_auc(torch.ones(3), torch.ones(3), level=1.0)


def test_max_softmax_and_energy_closed_forms():
    s = torch.tensor([[0.0, 0.0], [torch.log(torch.tensor(3.0)), 0.0]])
    assert_close(max_softmax(s), torch.tensor([0.5, 0.75]))
    assert_close(energy_score(s), torch.log(torch.tensor([2.0, 4.0])))
    # temperature T: T logsumexp(s / T) -> max s as T -> 0
    assert_close(energy_score(s, temperature=1e-3), s.amax(1), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        energy_score(s, temperature=0)
    with pytest.raises(ValueError, match="C >= 2"):
        max_softmax(torch.ones(3))


def test_leaf_margin_is_the_distance_to_the_boundary_of_a_linear_model():
    model = _linear()
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    J, log_p = log_prob_jacobian(model, x)
    d = leaf_margin(J, log_p)
    A, s = model.weight.detach(), model(x).detach()
    c = s.argmax(1)
    for b in range(5):  # by hand: min over j of (s_c - s_j) / ||a_c - a_j||
        cand = [((s[b, c[b]] - s[b, j]) / (A[c[b]] - A[j]).norm(), j) for j in range(4) if j != c[b]]
        dist, j = min(cand)
        assert_close(d[b], dist)
        # moving that far along -(a_c - a_j) lands on the boundary s_c = s_j
        normal = (A[c[b]] - A[j]) / (A[c[b]] - A[j]).norm()
        s_new = model(x[b] - dist * normal).detach()
        assert_close(s_new[c[b]], s_new[j])


def test_ood_scores_of_a_linear_model():
    model = _linear(1)
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sc = ood_scores(model, x, batch_size=3)
    A, s = model.weight.detach(), model(x).detach()
    p = s.softmax(1)
    # Tr G = sum_i p_i ||A^T (e_i - p)||^2, eq. (4.1), by hand
    E = torch.eye(4, dtype=torch.float64)
    g = torch.einsum("ij,bcj->bci", A.T, E[None] - p[:, None])  # (B, C, n)
    assert_close(sc.trace, (p * g.square().sum(-1)).sum(1))
    assert_close(sc.trace, local_data_trace(model, x))
    assert_close(sc.max_softmax, p.amax(1))
    assert_close(sc.energy, torch.logsumexp(s, 1))
    assert torch.equal(sc.predicted, s.argmax(1))
    assert len(sc) == 7


def test_oodness_is_oriented_in_advance():
    f64 = torch.float64
    sc = OODScores(trace=torch.tensor([10.0, 0.1], dtype=f64),
                   max_softmax=torch.tensor([0.9, 0.5], dtype=f64),
                   energy=torch.tensor([3.0, 1.0], dtype=f64),
                   leaf_margin=torch.tensor([2.0, 0.5], dtype=f64),
                   predicted=torch.tensor([0, 1]))
    assert_close(sc.oodness("trace"), torch.tensor([1.0, -1.0], dtype=torch.float64))
    for name in ("max_softmax", "energy", "leaf_margin"):
        assert SCORES[name] == -1
        assert_close(sc.oodness(name), -getattr(sc, name).double())
    with pytest.raises(ValueError, match="unknown score"):
        sc.oodness("entropy")


def test_auc_table_rows():
    gen = torch.Generator().manual_seed(0)

    def fake(shift, n):
        t = torch.randn(n, generator=gen) + shift
        return OODScores(trace=t.exp(), max_softmax=-t, energy=-t, leaf_margin=-t,
                         predicted=torch.zeros(n, dtype=torch.long))

    table = auc_table(fake(0, 200), {"far": fake(5, 100), "same": fake(0, 100)}, n_boot=100)
    assert table.column("set") == ["far", "same"] and table.column("n") == [100, 100]
    far, same = table.column("trace")
    assert far[0] > 0.99 and abs(same[0] - 0.5) < 0.15
    assert table.column("best")[0] in SCORES
    assert "[" in str(table) and "<table>" in table._repr_html_()
    with pytest.raises(ValueError, match="unknown scores"):
        auc_table(fake(0, 5), {}, scores=("entropy",))


def test_noise_images_lie_in_the_box_and_are_seeded():
    lo, hi = pixel_bounds()
    for kind in ("gaussian", "uniform"):
        x = noise_images(kind, 50, seed=1)
        assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
        assert x.min() >= lo and x.max() <= hi
        assert torch.equal(x, noise_images(kind, 50, seed=1))
        assert not torch.equal(x, noise_images(kind, 50, seed=2))
    u = noise_images("uniform", 2000, seed=0)
    assert abs(float(u.mean()) - (lo + hi) / 2) < 0.01
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise_images("salt", 3)
    with pytest.raises(ValueError, match="positive integer"):
        noise_images("uniform", 0)
