"""Unit tests of leafkit.survey: the involutivity survey of Theorem 3.1."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from leafkit import survey
from leafkit.frobenius import involutivity_residual
from leafkit.models import MLP


def test_involutivity_survey_relu_versus_tanh():
    torch.manual_seed(0)
    cases = [survey.SurveyCase("MLP", act, "random",
                               MLP(6, (8, 8), num_classes=3, activation_name=act).eval())
             for act in ("relu", "tanh")]
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    table = survey.involutivity_survey(cases, x)
    relu, tanh = table.rows
    assert relu["max residual"] < 1e-12 and tanh["median residual"] > 1e-3
    assert relu["residuals"].shape == (5,) and "residuals" not in str(table)
    torch.testing.assert_close(tanh["residuals"],
                               involutivity_residual(cases[1].model, x, dtype=torch.float64))
    assert tanh["max residual"] == tanh["residuals"].max().item()


def test_involutivity_survey_restores_the_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    table = survey.involutivity_survey([survey.SurveyCase("MLP", "tanh", "random", net)], x)
    assert net.training and net[2].training
    expected = involutivity_residual(net.eval(), x, dtype=torch.float64)
    torch.testing.assert_close(table.rows[0]["residuals"], expected)  # dropout was off


def test_survey_models_shares_the_initialization(cache_tmp):
    gen = torch.Generator().manual_seed(0)
    fake = SimpleNamespace(train_x=torch.randn(60, 1, 28, 28, generator=gen),
                           train_y=torch.randint(0, 10, (60,), generator=gen),
                           test_x=torch.randn(20, 1, 28, 28, generator=gen),
                           test_y=torch.randint(0, 10, (20,), generator=gen))
    cases = survey.survey_models(fake, architectures=("MLP",), activations=("relu",), epochs=2)
    assert [(c.weights, c.activation) for c in cases] == [("random", "relu"), ("trained", "relu")]
    w0, w1 = (next(c.model.parameters()) for c in cases)
    assert not torch.equal(w0, w1) and 0 <= cases[1].accuracy <= 1
    with pytest.raises(ValueError, match="unknown architectures"):
        survey.survey_models(fake, architectures=("RNN",))
