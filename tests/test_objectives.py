"""The importance-weighted bound L_K and the KL weight beta: values, gradients, ordering in K, warm-up and resume."""
import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from minivae import backend, likelihood
from minivae.app import loop, run_checkpoint, runconfig
from minivae.app.data import load_digits
from minivae.app.loading import train_small_model
from minivae.errors import MinivaeError
from minivae.gradcheck import check_grads
from minivae.likelihood import log_px_quadrature
from minivae.nn import Module, functional_call
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE
from strategies import binary, normal
from tests.runs import assert_same_run, run_cli, skip_figures, train_argv

B = 4


def tiny_vae(likelihood="bernoulli"):
    return VAE((6, 5), 2, (5, 6), activation="tanh", likelihood=likelihood, sigma=0.7,
               rng=np.random.default_rng(0), dtype=np.float64)


def numpy_bound(model, x, eps, beta=1.0):
    """L_K per example from the model's encoder and decoder outputs, with SciPy's densities and logsumexp."""
    with no_grad():
        mu, logvar = (t.numpy() for t in model.encode(Tensor(x)))
        z = mu + np.exp(0.5 * logvar) * eps
        logits = model.decode(Tensor(z)).numpy()
    log_px_given_z = (x * logits - np.logaddexp(0, logits)).sum(axis=-1)
    log_pz = norm.logpdf(z).sum(axis=-1)
    log_qz = norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(axis=-1)
    return logsumexp(log_px_given_z + beta * (log_pz - log_qz), axis=0) - math.log(len(eps))


# ----- The bound's value and gradient -----

@pytest.mark.parametrize("k, beta", [(1, 1.0), (3, 1.0), (5, 0.3)])
def test_bound_matches_numpy(k, beta):
    model, x, eps = tiny_vae(), binary((B, 6), 1), normal((k, B, 2), seed=2)
    terms = model.iwae(x, eps=eps, beta=beta)
    assert terms.bound.shape == (B,)
    np.testing.assert_allclose(terms.bound.numpy(), numpy_bound(model, x, eps, beta), rtol=1e-10)


def test_l1_is_the_elbo_with_the_kl_of_the_same_sample():
    """Same eps: L_1 = log p(x|z) - (log q(z|x) - log p(z)), and the reconstruction and KL are the ELBO's."""
    model, x, eps = tiny_vae(), binary((B, 6), 1), normal((1, B, 2), seed=2)
    bound, elbo = model.iwae(x, eps=eps), model.elbo(x, eps=eps)
    np.testing.assert_array_equal(bound.reconstruction.numpy(), elbo.reconstruction.numpy())
    np.testing.assert_array_equal(bound.kl.numpy(), elbo.kl.numpy())
    z = model.reparameterize(*model.encode(Tensor(x)), eps=eps).numpy()[0]
    mu, logvar = (t.numpy() for t in model.encode(Tensor(x)))
    sampled_kl = (norm.logpdf(z, mu, np.exp(0.5 * logvar)) - norm.logpdf(z)).sum(axis=-1)
    np.testing.assert_allclose(bound.bound.numpy(), elbo.reconstruction.numpy() - sampled_kl, rtol=1e-12)


def test_l1_averages_to_the_closed_form_elbo():
    """Draw by draw, L_1 - ELBO = KL - (log q(z|x) - log p(z)): zero on average, within 4 standard errors."""
    model, x = tiny_vae(), binary((B, 6), 1)
    differences = np.stack([model.iwae(x, eps=eps).bound.numpy() - model.elbo(x, eps=eps).elbo.numpy()
                            for eps in normal((3000, 1, B, 2), seed=3)])
    se = differences.std(axis=0, ddof=1) / math.sqrt(len(differences))
    assert np.all(np.abs(differences.mean(axis=0)) < 4 * se), (differences.mean(axis=0), se)
    assert np.all(se > 0)


class Bound(Module):
    """``VAE.iwae``'s bound as a module's forward, for ``functional_call``."""

    def __init__(self, vae, beta):
        self.vae, self.beta = vae, beta

    def forward(self, x, eps):
        return self.vae.iwae(x, eps=eps, beta=self.beta).bound


@pytest.mark.parametrize("likelihood, beta", [("bernoulli", 0.3), ("gaussian", 1.0)])
def test_bound_gradients_match_finite_differences(likelihood, beta):
    module = Bound(tiny_vae(likelihood), beta)
    x = binary((B, 6), 1) if likelihood == "bernoulli" else normal((B, 6), 1)
    names, params = zip(*module.named_parameters())

    def bound_of_parameters(*tensors):
        return functional_call(module, dict(zip(names, tensors)), x, eps=normal((4, B, 2), seed=2))
    assert len(check_grads(bound_of_parameters, *params).inputs) == len(params)


# ----- Tighter as K grows, below log p(x) -----

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model, _ = train_small_model(tmp_path_factory.mktemp("iwae_model"), epochs=15)
    return model, load_digits().test_x[:20]


def test_bound_rises_with_k_and_stays_below_log_px(trained):
    """E L_1 < E L_5 < E L_50 <= log p(x) (Burda et al. 2016, Theorem 1), each step beyond 3 standard errors."""
    model, x = trained
    rng = backend.get_backend().kernels.make_rng(0)
    with no_grad():
        bounds = np.stack([np.stack([model.iwae(Tensor(x), samples=k, rng=rng).bound.numpy() for _ in range(100)])
                           for k in (1, 5, 50)])  # (K values, repeats, examples)
    steps = np.diff(bounds, axis=0).reshape(2, -1)
    step_se = steps.std(axis=1, ddof=1) / math.sqrt(steps.shape[1])
    assert np.all(steps.mean(axis=1) > 3 * step_se), (steps.mean(axis=1), step_se)
    exact = log_px_quadrature(model, x)
    gap = (exact - bounds[-1]).ravel()
    assert gap.mean() > -3 * gap.std(ddof=1) / math.sqrt(gap.size), gap.mean()


# ----- beta and its warm-up -----

def test_beta_weighs_the_kl_in_the_elbo_objective():
    model, x = tiny_vae(), Tensor(binary((B, 6), 1))
    rng = backend.get_backend().kernels.make_rng
    maximized, terms = model.objective(x, "elbo", 2, rng(0), beta=0.25)
    np.testing.assert_array_equal(terms.elbo.numpy(), model.elbo(x, samples=2, rng=rng(0)).elbo.numpy())
    np.testing.assert_allclose(maximized.numpy(), (terms.reconstruction - 0.25 * terms.kl).numpy(), rtol=1e-15)


def test_an_unknown_objective_is_a_one_line_error():
    with pytest.raises(MinivaeError, match="unknown objective 'elbo2'; use one of elbo, iwae"):
        tiny_vae().objective(binary((B, 6), 1), "elbo2", rng=backend.get_backend().kernels.make_rng(0))


@pytest.mark.parametrize("warmup, expected", [
    (0, [0.5] * 8),
    (2, [0.5 * t / 6 for t in range(1, 7)] + [0.5, 0.5]),
])
def test_kl_weight_rises_step_by_step_to_beta_at_the_end_of_the_warmup(warmup, expected):
    config = runconfig.TrainConfig(beta=0.5, kl_warmup=warmup)
    weights = [loop.kl_weight(config, epoch, step, 3) for epoch in (1, 2, 3) for step in (1, 2, 3)][:8]
    np.testing.assert_allclose(weights, expected, rtol=1e-15)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


WARMUP = ("--objective", "iwae", "--samples", "3", "--beta", "0.5", "--kl-warmup", "4")


def test_the_burda_schedule_lowers_the_rate_by_10_to_the_minus_1_7_each_stage_of_3_to_the_i_epochs():
    config = runconfig.TrainConfig(lr=1e-3, lr_schedule="burda")
    stages = [0, 1, 1, 1] + [2] * 9 + [3] * 27 + [4]
    rates = [loop.learning_rate(config, epoch) for epoch in range(1, 42)]
    np.testing.assert_allclose(rates, [1e-3 * 10 ** (-i / 7) for i in stages], rtol=1e-15)
    assert loop.learning_rate(runconfig.TrainConfig(lr=1e-3), 500) == 1e-3


def test_a_run_resumed_mid_warmup_is_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    """3 epochs of a 4-epoch warm-up, resumed to 5: also across the learning rate's stages 1 (epochs 2-4) and 2."""
    skip_figures(monkeypatch)
    schedule = (*WARMUP, "--lr-schedule", "burda")
    for argv in (train_argv(tmp_path / "straight", 5, *schedule), train_argv(tmp_path / "resumed", 3, *schedule),
                 train_argv(tmp_path / "resumed", 5, *schedule, "--resume",
                            str(tmp_path / "resumed" / run_checkpoint.CHECKPOINT_NAME))):
        status, _, err = run_cli(argv, capsys)
        assert status == 0, err
    assert_same_run(tmp_path / "straight" / run_checkpoint.CHECKPOINT_NAME, tmp_path / "resumed" / run_checkpoint.CHECKPOINT_NAME)
    rows = metrics(tmp_path / "resumed")
    np.testing.assert_allclose([row["beta"] for row in rows], [0.125, 0.25, 0.375, 0.5, 0.5], rtol=1e-15)
    _, _, config = run_checkpoint.read_training_checkpoint(tmp_path / "resumed" / run_checkpoint.CHECKPOINT_NAME)
    assert (config.objective, config.samples, config.beta, config.kl_warmup) == ("iwae", 3, 0.5, 4)


def test_the_training_objective_uses_beta_and_the_test_elbo_does_not(tmp_path, capsys, monkeypatch):
    skip_figures(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 2, "--beta", "0.25"), capsys)
    assert status == 0, err
    for row in metrics(tmp_path):
        assert row["beta"] == 0.25
        assert row["train_objective"] == pytest.approx(row["train_reconstruction"] - 0.25 * row["train_kl"])
        assert row["test_elbo"] == pytest.approx(row["test_reconstruction"] - row["test_kl"])
    model, _, _ = run_checkpoint.load_trained(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    data = runconfig.prepare_data(runconfig.TrainConfig())
    test_elbo = likelihood.evaluate_elbo(model, data.test_x, 128, samples=1, seed=1)[0]
    assert metrics(tmp_path)[-1]["test_elbo"] == test_elbo


@pytest.mark.parametrize("options, line, name", [
    ([], "objective: ELBO (the ELBO, 1 sample of z per image)", None),
    (["--objective", "iwae", "--samples", "3"],
     "objective: L_3 (the importance-weighted bound, K = 3 samples of z per image; Burda et al. 2016)", "L_3"),
    (["--beta", "0.5", "--kl-warmup", "2"],
     "objective: beta-ELBO (the ELBO, 1 sample of z per image; its KL weighted by beta rising from 0 to 0.5 over "
     "2 epochs)", "beta-ELBO")])
def test_the_output_names_the_objective_and_each_epoch_line_gives_its_value(tmp_path, capsys, monkeypatch, options,
                                                                            line, name):
    skip_figures(monkeypatch)
    status, out, err = run_cli(train_argv(tmp_path, 2, *options), capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1] == line
    rows = metrics(tmp_path)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row, epoch_line in zip(rows, lines[2:4], strict=True):
        trained = "" if name is None else f"{name} {row['train_objective']:9.3f}  "
        assert epoch_line.startswith(f"epoch {row['epoch']:3d}  train {trained}ELBO {row['train_elbo']:9.3f} ")


def iwae_curve(out, name, capsys):
    status, _, err = run_cli(train_argv(out, 3, "--backend", name, *WARMUP), capsys)
    backend.set_backend("numpy")
    assert status == 0, err
    return [(row["train_objective"], row["test_elbo"]) for row in metrics(out)]


def test_numba_trains_the_warmed_up_iwae_along_the_numpy_curve(tmp_path, capsys, monkeypatch):
    skip_figures(monkeypatch)
    numpy_curve = iwae_curve(tmp_path / "numpy", "numpy", capsys)
    np.testing.assert_allclose(iwae_curve(tmp_path / "numba", "numba", capsys), numpy_curve, rtol=1e-4)
    assert numpy_curve[-1][1] > numpy_curve[0][1]
