"""log p(x) three ways on a trained 2-D latent VAE: the bounds' order, the gap identity, the samplers' spreads."""
import json

import numpy as np
import pytest
from scipy.special import logsumexp

from minivae import cli
from minivae.app import run_checkpoint, runconfig, training
from minivae.app.data import STATIC_SEED, Pixels, binarize_static, load_digits
from minivae.app.figures import Sizes, write_figures
from minivae.app.loading import load_model_and_data, train_small_model
from minivae.distributions import DiagonalNormal
from minivae.errors import MinivaeError
from minivae.likelihood import (bound_gap, importance_sampled_log_px, kl_standard_normal_monte_carlo,
                                log_mean_exp_in_chunks, log_px_importance, log_px_quadrature, posterior_on_grid,
                                spread_across_seeds)
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE
from runs import skip_figures

EXAMPLES = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bound_gap_model")
    model, _ = train_small_model(out, epochs=30)
    return model, load_digits().test_x[:EXAMPLES], out / "checkpoint.npz"


@pytest.fixture(scope="module")
def result(trained):
    model, x, _ = trained
    return bound_gap(model, x, grid_size=101, sample_counts=(1, 10, 100, 1000), seeds=8, elbo_samples=4000)


def test_elbo_below_importance_bound_below_exact(result):
    assert result.ordered.all(), (result.elbo, result.bound, result.exact)
    assert result.elbo.mean() < result.bound.mean() < result.exact.mean() + 0.01


def test_gap_is_kl_to_the_exact_posterior(result):
    """log p(x) - ELBO = KL(q || p(z|x)), within 4 SE of the ELBO plus the quadrature error."""
    assert np.all(result.kl > 0)
    assert np.all(np.abs(result.gap - result.kl) <= result.gap_tolerance), (result.gap, result.kl)


def test_naive_spread_shrinks_far_more_slowly(result):
    """At every n the prior sampler spreads wider; with few samples, more than ten times wider."""
    naive, weighted = result.spread(result.naive), result.spread(result.weighted)
    assert np.all(naive > 2 * weighted), (naive, weighted)
    assert naive[0] > 10 * weighted[0], (naive, weighted)


def test_importance_estimate_rises_with_k_on_average(trained):
    """E log p_K is non-decreasing in K (Burda et al. 2016, Theorem 1), up to 3 standard errors of each step."""
    model, x, _ = trained
    estimates = spread_across_seeds(log_px_importance, model, x, (1, 3, 10, 100, 1000), 10).reshape(5, -1)
    steps = np.diff(estimates, axis=0)
    standard_errors = steps.std(axis=1, ddof=1) / np.sqrt(steps.shape[1])
    assert np.all(steps.mean(axis=1) >= -3 * standard_errors), (steps.mean(axis=1), standard_errors)


def test_closed_form_kl_matches_monte_carlo(trained):
    model, x, _ = trained
    with no_grad():
        q = DiagonalNormal(*model.encode(Tensor(x)))
        closed = q.kl_standard_normal().numpy()
    estimate, se = kl_standard_normal_monte_carlo(q, 20_000, np.random.default_rng(0))
    assert np.all(np.abs(closed - estimate) < 4 * se), (closed, estimate, se)


def test_quadrature_converges_with_grid_size(trained):
    model, x, _ = trained
    values = [log_px_quadrature(model, x[:3], n) for n in (13, 26, 51, 101, 201)]
    errors = [np.max(np.abs(v - values[-1])) for v in values[:-1]]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3, errors


def test_grid_posterior_is_a_distribution(trained):
    model, x, _ = trained
    grid = posterior_on_grid(model, x, grid_size=51)
    np.testing.assert_allclose(grid.mass.sum(axis=1), 1.0, rtol=1e-9)
    assert grid.points.shape == (51 * 51, 2)


def test_grid_chunks_do_not_change_the_posterior(trained):
    """The 51 x 51 points in chunks of 100 (the last one a single point) give what one chunk gives, up to float32
    rounding of products of another shape."""
    model, x, _ = trained
    np.testing.assert_allclose(posterior_on_grid(model, x, grid_size=51, chunk=100).log_joint,
                               posterior_on_grid(model, x, grid_size=51).log_joint, rtol=1e-6)


def test_quadrature_refuses_three_latent_dimensions():
    model = VAE((64, 8), 3, (8, 64))
    with pytest.raises(MinivaeError, match="1 or 2"):
        log_px_quadrature(model, np.zeros((1, 64)))


def test_chunks_do_not_change_the_estimate(trained):
    """Chunks of 7 samples draw the same numbers as one chunk of 100, so the answer is the same."""
    model, x, _ = trained
    small = log_px_importance(model, x, 100, np.random.default_rng(3), chunk=7)
    whole = log_px_importance(model, x, 100, np.random.default_rng(3), chunk=100)
    np.testing.assert_allclose(small, whole, rtol=1e-6)


def test_log_mean_exp_in_chunks_is_stable_far_from_zero():
    values = np.random.default_rng(0).normal(-1000, 5, size=(50, 3))
    chunks = iter(np.array_split(values, [8, 16, 24, 32, 40, 48]))
    result = log_mean_exp_in_chunks(lambda m: next(chunks), 50, 8)
    np.testing.assert_allclose(result, logsumexp(values, axis=0) - np.log(50))


def test_test_images_stay_uint8_and_score_as_their_float32_rows(trained):
    model, _, checkpoint = trained
    _, _, x = load_model_and_data(checkpoint)
    assert isinstance(x, Pixels) and x.stored.dtype == np.uint8 and len(x) == 359
    x = x.subset(slice(20))
    np.testing.assert_array_equal(importance_sampled_log_px(model, x, 30, seed=0, batch_size=8),
                                  importance_sampled_log_px(model, np.asarray(x), 30, seed=0, batch_size=8))


def test_a_binarized_run_is_scored_on_one_fixed_binarization_kept_as_uint8(tmp_path, monkeypatch):
    skip_figures(monkeypatch)
    config = runconfig.TrainConfig(hidden=(8,), epochs=1, binarize="dynamic", out=str(tmp_path))
    training.train(config, progress=False, log=lambda line: None)
    _, _, x = load_model_and_data(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert x.stored.dtype == np.uint8 and x.divisor == 1
    expected = binarize_static(np.asarray(load_digits().test_x), np.random.default_rng(STATIC_SEED))
    np.testing.assert_array_equal(x[:], expected, strict=True)


def _run(argv):
    """``minivae ARGV`` in this process; its exit status."""
    return cli.main(argv)


def test_evaluate_reports_elbo_and_importance_sampled_nll(trained, capsys):
    _, _, checkpoint = trained
    assert _run(["evaluate", str(checkpoint), "--iw-samples", "50", "--batch-size", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    elbo = float(lines[1].split(": ")[1].split()[0])
    nll = float(lines[3].split(": ")[1].split()[0])
    assert lines[0].startswith("digits test images from scikit-learn (bundled): 359 examples; 1 thread (")
    assert "noise seed 1, batches of 100; training's epoch lines drew another estimate" in lines[2]
    assert "noise seed 1:" in lines[3] and 0 < nll < -elbo  # L_50 >= ELBO: the tighter bound


def test_evaluate_prints_the_test_elbo_of_trainings_last_epoch_line(trained, capsys):
    """The checkpoint's seed and batch size by default: the same draws, the same number; another seed, another."""
    _, _, checkpoint = trained
    last = json.loads((checkpoint.parent / "metrics.jsonl").read_text().splitlines()[-1])["test_elbo"]
    assert _run(["evaluate", str(checkpoint)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"test ELBO (K=1): {last:.3f} nats per example")
    assert lines[2].endswith("training's own draws, so its last epoch line printed this number")
    assert _run(["evaluate", str(checkpoint), "--seed", "7"]) == 0
    assert not capsys.readouterr().out.splitlines()[1].startswith(f"test ELBO (K=1): {last:.3f}")


def test_bound_gap_without_a_checkpoint_prints_the_numbers_of_figure_bound_gap(tmp_path, capsys):
    """Its own model (seed --seed) and noise: `minivae figures --seed S` at the same sizes prints the same bounds."""
    sizes = {"epochs": 2, "examples": 2, "seeds": 3, "max_samples": 100, "grid_size": 31}
    argv = ["bound-gap", "--seed", "3", "--out", str(tmp_path / "gap")]
    for name, value in sizes.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    assert _run(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    figure = write_figures(tmp_path / "figures", Sizes(**sizes), seed=3, names=("bound_gap",), log=lambda line: None)
    elbo, bound, exact = figure["bound_gap"]["bounds"].mean(axis=1)
    assert any(line.startswith(f"mean ELBO {elbo:.3f} <= L_100 {bound:.3f} <= log p(x) {exact:.3f} nats")
               for line in printed), printed
    gap = tmp_path / "gap"
    written = [gap / "bound_gap.png", gap / "bound_gap_spread.png", gap / "model" / "checkpoint.npz"]
    assert printed[-1] == f"wrote {', '.join(map(str, written))}"
    assert sorted(path.name for path in gap.iterdir()) == ["bound_gap.png", "bound_gap_spread.png", "model"]


def test_bound_gap_command_writes_its_figure(trained, tmp_path, capsys):
    _, _, checkpoint = trained
    argv = ["bound-gap", "--checkpoint", str(checkpoint), "--examples", "3", "--max-samples", "100", "--seeds", "3",
            "--grid-size", "51", "--out", str(tmp_path)]
    assert _run(argv) == 0
    assert "KL(q || p(z|x)) within tol for 3/3" in capsys.readouterr().out
    assert (tmp_path / "bound_gap.png").stat().st_size > 0
    assert (tmp_path / "bound_gap_spread.png").stat().st_size > 0
