"""The VAE: validation, shapes, the ELBO against NumPy, the whole ELBO gradient-checked, and training."""
import json

import numpy as np
import pytest

from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.gradcheck import check_grads
from minivae.nn import functional_call
from minivae.optim import Adam
from minivae.tensor import ShapeError, Tensor
from minivae.vae import VAE
from strategies import binary, normal

B, K = 4, 3


def make_rng(seed):
    return get_backend().kernels.make_rng(seed)


def tiny_vae(likelihood="bernoulli", activation="tanh", dtype=np.float64):
    """6 -> 5 -> (mu, logvar) of size 2 -> 5 -> 6."""
    return VAE((6, 5), 2, (5, 6), activation=activation, likelihood=likelihood, sigma=0.7,
               rng=np.random.default_rng(0), dtype=dtype)


def data_for(likelihood, seed=1):
    return binary((B, 6), seed) if likelihood == "bernoulli" else normal((B, 6), seed)


# ----- Construction -----

@pytest.mark.parametrize("arguments, message", [
    (((6, 0), 2, (5, 6)), r"VAE: encoder_sizes must be a non-empty list of positive integers such as "
                          r"\(784, 400\), got \(6, 0\)"),
    (((), 2, (5, 6)), "VAE: encoder_sizes must be a non-empty list"),
    (((6, 5), 2, "5,6"), "VAE: decoder_sizes must be a non-empty list"),
    (((6, 5), 0, (5, 6)), "VAE: latent_dim must be a positive integer, got 0"),
    (((6, 5), 2.0, (5, 6)), "VAE: latent_dim must be a positive integer, got 2.0"),
    (((6, 5), 2, (5, 7)), "VAE: the decoder must output what the encoder reads: decoder_sizes ends with 7 "
                          "but encoder_sizes starts with 6"),
])
def test_bad_sizes_are_one_line_errors(arguments, message):
    with pytest.raises(MinivaeError, match=message):
        VAE(*arguments)


@pytest.mark.parametrize("options, message", [
    ({"likelihood": "poisson"}, "VAE: unknown likelihood 'poisson'; use one of bernoulli, gaussian"),
    ({"sigma": 0.0}, "sigma must be a finite number > 0, got 0.0"),
    ({"dtype": np.float16}, "VAE: dtype must be one of float32, float64"),
    ({"dtype": "nonsense"}, "VAE: dtype must be one of float32, float64, got 'nonsense'"),
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"init": "xavier"}, "unknown init 'xavier'"),
    ({"logvar_clamp": 0}, "VAE: logvar_clamp must be None or a finite number > 0, got 0"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(MinivaeError, match=message):
        VAE((6, 5), 2, (5, 6), **options)


def test_parameters_have_canonical_names():
    names = [name for name, _ in VAE((6, 5, 4), 2, (4, 5, 6)).named_parameters()]
    assert names == [
        "encoder.layers.0.weight", "encoder.layers.0.bias", "encoder.layers.1.weight", "encoder.layers.1.bias",
        "fc_heads.weight", "fc_heads.bias",
        "decoder.layers.0.weight", "decoder.layers.0.bias", "decoder.layers.1.weight", "decoder.layers.1.bias",
        "decoder.layers.2.weight", "decoder.layers.2.bias"]


def test_config_is_json_safe_and_rebuilds_the_model():
    model = VAE((6, 5), 2, (5, 6), likelihood="gaussian", sigma=0.5, dtype=np.float64, rng=np.random.default_rng(4))
    config = json.loads(json.dumps(model.config))
    assert config == {"encoder_sizes": [6, 5], "latent_dim": 2, "decoder_sizes": [5, 6], "activation": "relu",
                      "likelihood": "gaussian", "sigma": 0.5, "init": "pytorch", "dtype": "float64",
                      "logvar_clamp": None}
    twin = VAE(**config, rng=np.random.default_rng(4))
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_checkpoint_of_another_size_is_refused_by_name():
    with pytest.raises(MinivaeError) as caught:
        VAE((12, 8), 2, (8, 12)).load_state_dict(VAE((12, 16), 2, (16, 12)).state_dict())
    assert str(caught.value) == ("checkpoint does not fit this model: encoder.layers.0.weight has shape "
                                 "(12, 16) in the checkpoint but (12, 8) here")


def test_a_model_without_hidden_layers_works():
    model = VAE((6,), 2, (6,), dtype=np.float64)
    assert model.elbo(binary((B, 6)), rng=make_rng(0)).elbo.shape == (B,)


# ----- Shapes and the pieces of the ELBO -----

def test_encode_reparameterize_decode_shapes():
    model = tiny_vae()
    mu, logvar = model.encode(binary((B, 6)))
    z = model.reparameterize(mu, logvar, K, make_rng(0))
    assert mu.shape == logvar.shape == (B, 2) and z.shape == (K, B, 2)
    assert model.decode(z).shape == (K, B, 6) and model.decode(mu).shape == (B, 6)


def test_decode_of_stacked_samples_equals_decoding_each():
    model = tiny_vae()
    z = Tensor(normal((K, B, 2)))
    stacked = model.decode(z).numpy()
    for k in range(K):
        np.testing.assert_allclose(stacked[k], model.decode(Tensor(z.numpy()[k])).numpy(), rtol=1e-14)


def test_sample_and_reconstruct_return_numpy_probabilities_or_means():
    bernoulli = tiny_vae(dtype=np.float32)
    samples = bernoulli.sample(5, make_rng(0))
    assert isinstance(samples, np.ndarray) and samples.shape == (5, 6) and samples.dtype == np.float32
    assert np.all((samples > 0) & (samples < 1))
    reconstruction = bernoulli.reconstruct(binary((B, 6)))
    assert isinstance(reconstruction, np.ndarray) and reconstruction.shape == (B, 6)
    gaussian = tiny_vae("gaussian")
    x = normal((B, 6))
    mu, _ = gaussian.encode(x)
    np.testing.assert_array_equal(gaussian.reconstruct(x), gaussian.decode(mu).numpy())


def numpy_elbo(model, x, eps):
    """The ELBO written out in NumPy from the model's weights (tanh hidden layers)."""
    w = model.state_dict()
    h = np.tanh(x @ w["encoder.layers.0.weight"] + w["encoder.layers.0.bias"])
    heads = h @ w["fc_heads.weight"] + w["fc_heads.bias"]
    mu, logvar = np.split(heads, 2, axis=-1)
    z = mu + np.exp(0.5 * logvar) * eps
    hz = np.tanh(z @ w["decoder.layers.0.weight"] + w["decoder.layers.0.bias"])
    out = hz @ w["decoder.layers.1.weight"] + w["decoder.layers.1.bias"]
    if model.config["likelihood"] == "bernoulli":
        log_px = (x * out - np.logaddexp(0, out)).sum(axis=-1)
    else:
        sigma = model.config["sigma"]
        log_px = (-0.5 * ((x - out) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    reconstruction = log_px.mean(axis=0)
    kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=-1)
    return reconstruction - kl, reconstruction, kl


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_matches_numpy(likelihood):
    model, x, eps = tiny_vae(likelihood), data_for(likelihood), normal((K, B, 2), seed=2)
    terms = model.elbo(x, eps=eps)
    for engine, expected in zip((terms.elbo, terms.reconstruction, terms.kl), numpy_elbo(model, x, eps)):
        assert engine.shape == (B,)
        np.testing.assert_allclose(engine.numpy(), expected, rtol=1e-12)


def test_elbo_draws_k_samples_from_the_generator_reproducibly():
    model, x = tiny_vae(), binary((B, 6))
    first, second = model.elbo(x, samples=K, rng=make_rng(5)), model(x, samples=K, rng=make_rng(5))
    np.testing.assert_array_equal(first.elbo.numpy(), second.elbo.numpy())
    eps = get_backend().kernels.standard_normal(make_rng(5), (K, B, 2), np.float64)
    np.testing.assert_array_equal(model.elbo(x, eps=eps).elbo.numpy(), first.elbo.numpy())
    assert np.all(first.kl.numpy() >= 0)


def test_elbo_needs_a_generator_or_eps_and_data_of_the_right_width():
    model = tiny_vae()
    with pytest.raises(MinivaeError, match="rsample needs rng="):
        model.elbo(binary((B, 6)))
    with pytest.raises(ShapeError, match=r"Linear\(6, 5\): input of shape \(4, 7\)"):
        model.elbo(binary((B, 7)), rng=make_rng(0))


def test_float32_model_stays_float32_with_float64_data():
    terms = tiny_vae(dtype=np.float32).elbo(binary((B, 6)), rng=make_rng(0))
    assert terms.elbo.dtype == terms.reconstruction.dtype == terms.kl.dtype == np.float32


# ----- The whole ELBO, gradient-checked w.r.t. every parameter -----

@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_gradients_match_finite_differences(likelihood, activation):
    model, x, eps = tiny_vae(likelihood, activation), data_for(likelihood), normal((K, B, 2), seed=2)
    names, params = zip(*model.named_parameters())

    def elbo_of_parameters(*tensors):
        return functional_call(model, dict(zip(names, tensors)), x, eps=eps).elbo

    report = check_grads(elbo_of_parameters, *params)
    assert len(report.inputs) == len(params)


# ----- Training -----

def test_a_hundred_adam_steps_raise_the_elbo():
    x = binary((8, 12), seed=3).astype(np.float32)
    model = VAE((12, 16), 2, (16, 12), rng=np.random.default_rng(0))
    optimizer = Adam(model.parameters(), lr=1e-2)
    eval_eps = get_backend().kernels.standard_normal(make_rng(1), (16, 8, 2), np.float32)

    def mean_elbo():
        return model.elbo(x, eps=eval_eps).elbo.numpy().mean()

    before, rng = mean_elbo(), make_rng(0)
    for _ in range(100):
        optimizer.zero_grad()
        loss = -model.elbo(x, samples=1, rng=rng).elbo.mean()
        loss.backward()
        optimizer.step()
    after = mean_elbo()
    assert after > before + 1.5, (before, after)


def test_one_head_computes_mu_and_logvar_side_by_side():
    model = VAE((6, 5), 3, (5, 6), dtype=np.float64)
    x = np.random.default_rng(0).random((4, 6))
    mu, logvar = model.encode(x)
    hidden = model.encoder(x).numpy()
    heads = hidden @ model.fc_heads.weight.numpy() + model.fc_heads.bias.numpy()
    np.testing.assert_allclose(np.hstack([mu.numpy(), logvar.numpy()]), heads, rtol=1e-12)
