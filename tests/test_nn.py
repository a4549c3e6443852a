"""nn: layers against NumPy, init statistics, state dicts, functional_call, bias_act."""
import math

import numpy as np
import pytest

from minivae import ops
from minivae.errors import MinivaeError
from minivae.nn import MLP, Linear, Module, Parameter, ReLU, Sigmoid, Tanh, functional_call
from minivae.tensor import ShapeError, Tensor

NUMPY_ACTIVATIONS = {
    "identity": lambda a: a,
    "relu": lambda a: np.maximum(a, 0),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
}


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- Forward passes against NumPy -----

@pytest.mark.parametrize("activation", NUMPY_ACTIVATIONS)
def test_linear_forward_is_x_at_w_plus_b_then_activation(activation):
    layer = Linear(5, 3, activation=activation, dtype=np.float64)
    x = normal((4, 5))
    expected = NUMPY_ACTIVATIONS[activation](x @ layer.weight.numpy() + layer.bias.numpy())
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-12)


def test_linear_takes_a_plain_array_in_its_own_dtype():
    out = Linear(5, 3)(normal((4, 5)))
    assert out.dtype == np.float32 and out.shape == (4, 3)


def test_linear_rejects_a_wrong_input_shape_in_one_line():
    with pytest.raises(ShapeError, match=r"Linear\(5, 3\): input of shape \(4, 6\), expected \(batch, 5\)"):
        Linear(5, 3)(normal((4, 6)))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_forward_matches_a_numpy_loop(activation):
    mlp = MLP((6, 5, 4, 2), activation=activation, final_activation="sigmoid", dtype=np.float64)
    x = normal((3, 6))
    h = x
    for i, layer in enumerate(mlp.layers):
        name = "sigmoid" if i == len(mlp.layers) - 1 else activation
        h = NUMPY_ACTIVATIONS[name](h @ layer.weight.numpy() + layer.bias.numpy())
    np.testing.assert_allclose(mlp(x).numpy(), h, rtol=1e-12)


def test_mlp_fuses_each_activation_into_its_layer():
    mlp = MLP((6, 5, 2), activation="tanh")
    assert [layer.activation for layer in mlp.layers] == ["tanh", "identity"]
    out = mlp(Tensor(normal((3, 6)), requires_grad=True))
    assert out._op == "bias_act[identity]"
    assert out._parents[0]._op == "matmul"


@pytest.mark.parametrize("module, reference", [
    (ReLU(), NUMPY_ACTIVATIONS["relu"]), (Tanh(), np.tanh), (Sigmoid(), NUMPY_ACTIVATIONS["sigmoid"])])
def test_activation_modules(module, reference):
    x = normal((3, 4))
    np.testing.assert_allclose(module(x).numpy(), reference(x), rtol=1e-12)


def test_unknown_activation_and_init_are_one_line_errors():
    with pytest.raises(MinivaeError, match="unknown activation 'gelu'; use one of identity, relu, tanh, sigmoid"):
        Linear(2, 2, activation="gelu")
    with pytest.raises(MinivaeError, match="unknown init 'xavier'; use one of pytorch, glorot, he"):
        Linear(2, 2, init="xavier")
    with pytest.raises(MinivaeError, match="Linear: in_features must be a positive integer, got 0"):
        Linear(0, 2)


# ----- Initialization -----

IN, OUT = 400, 300


def test_pytorch_init_is_uniform_within_one_over_sqrt_fan_in():
    layer = Linear(IN, OUT, init="pytorch", rng=np.random.default_rng(1), dtype=np.float64)
    bound = 1 / math.sqrt(IN)
    for p in (layer.weight.numpy(), layer.bias.numpy()):
        assert np.abs(p).max() <= bound
    w = layer.weight.numpy()
    assert np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # Var U(-a, a) = a^2 / 3


def test_glorot_init_is_uniform_within_sqrt_6_over_fan_in_plus_fan_out():
    layer = Linear(IN, OUT, init="glorot", rng=np.random.default_rng(1), dtype=np.float64)
    bound = math.sqrt(6 / (IN + OUT))
    w = layer.weight.numpy()
    assert np.abs(w).max() <= bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not layer.bias.numpy().any()


def test_he_init_is_normal_with_variance_2_over_fan_in():
    layer = Linear(IN, OUT, init="he", rng=np.random.default_rng(1), dtype=np.float64)
    w = layer.weight.numpy()
    assert w.mean() == pytest.approx(0, abs=0.003)
    assert w.std() == pytest.approx(math.sqrt(2 / IN), rel=0.02)
    assert not layer.bias.numpy().any()


def test_init_follows_the_generator_and_the_dtype():
    a, b = (Linear(3, 2, rng=np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert a.weight.dtype == np.float32 and isinstance(a.weight, Parameter) and a.weight.requires_grad
    assert Linear(3, 2, dtype=np.float64).bias.dtype == np.float64


# ----- Module: names, flags, state dicts -----

class TwoLayers(Module):
    def __init__(self, hidden=4):
        self.first = MLP((3, hidden, 2), rng=np.random.default_rng(0))
        self.heads = [Linear(2, 1), Linear(2, 1)]
        self.scale = Parameter(np.ones(1), dtype=np.float32)
        self.note = "not a module"


def test_named_parameters_are_dotted_paths_in_attribute_order():
    names = [name for name, _ in TwoLayers().named_parameters()]
    assert names == ["scale", "first.layers.0.weight", "first.layers.0.bias", "first.layers.1.weight",
                     "first.layers.1.bias", "heads.0.weight", "heads.0.bias", "heads.1.weight",
                     "heads.1.bias"]


def test_a_shared_parameter_is_listed_once():
    model = TwoLayers()
    model.heads[1].weight = model.heads[0].weight
    assert len(model.parameters()) == len(list(model.named_parameters())) - 1


def test_train_and_eval_reach_every_submodule():
    model = TwoLayers()
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_zeroes_every_gradient():
    model = TwoLayers()
    model.first(normal((2, 3))).sum().backward()
    model.zero_grad()
    assert all(not p.grad.any() for p in model.first.parameters())


def test_state_dict_round_trip():
    source, target = TwoLayers(), TwoLayers()
    target.first = MLP((3, 4, 2), rng=np.random.default_rng(99))
    state = source.state_dict()
    target.load_state_dict(state)
    x = normal((5, 3))
    np.testing.assert_array_equal(target.first(x).numpy(), source.first(x).numpy())
    state["scale"][...] = 5  # a copy: changing it leaves the model alone
    assert source.scale.numpy()[0] == 1


def test_load_state_dict_names_the_shape_mismatch():
    with pytest.raises(MinivaeError) as caught:
        TwoLayers(hidden=5).load_state_dict(TwoLayers(hidden=4).state_dict())
    assert str(caught.value) == ("checkpoint does not fit this model: first.layers.0.weight has shape "
                                 "(3, 4) in the checkpoint but (3, 5) here")


def test_load_state_dict_names_a_missing_and_an_extra_entry():
    state = TwoLayers().state_dict()
    del state["heads.1.bias"]
    with pytest.raises(MinivaeError, match="checkpoint does not fit this model: it has no heads.1.bias$"):
        TwoLayers().load_state_dict(state)
    state = {**TwoLayers().state_dict(), "heads.2.weight": np.zeros((2, 1))}
    with pytest.raises(MinivaeError, match="it has heads.2.weight, which this model lacks"):
        TwoLayers().load_state_dict(state)


def test_load_state_dict_writes_in_place():
    model = TwoLayers()
    weight = model.first.layers[0].weight.data
    model.load_state_dict(TwoLayers().state_dict())
    assert model.first.layers[0].weight.data is weight


# ----- functional_call -----

def test_functional_call_sends_gradients_to_the_given_tensors_and_restores():
    layer = Linear(3, 2, dtype=np.float64)
    original = layer.weight
    weight = Tensor(normal((3, 2), seed=1), requires_grad=True)
    x = normal((4, 3))
    out = functional_call(layer, {"weight": weight}, x)
    np.testing.assert_allclose(out.numpy(), x @ weight.numpy() + layer.bias.numpy())
    out.sum().backward()
    np.testing.assert_allclose(weight.grad, x.sum(axis=0)[:, None].repeat(2, axis=1))
    assert layer.weight is original and original.grad is None


def test_functional_call_restores_after_an_error_and_names_unknown_parameters():
    mlp = MLP((3, 2))
    with pytest.raises(MinivaeError, match="MLP has no parameter layers.1.weight; its parameters are "
                                           "layers.0.weight, layers.0.bias"):
        functional_call(mlp, {"layers.1.weight": Tensor(np.zeros((2, 2)))}, normal((1, 3)))
    original = mlp.layers[0].weight
    with pytest.raises(ShapeError):
        functional_call(mlp, {"layers.0.weight": Tensor(np.zeros((5, 2)))}, normal((1, 3)))
    assert mlp.layers[0].weight is original


# ----- bias_act equals its composite, values and gradients -----

COMPOSITES = {
    "identity": lambda pre: pre,
    "relu": ops.relu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
}


@pytest.mark.parametrize("activation", COMPOSITES)
def test_bias_act_equals_add_then_activation_with_gradients(activation):
    def grads(fn):
        x, b = Tensor(normal((4, 3)), requires_grad=True), Tensor(normal(3, seed=1), requires_grad=True)
        out = fn(x, b)
        out.backward(normal((4, 3), seed=2))
        return out.numpy(), x.grad, b.grad

    fused = grads(lambda x, b: ops.bias_act(x, b, activation))
    composite = grads(lambda x, b: COMPOSITES[activation](x + b))
    for a, b in zip(fused, composite):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
