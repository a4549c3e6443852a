"""Score-function and reparameterization gradients: closed forms on a 1-D toy, agreement on a real VAE."""
import argparse

import numpy as np
import pytest

from minivae.commands.estimators import add_arguments as add_estimators_arguments, run as run_estimators
from minivae.errors import MinivaeError
from minivae.estimators import (agreement, elbo_problem, estimate, estimators_for, gradient_statistics,
                                leave_one_out_mean, quadratic_exact_gradient, quadratic_problem, quadratic_variances)
from minivae.vae import VAE

MU, SIGMA, C = 0.5, 0.8, -0.5
COPIES = 20_000


def _variance_standard_error(values):
    """The sampling error of a sample variance: sqrt((m4 - s^4) / N), from the sample's own moments."""
    centred = values - values.mean()
    return np.sqrt((np.mean(centred**4) - np.var(centred) ** 2) / len(values))


@pytest.mark.parametrize("estimator,k", [(e, k) for k in (1, 2, 10, 50) for e in estimators_for(k)])
def test_quadratic_toy_matches_closed_forms(estimator, k):
    """COPIES independent 1-D problems in one pass: mean = exact gradient, variance = the closed form."""
    exact_variance = quadratic_variances(MU, SIGMA, C, k)
    grads = estimate(quadratic_problem(MU, SIGMA, C, copies=COPIES), estimator, k, np.random.default_rng(k))
    for name, exact_mean in quadratic_exact_gradient(MU, SIGMA, C).items():
        values = grads[name].ravel()
        variance = exact_variance[estimator][name]
        assert abs(values.mean() - exact_mean) < 4 * np.sqrt(variance / COPIES), name
        assert abs(values.var(ddof=1) - variance) < 4 * _variance_standard_error(values), name


def test_toy_ranks_the_estimators():
    """On the toy the closed forms already order them: RP < SF with baseline < SF."""
    v = quadratic_variances(MU, SIGMA, C, samples=10)
    for name in ("mu", "sigma"):
        assert v["reparameterization"][name] < v["score function + baseline"][name] < v["score function"][name]


def test_leave_one_out_mean_excludes_the_sample_itself():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])
    np.testing.assert_allclose(leave_one_out_mean(values), [[4.0, 40.0], [3.5, 35.0], [1.5, 15.0]])
    with pytest.raises(MinivaeError, match="K >= 2"):
        leave_one_out_mean(values[:1])


@pytest.fixture(scope="module")
def tiny_vae_statistics():
    from minivae.app.data import load_digits
    x = load_digits().train_x[:8]
    model = VAE((64, 16), 2, (16, 64), rng=np.random.default_rng(0))
    return {kl: gradient_statistics(elbo_problem(model, x, kl), 10, 300, np.random.default_rng(0))
            for kl in ("closed", "sampled")}


@pytest.mark.parametrize("kl", ["closed", "sampled"])
def test_vae_estimators_agree_within_standard_errors(tiny_vae_statistics, kl):
    """Per element z = (mean_SF - mean_RP) / joint SE: with equal means ~99.7% lie within 3."""
    stats = tiny_vae_statistics[kl]["all"]
    for name in ("score function", "score function + baseline"):
        z = agreement(stats[name], stats["reparameterization"])
        assert z.fraction_within >= 0.97, (name, z.fraction_within)
        assert 0.3 < z.mean_square < 3, (name, z.mean_square)


@pytest.mark.parametrize("kl", ["closed", "sampled"])
def test_score_function_has_far_larger_variance(tiny_vae_statistics, kl):
    for group, stats in tiny_vae_statistics[kl].items():
        ratio = stats["score function"].total_variance / stats["reparameterization"].total_variance
        assert ratio > 10, (group, ratio)


def test_baseline_reduces_score_function_variance(tiny_vae_statistics):
    stats = tiny_vae_statistics["closed"]["all"]
    assert stats["score function + baseline"].total_variance < 0.1 * stats["score function"].total_variance


def test_estimators_command_prints_table_and_writes_figure(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_estimators_arguments(parser)
    args = parser.parse_args(["--samples-n", "5", "--k", "1,3", "--batch-size", "4", "--out", str(tmp_path)])
    assert run_estimators(args) == 0
    out = capsys.readouterr().out
    assert "K = 3" in out and "score function + baseline" in out
    assert out.splitlines()[-1] == f"wrote {tmp_path / 'estimator_variance_closed_kl.png'}"
    assert [path.name for path in tmp_path.iterdir()] == ["estimator_variance_closed_kl.png"]


def test_estimators_command_refuses_one_estimate(tmp_path):
    parser = argparse.ArgumentParser()
    add_estimators_arguments(parser)
    with pytest.raises(MinivaeError, match="at least 2"):
        run_estimators(parser.parse_args(["--samples-n", "1", "--out", str(tmp_path)]))


def test_estimators_command_explains_its_columns(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_estimators_arguments(parser)
    assert run_estimators(parser.parse_args(["--samples-n", "2", "--k", "2", "--batch-size", "2",
                                             "--out", str(tmp_path)])) == 0
    legend = capsys.readouterr().out.split("\nK = ")[0]
    for column in ("total var", "SNR", "var / RP", "|z|<=3", "mean z^2"):
        assert f"\n  {column} " in legend, column
