"""``minivae estimators``: the score-function and reparameterization gradients of the encoder, side by side."""

from minivae.app import plots
from minivae.app.checkpoint import check_writable
from minivae.app.data import DATASET_NAMES
from minivae.app.figures import variance_curves
from minivae.app.loading import load_model_and_data
from minivae.backend import get_backend
from minivae.commands.argtypes import int_list, non_negative_int, positive_int
from minivae.errors import MinivaeError, check_finite
from minivae.estimators import agreement, elbo_problem, estimators_for, gradient_statistics

COLUMNS_LEGEND = """columns:
  total var  sum over the parameters of each one's variance across the N estimates: E||g_hat - g||^2
  SNR        ||mean of the estimates|| / sqrt(total var)
  var / RP   total var over the reparameterization estimator's
  |z|<=3     share of the parameters whose mean is within 3 joint standard errors of reparameterization's,
             z = (mean - RP mean) / sqrt(se^2 + se_RP^2): about 99.7% when both estimate the same gradient
  mean z^2   the mean of z^2 over the parameters: about 1 when both estimate the same gradient"""


def add_arguments(parser):
    parser.add_argument("--checkpoint", default=None, help="a trained model's checkpoint.npz (default: a fresh model)")
    parser.add_argument("--data", choices=DATASET_NAMES, default=None,
                        help="dataset for the batch (default: the checkpoint's, else digits)")
    parser.add_argument("--data-dir", default=None, help="directory holding the IDX files (mnist, fashion-mnist)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="examples in the batch (default 16)")
    parser.add_argument("--samples-n", type=positive_int, default=200,
                        help="N, independent estimates per estimator and K (default 200)")
    parser.add_argument("--k", type=int_list, default=[1, 10, 100], help="samples per estimate, comma-separated")
    parser.add_argument("--kl", choices=("closed", "sampled"), default="closed",
                        help="closed: estimate E_q[log p(x|z)], KL exact (as training does); "
                             "sampled: estimate all of E_q[log p(x,z) - log q(z|x)] (default closed)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the noise")
    parser.add_argument("--out", default="results/estimators",
                        help="directory for estimator_variance_KL_kl.png (KL: closed or sampled)")


def run(args):
    """Print the estimators' statistics per K and parameter group; plot total variance against K."""
    if args.samples_n < 2:
        raise MinivaeError(f"--samples-n {args.samples_n}: a variance needs at least 2 estimates; use e.g. 200")
    out = check_writable(args.out)  # before the work, not after it
    model, _, x = load_model_and_data(args.checkpoint, args.data, args.data_dir, split="train")
    x = x[:args.batch_size]
    problem = elbo_problem(model, x, args.kl)
    rng = get_backend().kernels.make_rng(args.seed)
    print(f"gradient of sum_b ELBO(x_b) over {len(x)} examples w.r.t. the encoder's "
          f"{sum(p.size for p in problem.parameters.values())} parameters, KL {args.kl}; "
          f"N = {args.samples_n} estimates each, their noise from seed {args.seed} (--seed)")
    print(COLUMNS_LEGEND)
    totals = {}
    for k in args.k:
        names = estimators_for(k)
        stats = gradient_statistics(problem, k, args.samples_n, rng, names)
        _print_table(k, stats, names)
        totals[k] = {name: stats["all"][name].total_variance for name in names}
        check_finite(f"the total variance at K = {k}", list(totals[k].values()),
                     "the checkpoint's weights are too large; use another checkpoint")
    path = _plot_variances(out / f"estimator_variance_{args.kl}_kl.png", totals)
    print(f"wrote {path}")
    return 0


def _print_table(k, stats, names):
    print(f"\nK = {k}")
    print(f"{'parameter':<24} {'size':>6}  {'estimator':<26} {'total var':>10} {'SNR':>8} "
          f"{'var / RP':>9} {'|z|<=3':>7} {'mean z^2':>8}")
    for group, summaries in stats.items():
        reference = summaries["reparameterization"]
        for i, name in enumerate(names):
            s = summaries[name]
            label, size = (group, f"{s.mean.size:6d}") if i == 0 else ("", "")
            line = f"{label:<24} {size:>6}  {name:<26} {s.total_variance:10.3e} {s.snr:8.3f}"
            if name != "reparameterization":
                z = agreement(s, reference)
                line += (f" {s.total_variance / reference.total_variance:9.3g} {z.fraction_within:7.1%}"
                         f" {z.mean_square:8.2f}")
            print(line)


def _plot_variances(path, totals):
    """log10 of the total variance (all encoder parameters) against K, one line per estimator."""
    plots.save_curves(path, variance_curves(totals), "K, samples per estimate", "log10 total variance of the estimate",
                      "variance of the encoder gradient estimators against K (log-log)")
    return path

