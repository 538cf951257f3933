"""Unit tests of leafkit.fisher's factored products against slow references and closed forms."""

import pytest
import torch

from leafkit import fisher


def _factors(B=3, C=4, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, C, generator=g, dtype=torch.float64)
    A = torch.randn(B, C, n, generator=g, dtype=torch.float64)
    log_p = scores.log_softmax(-1)
    J = A - (log_p.exp().unsqueeze(-1) * A).sum(1, keepdim=True)  # g_i = a_i - sum_j p_j a_j
    return J, log_p


def test_fisher_vector_product_matches_the_sum_over_classes():
    J, log_p = _factors()
    V = torch.randn(3, 5, 6, dtype=torch.float64)
    slow = torch.zeros_like(V)
    p = log_p.exp()
    for b in range(3):  # the definition, term by term: sum_i p_i g_i (g_i^T v)
        for i in range(4):
            slow[b] += p[b, i] * (V[b] @ J[b, i])[:, None] * J[b, i][None, :]
    torch.testing.assert_close(fisher.fisher_vector_product(J, log_p, V), slow)
    torch.testing.assert_close(fisher.fisher_vector_product(J, log_p, V[:, 0]), slow[:, 0])


def test_fisher_vector_product_vanishes_exactly_off_the_span():
    J, log_p = _factors()
    v = torch.randn(3, 6, dtype=torch.float64)
    Q = torch.linalg.qr(J.mT).Q  # basis of span(g_i)
    off = v - (Q @ (Q.mT @ v[..., None]))[..., 0]
    assert fisher.fisher_vector_product(J, log_p, off).abs().max() < 1e-12
    assert fisher.fisher_vector_product(J, log_p, v - off).norm(dim=-1).min() > 1e-3


def test_fisher_vector_product_rejects_mismatched_vectors():
    J, log_p = _factors()
    with pytest.raises(ValueError, match=r"V must have shape \(B, n\) or \(B, K, n\) with B = 3"):
        fisher.fisher_vector_product(J, log_p, torch.zeros(3, 7, dtype=torch.float64))


def test_score_balance_is_zero_for_true_scores_and_its_closed_form_otherwise():
    J, log_p = _factors()
    assert fisher.score_balance(J, log_p).max() < 1e-15  # eq. (2.9) holds by construction
    # one class with gradient e_1, the others zero: |p_1 e_1| / |p_1 e_1| = 1
    lone = torch.zeros(1, 2, 3, dtype=torch.float64)
    lone[0, 0, 0] = 1.0
    assert fisher.score_balance(lone, torch.tensor([[0.3, 0.7]]).log().double()).item() == 1.0
    # two opposite gradients weighted p = (0.25, 0.75): |0.25 - 0.75| / (0.25 + 0.75) = 0.5
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64)
    value = fisher.score_balance(opposite, torch.tensor([[0.25, 0.75]], dtype=torch.float64).log())
    assert value.item() == pytest.approx(0.5)
