import pytest
import torch

import leafkit


def test_mnist_cnn_matches_the_paper():
    model = leafkit.MnistCNN()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (128, 9216), (128,),
                      (10, 128), (10,)]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_models_rebuild_from_their_config():
    torch.manual_seed(0)
    for model in (leafkit.MnistCNN(channels=(4, 8), hidden=16, activation_name="tanh"),
                  leafkit.MLP(12, hidden=(7, 5), num_classes=3, activation_name="gelu")):
        clone = leafkit.build_model(model.config)
        clone.load_state_dict(model.state_dict())
        x = torch.randn(4, 1, 28, 28) if model.config["arch"] == "mnist_cnn" else torch.randn(4, 12)
        torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("name", ["relu", "tanh", "softplus", "gelu", "sigmoid"])
def test_mlp_activations(name):
    model = leafkit.MLP(6, hidden=(5,), num_classes=4, activation_name=name)
    assert model(torch.randn(3, 2, 3)).shape == (3, 4)  # inputs of any shape are flattened


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        leafkit.MLP(4, activation_name="swish")
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        leafkit.MnistCNN()(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match="expects 6 input features"):
        leafkit.MLP(6)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown architecture"):
        leafkit.build_model({"arch": "resnet"})


def test_dropout_acts_in_training_only_and_survives_a_rebuild():
    MnistCNN, build_model = leafkit.MnistCNN, leafkit.build_model
    torch.manual_seed(0)
    model = MnistCNN(dropout=True)
    x = torch.rand(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # two dropout masks
    model.eval()
    plain = build_model({k: v for k, v in model.config.items() if k != "dropout"})
    plain.load_state_dict(model.state_dict())  # same weights: dropout layers own none
    plain.eval()
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    assert isinstance(build_model(model.config).drop2, torch.nn.Dropout)
    assert "dropout" not in MnistCNN().config  # the reference checkpoint's key is unchanged
