"""Every fault at leafkit's numerical boundary raises a clear error naming the problem, and models
with BatchNorm or Dropout are differentiated in eval mode whatever mode they arrive in."""

import math
import warnings

import cases
import pytest
import torch
from torch import nn

from leafkit import MLP, MnistCNN
from leafkit.checks import check_batch, quiet_forward_mode
from leafkit.fisher import local_fisher_matrix
from leafkit.frobenius import involutivity_residual
from leafkit.geometry import (kl_divergence, local_data_matrix, local_data_matrix_from_jacobian,
                              local_data_spectrum, local_data_trace,
                              local_data_trace_from_jacobian, log_prob_jacobian, score_jacobian)
from leafkit.paths import horizontal_direction, horizontal_path, vertical_path
from leafkit.projection import project_kernel, project_tangent, tangent_basis


class ReturnsShape(nn.Module):
    def __init__(self, shape_fn):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.shape_fn = shape_fn

    def forward(self, x):
        return self.shape_fn(self.lin(x))


BAD_INPUTS = {  # name: (model, x, a fragment of the message)
    "not a tensor": (MLP(4), [[1.0] * 4], "torch.Tensor"),
    "empty batch": (MLP(4), torch.zeros(0, 4), "empty"),
    "nan": (MLP(4), torch.tensor([[0.0, float("nan"), 0, 0]]), "NaN"),
    "inf": (MLP(4), torch.tensor([[0.0, float("inf"), 0, 0]]), "inf"),
    "integer": (MLP(4), torch.zeros(2, 4, dtype=torch.long), "floating"),
    "float16": (MLP(4).half(), torch.zeros(2, 4, dtype=torch.float16), "float32 or float64"),
    "bfloat16": (MLP(4).bfloat16(), torch.zeros(2, 4, dtype=torch.bfloat16), "float32 or float64"),
    "no batch axis": (MLP(4), torch.zeros(4), "dimensions"),
    "model of another dtype": (MLP(4).double(), torch.zeros(2, 4), "is torch.float64 on cpu"),
    "model on another device": (MLP(4).to("meta"), torch.zeros(2, 4), "on meta but the input"),
    "not a model": (lambda x: x, torch.zeros(2, 4), "torch.nn.Module"),
    "wrong shape (leafkit model)": (MnistCNN(channels=(2, 2), hidden=4), torch.zeros(2, 784),
                                    "1, 28, 28"),
    "wrong shape (torch module)": (nn.Linear(4, 3), torch.zeros(2, 5), "shape"),
    "output (B,)": (ReturnsShape(lambda s: s.sum(-1)), torch.zeros(2, 4), r"\(B, C\)"),
    "output (B, C, 1)": (ReturnsShape(lambda s: s.unsqueeze(-1)), torch.zeros(2, 4), r"\(B, C\)"),
    "one class": (ReturnsShape(lambda s: s[:, :1]), torch.zeros(2, 4), "C >= 2"),
    "nan output": (ReturnsShape(lambda s: s / 0 * 0), torch.zeros(2, 4), "NaN"),
}
MODEL_FUNCTIONS = {
    "score_jacobian": score_jacobian,
    "log_prob_jacobian": log_prob_jacobian,
    "local_data_trace": local_data_trace,
    "local_data_matrix": local_data_matrix,
    "local_fisher_matrix": local_fisher_matrix,
    "kl_divergence": lambda m, x: kl_divergence(m, x, x),
    "involutivity_residual": involutivity_residual,
    "horizontal_path": lambda m, x: horizontal_path(m, x, x, max_steps=1, progress=False),
    "vertical_path": lambda m, x: vertical_path(m, x, steps=1, progress=False),
    "horizontal_direction": lambda m, x: horizontal_direction(m, x, x),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
@pytest.mark.parametrize("fn", sorted(MODEL_FUNCTIONS))
def test_bad_input_raises_value_error(name, fn):
    model, x, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message):
        MODEL_FUNCTIONS[fn](model, x)


def test_check_batch_names_the_argument():
    with pytest.raises(ValueError, match="dx contains 1 NaN"):
        check_batch(torch.tensor([[float("nan")]]), "dx")
    with pytest.raises(ValueError, match="shape of x"):
        kl_divergence(MLP(4), torch.zeros(2, 4), torch.zeros(2, 5))


# ----------------------------------------------------------------- the factored form (J, log p)

@pytest.fixture
def factored():
    case = cases.make_case("mlp_relu", torch.float64)
    return log_prob_jacobian(case.model, case.x)


FACTORED = {
    "local_data_matrix_from_jacobian": lambda J, lp: local_data_matrix_from_jacobian(J, lp),
    "local_data_trace_from_jacobian": lambda J, lp: local_data_trace_from_jacobian(J, lp),
    "local_data_spectrum": lambda J, lp: local_data_spectrum(J, lp),
    "tangent_basis": lambda J, lp: tangent_basis(J, lp),
    "project_tangent": lambda J, lp: project_tangent(J, J[:, 0], lp),
    "project_kernel": lambda J, lp: project_kernel(J, J[:, 0], lp),
}


@pytest.mark.parametrize("fn", sorted(FACTORED))
def test_probabilities_passed_as_log_probabilities_are_refused(factored, fn):
    J, log_p = factored
    with pytest.raises(ValueError, match="log-probabilities"):
        FACTORED[fn](J, log_p.exp())  # p where log p belongs: G would be off by far
    with pytest.raises(ValueError, match="log-probabilities"):
        FACTORED[fn](J, log_p + 2.0)  # raw scores, not normalized
    FACTORED[fn](J, log_p)  # the right input passes


@pytest.mark.parametrize("fn", sorted(FACTORED))
def test_nan_or_bad_shape_in_the_factored_form_is_refused(factored, fn):
    J, log_p = factored
    bad = J.clone()
    bad[0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="J contains 1 NaN"):
        FACTORED[fn](bad, log_p)
    with pytest.raises(ValueError, match=r"J must be a tensor of shape \(B, C, n\)"):
        FACTORED[fn](J[0], log_p)
    with pytest.raises(ValueError, match="log_p must have shape"):
        FACTORED[fn](J, log_p[:, :-1])


def test_nan_in_a_vector_to_project_is_refused(factored):
    J, log_p = factored
    v = J[:, 0].clone()
    v[1, 0] = math.inf
    for project in (project_tangent, project_kernel):
        with pytest.raises(ValueError, match="v contains 1 NaN or inf"):
            project(J, v, log_p)
    with pytest.raises(ValueError, match="basis must have shape"):
        project_tangent(J, J[:, 0], basis=torch.zeros(2, 3, 4, dtype=J.dtype))


# ----------------------------------------------------------------- BatchNorm and Dropout

def _batchnorm_in_train_mode():
    case = cases.make_case("mlp_batchnorm", torch.float64, batch=4)
    case.model.train()
    return case


GEOMETRY_OF_ONE = {  # per-sample results that must not depend on the other samples of the batch
    "log_prob_jacobian": lambda m, x: log_prob_jacobian(m, x)[0],
    "local_data_trace": local_data_trace,
    "local_data_matrix": local_data_matrix,
    "kl_divergence": lambda m, x: kl_divergence(m, x, 1e-3 * torch.ones_like(x)),
    "involutivity_residual": involutivity_residual,
}


@pytest.mark.parametrize("fn", sorted(GEOMETRY_OF_ONE))
def test_train_mode_models_are_differentiated_in_eval_mode(fn):
    case = _batchnorm_in_train_mode()
    model, x = case.model, case.x
    bn = model[2]
    stats = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    together = GEOMETRY_OF_ONE[fn](model, x)
    alone = GEOMETRY_OF_ONE[fn](model, x[:1])
    # the first sample's result does not depend on its batch mates (BatchNorm used its running
    # statistics) and is deterministic (Dropout was off) ...
    cases.assert_close(alone[0], together[0], rtol=1e-9, atol=1e-12, what=fn)
    cases.assert_close(GEOMETRY_OF_ONE[fn](model, x), together, rtol=1e-12, atol=1e-14, what=fn)
    # ... and equals what the model computes in eval mode; the module is left as it came
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    model.eval()
    cases.assert_close(GEOMETRY_OF_ONE[fn](model, x), together, rtol=1e-12, atol=1e-14, what=fn)


def test_paths_of_train_mode_models_match_eval_mode():
    case = _batchnorm_in_train_mode()
    model, x = case.model, case.x
    target = x.flip(0)
    kw = dict(step_size=0.05, max_steps=5, tol=None, progress=False)
    trained = horizontal_path(model, x, target, **kw)
    across = vertical_path(model, x, steps=5, progress=False)
    assert model.training
    model.eval()
    cases.assert_close(trained.final, horizontal_path(model, x, target, **kw).final,
                       rtol=1e-12, atol=1e-14)
    cases.assert_close(across.final, vertical_path(model, x, steps=5, progress=False).final,
                       rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------- paths: options and faults

@pytest.fixture
def pair():
    case = cases.make_case("mlp_relu", torch.float32, batch=3)
    return case.model, case.x, case.x.roll(1, 0)


BAD_OPTIONS = {  # keyword arguments of horizontal_path -> a fragment of the message
    "step_size=0": ({"step_size": 0.0}, "step_size must be a finite positive"),
    "step_size=inf": ({"step_size": math.inf}, "step_size must be a finite positive"),
    "step_size=nan": ({"step_size": math.nan}, "step_size must be a finite positive"),
    "bounds=(0,)": ({"bounds": (0.0,)}, r"bounds must be \(lo, hi\)"),
    "bounds=(1, -1)": ({"bounds": (1.0, -1.0)}, r"bounds must be \(lo, hi\)"),
    "bounds=(0, inf)": ({"bounds": (0.0, math.inf)}, r"bounds must be \(lo, hi\)"),
    "bounds=0": ({"bounds": 0.0}, r"bounds must be \(lo, hi\)"),
    "projection=None": ({"projection": None}, "projection must be one of"),
    "projection=svd": ({"projection": "svd"}, "unknown projection"),
    "max_steps=-1": ({"max_steps": -1}, "non-negative integer"),
    "max_steps=2.5": ({"max_steps": 2.5}, "non-negative integer"),
    "tol=-1": ({"tol": -1.0}, "tol must be"),
    "record_every=0": ({"record_every": 0}, "record_every"),
    "check_every=0": ({"check_every": 0}, "check_every"),
    "stop=3": ({"stop": 3}, "stop must be a function"),
}


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_bad_path_options_are_refused(pair, name):
    kwargs, message = BAD_OPTIONS[name]
    with pytest.raises(ValueError, match=message):
        horizontal_path(*pair, progress=False, **kwargs)


def test_huge_step_size_fails_at_the_next_check_not_at_the_end(pair):
    model, source, target = pair
    with pytest.raises(FloatingPointError, match="became NaN or inf by step 10"):
        horizontal_path(model, source, target, step_size=1e30, max_steps=1000, tol=None,
                        check_every=10, progress=False)


class TurnsNaN(nn.Module):
    """A linear classifier whose output turns NaN once ``||x|| > radius``."""

    def __init__(self, radius: float):
        super().__init__()
        self.lin = nn.Linear(12, 5)
        self.radius = radius

    def forward(self, x):
        s = self.lin(x.flatten(1))
        return s + torch.log(self.radius - x.flatten(1).norm(dim=1, keepdim=True)) * 0


def test_model_output_turning_nan_mid_path_is_reported_with_its_step():
    torch.manual_seed(0)
    model = TurnsNaN(radius=2.0)
    x = torch.zeros(2, 12)
    message = (r"output \(log-probabilities\) of 2 path\(s\) became NaN or inf by step 8 "
               r"of the vertical")
    with pytest.raises(FloatingPointError, match=message):
        vertical_path(model, x, steps=500, step_size=0.5, check_every=4, progress=False)
    with pytest.raises(FloatingPointError, match="at the end of the vertical paths"):
        vertical_path(model, x, steps=5, step_size=0.5, check_every=100, progress=False)


def test_stop_rule_may_return_a_one_element_tensor_but_nothing_else(pair):
    kw = dict(max_steps=20, tol=None, check_every=2, progress=False)
    result = horizontal_path(*pair, stop=lambda t, d: torch.tensor(t >= 4), **kw)
    assert result.steps_taken.tolist() == [4, 4, 4]
    with pytest.raises(TypeError, match=r"one-element tensor.*shape \(3,\)"):
        horizontal_path(*pair, stop=lambda t, d: d < 1, **kw)
    with pytest.raises(TypeError, match="must return True or False, got int"):
        horizontal_path(*pair, stop=lambda t, d: 1, **kw)


def test_whole_numbers_of_any_type_count_as_step_counts(pair):
    import numpy as np

    result = horizontal_path(*pair, max_steps=3.0, tol=None, check_every=np.int64(2),
                             progress=False)
    assert result.steps_taken.tolist() == [3, 3, 3] and result.distance.shape == (3, 4)


def test_quiet_forward_mode_hides_only_the_jit_script_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_forward_mode():
            warnings.warn("`torch.jit.script` is deprecated. Please switch to", FutureWarning)
            warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else"]
