"""Unit tests of leafkit.theory (and the involutivity explorer), against closed forms."""

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from leafkit import geometry, theory  # noqa: E402
from leafkit.models import MLP  # noqa: E402

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def linear(gen):
    torch.manual_seed(0)
    return nn.Linear(5, 3).double().eval()


def unit(v):
    return v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))


# ----------------------------------------------------------------------------- tables, ranks

def test_memory_table_matches_closed_form():
    table = theory.memory_table()
    mnist = table.rows[0]
    assert (mnist["n"], mnist["C"], mnist["rank bound C-1"]) == (784, 10, 9)
    assert mnist["dense G"] == 784 * 784 * 4 and mnist["factored (J, p)"] == (10 * 784 + 10) * 4
    assert table.column("n") == [784, 3072, 3072, 150528]
    double = theory.memory_table({"toy": ((2, 3), 4)}, dtype=torch.float64).rows[0]
    assert double["dense G"] == 36 * 8 and double["factored (J, p)"] == (4 * 6 + 4) * 8


def test_memory_table_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C >= 2"):
        theory.memory_table({"bad": ((3,), 1)})


def test_table_renders_shown_columns_only():
    table = theory.Table([{"a": 1.23456, "b": "x", "hidden": torch.zeros(3)}],
                         columns=["a", "b"], formats={"a": ".2f"})
    text, page = str(table), table._repr_html_()
    assert "1.23" in text and "hidden" not in text
    assert "<th>a</th>" in page and "hidden" not in page
    assert table.column("hidden")[0].shape == (3,) and len(table) == 1


def test_format_bytes():
    assert theory.format_bytes(999) == "999 B"
    assert theory.format_bytes(2_458_624) == "2.46 MB"
    assert theory.format_bytes(90.6e9) == "90.6 GB"


def test_numerical_rank_counts_above_tolerance():
    lam = torch.tensor([[1.0, 1e-3, 1e-9, -1e-17], [2.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    ranks = theory.numerical_rank(lam, [1e-1, 1e-6, 1e-12, 1e-20])
    assert ranks.tolist() == [[1, 2, 3, 4], [2, 2, 2, 2]]
    with pytest.raises(ValueError, match=r"\(B, m\)"):
        theory.numerical_rank(torch.ones(3), [0.1])


# ----------------------------------------------------------------------------- KL expansions

def test_kl_second_order_linear_model(linear, gen):
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    v = unit(torch.randn(4, 5, generator=gen, dtype=torch.float64))
    eps = torch.tensor([1e-5, 1e-1], dtype=torch.float64)
    kl, quad = theory.kl_second_order(linear, x, v, eps)
    A, p = linear.weight.detach(), linear(x).softmax(-1).detach()
    Av = v @ A.T
    closed = (p * Av.square()).sum(1) - (p * Av).sum(1).square()  # v^T A^T (diag p - p p^T) A v
    torch.testing.assert_close(quad[:, 1] / eps[1] ** 2, closed, **TOL)
    torch.testing.assert_close(kl[:, 0] / quad[:, 0], torch.full((4,), 0.5, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="shape of x"):
        theory.kl_second_order(linear, x, v[:, :3], eps)


def test_parameter_kl_second_order_matches_fisher(gen):
    torch.manual_seed(0)
    net = MLP(4, (6,), num_classes=3).double().eval()
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    d = sum(p.numel() for p in net.parameters())
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    u = u / u.norm()
    eps = torch.tensor([1e-5, 1.0], dtype=torch.float64)
    kl, quad = theory.parameter_kl_second_order(net, x, u, eps)
    F = geometry.local_fisher_matrix(net, x)
    torch.testing.assert_close(quad[:, 1], torch.einsum("i,bij,j->b", u, F, u), **TOL)
    torch.testing.assert_close(kl[:, 0] / quad[:, 0], torch.full((3,), 0.5, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="flat parameter vector"):
        theory.parameter_kl_second_order(net, x, u[:-1], eps)


def test_count_maxpool_ties_on_a_constructed_input():
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)).double().eval()
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    x[0, 0, :2, :2] = 1.0  # one window with a four-way tie at 1; three all-zero windows
    x[0, 0, 2:, 2:] = torch.tensor([[3.0, 3.0], [0.0, 1.0]])  # a two-way tie at 3
    x[1] = torch.arange(16, dtype=torch.float64).view(1, 4, 4)  # no ties
    assert theory.count_maxpool_ties(net, x).tolist() == [2, 0]
    with pytest.raises(ValueError, match="no nn.MaxPool2d"):
        theory.count_maxpool_ties(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double(), x)


# ----------------------------------------------------------------------------- Theorem 3.1

def test_score_hessians_vanish_for_relu_and_match_autograd_for_tanh(gen):
    torch.manual_seed(0)
    x = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    V = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    relu = MLP(4, (8, 8), num_classes=3).double().eval()
    assert theory.score_hessian_vector_products(relu, x, V).abs().max() == 0
    affine = nn.Linear(4, 3).double()
    assert theory.score_hessian_vector_products(affine, x, V).abs().max() == 0
    tanh = MLP(4, (8,), num_classes=3, activation_name="tanh").double().eval()
    HV = theory.score_hessian_vector_products(tanh, x, V)
    for b in range(2):
        for k in range(3):
            H = torch.autograd.functional.hessian(lambda z: tanh(z[None])[0, k], x[b])
            torch.testing.assert_close(HV[b, k], V[b] @ H, **TOL)
    with pytest.raises(ValueError, match="m vectors"):
        theory.score_hessian_vector_products(tanh, x, V[:, :, :3])


def test_principal_angles_closed_form():
    theta = torch.tensor([0.3, 1e-10, 0.0], dtype=torch.float64)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    Q1 = e1.expand(3, 3).unsqueeze(-1)
    Q2 = (theta.cos()[:, None] * e1 + theta.sin()[:, None] * e2).unsqueeze(-1)
    torch.testing.assert_close(theory.principal_angles(Q1, Q2)[:, 0], theta, rtol=1e-12,
                               atol=1e-20)
    plane = torch.eye(3, dtype=torch.float64)[:, :2].expand(3, 3, 2)
    angles = theory.principal_angles(Q2, plane)  # swapped internally: the line lies in the plane
    assert angles.shape == (3, 1) and angles.abs().max() < 1e-15
    with pytest.raises(ValueError, match="same B and n"):
        theory.principal_angles(Q1, torch.zeros(3, 4, 1))


def test_activation_patterns_and_flat_leaves(gen):
    torch.manual_seed(0)
    relu = MLP(6, (16,), num_classes=3).double().eval()
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    codes = theory.activation_patterns(relu, torch.cat([x, x]))
    assert codes.shape == (6, 16) and torch.equal(codes[:3], codes[3:])
    d = unit(torch.randn(3, 6, generator=gen, dtype=torch.float64))
    angles, same = theory.tangent_angles_along(relu, x, d, [1e-8, 1e-6])
    assert same.all() and angles.max() < 1e-12
    tanh = MLP(6, (16,), num_classes=3, activation_name="tanh").double().eval()
    angles, same = theory.tangent_angles_along(tanh, x, d, [1e-3])
    assert same is None and (angles > 1e-8).all()
    with pytest.raises(ValueError, match="no nn.ReLU"):
        theory.activation_patterns(tanh, x)


def test_linear_model_has_one_fixed_distribution(linear, gen):
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    d = unit(torch.randn(2, 5, generator=gen, dtype=torch.float64))
    angles, same = theory.tangent_angles_along(linear, x, d, [1.0, 100.0])
    assert same is None and angles.max() < 1e-12


def test_plane_fields_closed_forms(gen):
    p = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    inv, con = theory.PLANE_FIELDS["involutive"], theory.PLANE_FIELDS["contact"]
    assert inv.bracket(p).abs().max() == 0 and inv.residual(p).max() == 0
    torch.testing.assert_close(con.bracket(p), torch.tensor([0.0, 0.0, -1.0],
                                                            dtype=torch.float64).expand(50, 3))
    # the part of -d/dz outside span{(1, 0, y), (0, 1, 0)} has length 1 / sqrt(1 + y^2)
    torch.testing.assert_close(con.residual(p), 1 / (1 + p[:, 1] ** 2).sqrt(), **TOL)
    r = 0.7
    loop = theory.circle(r, steps=2000)
    assert abs(inv.lift(loop)[-1, 2]) < 1e-12
    assert abs(con.lift(loop)[-1, 2] + math.pi * r**2) < 1e-5
    torch.testing.assert_close(loop[0], loop[-1])


# ----------------------------------------------------------------------------- the survey

def test_involutivity_survey_relu_versus_tanh(gen):
    torch.manual_seed(0)
    cases = [theory.SurveyCase("MLP", act, "random",
                               MLP(6, (8, 8), num_classes=3, activation_name=act).eval())
             for act in ("relu", "tanh")]
    x = torch.randn(5, 6, generator=gen)
    table = theory.involutivity_survey(cases, x)
    relu, tanh = table.rows
    assert relu["max residual"] < 1e-12 and tanh["median residual"] > 1e-3
    assert relu["residuals"].shape == (5,) and "residuals" not in str(table)


def test_survey_models_shares_the_initialization(cache_tmp, gen):
    fake = SimpleNamespace(train_x=torch.randn(60, 1, 28, 28, generator=gen),
                           train_y=torch.randint(0, 10, (60,), generator=gen),
                           test_x=torch.randn(20, 1, 28, 28, generator=gen),
                           test_y=torch.randint(0, 10, (20,), generator=gen))
    cases = theory.survey_models(fake, architectures=("MLP",), activations=("relu",), epochs=2)
    assert [(c.weights, c.activation) for c in cases] == [("random", "relu"), ("trained", "relu")]
    w0, w1 = (next(c.model.parameters()) for c in cases)
    assert not torch.equal(w0, w1) and 0 <= cases[1].accuracy <= 1
    with pytest.raises(ValueError, match="unknown architectures"):
        theory.survey_models(fake, architectures=("RNN",))


def test_plots_smoke(gen):
    lam = torch.rand(2, 10, generator=gen, dtype=torch.float64)
    theory.plot_spectra(lam, 10, labels=["a", "b"])
    rtols = torch.logspace(-12, -1, 5, dtype=torch.float64)
    theory.plot_rank_vs_tolerance(rtols, {"x": theory.numerical_rank(lam, rtols)}, 10)
    eps = torch.logspace(-4, 0, 3, dtype=torch.float64)
    q = eps.square().expand(2, 3)
    theory.plot_kl_check(eps, {"toy": (q / 2, q)})
    theory.plot_plane_fields(grid=2)
    table = theory.Table([{"architecture": "MLP", "activation": "relu", "weights": "random",
                           "residuals": torch.tensor([1e-15, 0.0])}])
    theory.plot_involutivity_survey(table)
    plt.close("all")


def test_involutivity_explorer_renders_a_default(capsys, gen):
    pytest.importorskip("ipywidgets")
    from leafkit.widgets import involutivity_explorer
    box = involutivity_explorer(torch.randn(2, 6, generator=gen), num_classes=3,
                                widths=(4, 8), depths=(1, 2))
    assert "default setting: relu MLP, 2 x 8 hidden, float64" in capsys.readouterr().out
    assert len(box.children) == 3
    with pytest.raises(ValueError, match="at least one choice"):
        involutivity_explorer(torch.randn(2, 6), depths=())
