"""``minivae bound-gap``: ELBO <= L_K <= exact log p(x) on a 1-D or 2-D latent model, the gap against KL(q || p(z|x)),
and how fast the naive and the importance-sampled estimates of log p(x) settle.
"""
import numpy as np

from minivae.app import plots
from minivae.app.figures import EXTENT, Sizes, bound_gap_panels, sample_counts
from minivae.app.checkpoint import check_writable
from minivae.app.data import load_dataset
from minivae.app.loading import load_model_and_data, train_small_model
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from minivae.backend import get_backend
from minivae.commands.argtypes import extent, non_negative_int, positive_int
from minivae.distributions import DiagonalNormal
from minivae.errors import MinivaeError, check_finite
from minivae.likelihood import bound_gap, kl_standard_normal_monte_carlo, latent_grid
from minivae.tensor import Tensor, no_grad


def add_arguments(parser):
    full = Sizes()  # the defaults are figure bound_gap's: `minivae figures --seed S` prints the same numbers
    parser.add_argument("--checkpoint", default=None,
                        help="a model with a 1-D or 2-D latent space (default: train one on digits in seconds)")
    parser.add_argument("--data-dir", default=None, help="directory of the IDX files (default: the checkpoint's)")
    parser.add_argument("--epochs", type=positive_int, default=full.epochs,
                        help="training epochs of the model trained without --checkpoint")
    parser.add_argument("--examples", type=positive_int, default=full.examples, help="test examples to compare")
    parser.add_argument("--grid-size", type=positive_int, default=full.grid_size, help="grid points per latent axis")
    parser.add_argument("--extent", type=extent, default=EXTENT, help="the grid covers [-extent, extent]^L")
    parser.add_argument("--max-samples", type=positive_int, default=full.max_samples,
                        help="largest sample count n (counts are 1, 10, 100, ... up to it)")
    parser.add_argument("--seeds", type=positive_int, default=full.seeds, help="repetitions for the spread")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the noise, and of the model trained without --checkpoint")
    parser.add_argument("--out", default="results/bound_gap",
                        help="directory for bound_gap.png, bound_gap_spread.png and the model trained here")


def run(args):
    """ELBO <= L_K <= log p(x), log p(x) - ELBO = KL(q || p(z|x)), and how the two samplers' spreads shrink."""
    if args.seeds < 2:  # before the output folder is made
        raise MinivaeError(f"--seeds {args.seeds}: a spread needs at least 2 seeds; use e.g. 10")
    out = check_writable(args.out)
    estimates, spreads = out / "bound_gap.png", out / "bound_gap_spread.png"
    written = [estimates, spreads]
    if args.checkpoint is None:
        print(f"training a 2-D latent VAE on digits (64 hidden units, {args.epochs} epochs, seed {args.seed}) "
              f"into {out / 'model'} ...")
        model, _ = train_small_model(out / "model", args.epochs, args.seed)
        x = load_dataset("digits").test_x
        written.append(out / "model" / CHECKPOINT_NAME)
    else:
        model, _, x = load_model_and_data(args.checkpoint, None, args.data_dir)
    latent_grid(model.config["latent_dim"], args.grid_size, args.extent)  # refuse other dimensions up front
    x = x[:args.examples]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked just below
        result = bound_gap(model, x, args.grid_size, args.extent, sample_counts(args.max_samples), args.seeds,
                           seed=args.seed)
    for quantity, values in (("log p(x) on the grid", result.exact), ("the ELBO", result.elbo),
                             ("the importance-weighted bound", result.bound), ("KL(q || p(z|x))", result.kl)):
        check_finite(quantity, values, "the weights or --extent are too large; use another checkpoint or "
                                       "the default --extent 5")
    print(f"the first {len(x)} test images; every estimate's noise from seed {args.seed} (--seed), "
          f"spreads over {args.seeds} seeds from it")
    _print_bounds(result, args.grid_size)
    _print_kl_check(model, x, get_backend().kernels.make_rng(args.seed))
    _print_spreads(result)
    plots.save_panels(estimates, *bound_gap_panels(result))
    plots.save_curves(spreads, _spread_curves(result), "samples n", "log10 spread over seeds, nats",
                      "how fast each estimate's spread shrinks (log-log)")
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def _print_bounds(r, grid_size):
    k = r.sample_counts[-1]
    print(f"{'example':>7} {'ELBO':>9} {'L_' + str(k):>9} {'log p(x)':>9} {'log p - ELBO':>12} "
          f"{'KL(q||p(z|x))':>13} {'|diff|':>7} {'tol':>6}")
    for i in range(len(r.exact)):
        print(f"{i:7d} {r.elbo[i]:9.3f} {r.bound[i]:9.3f} {r.exact[i]:9.3f} {r.gap[i]:12.4f} "
              f"{r.kl[i]:13.4f} {abs(r.gap[i] - r.kl[i]):7.4f} {r.gap_tolerance[i]:6.3f}")
    n = len(r.exact)
    print(f"mean ELBO {r.elbo.mean():.3f} <= L_{k} {r.bound.mean():.3f} <= log p(x) {r.exact.mean():.3f} nats; "
          f"ordered for {r.ordered.sum()}/{n} examples (tol: 3 SE + quadrature error)")
    print(f"log p(x) - ELBO = KL(q || p(z|x)) within tol for {np.sum(np.abs(r.gap - r.kl) <= r.gap_tolerance)}/{n} "
          f"examples; tol = 4 SE(ELBO) + |log p(x) on {grid_size // 2 + 1} vs {grid_size} points per axis| "
          "+ 0.001 nats")


def _print_kl_check(model, x, rng):
    with no_grad():
        q = DiagonalNormal(*model.encode(Tensor(x, dtype=model.dtype)))
        closed = q.kl_standard_normal().numpy()
    estimate, se = kl_standard_normal_monte_carlo(q, 20_000, rng)
    print(f"KL(q || p(z)), mean over examples: closed form {closed.mean():.4f}, Monte Carlo (20000 samples each) "
          f"{estimate.mean():.4f} +- {np.sqrt(np.sum(se**2)) / len(se):.4f} nats")


def _print_spreads(r):
    print(f"\nspread = standard deviation over {r.naive.shape[1]} seeds, mean over examples; "
          f"exact mean log p(x) {r.exact.mean():.3f}")
    print(f"{'n':>6} {'naive mean':>11} {'naive spread':>12} {'IS mean':>9} {'IS spread':>9} {'ratio':>6}")
    naive, weighted = r.spread(r.naive), r.spread(r.weighted)
    for i, n in enumerate(r.sample_counts):
        print(f"{n:6d} {r.naive[i].mean():11.3f} {naive[i]:12.4f} {r.weighted[i].mean():9.3f} "
              f"{weighted[i]:9.4f} {naive[i] / weighted[i]:6.1f}")


def _spread_curves(r):
    return {"naive Monte Carlo, z ~ p(z)": (r.sample_counts, np.log10(r.spread(r.naive)), None),
            "importance sampling, z ~ q(z|x)": (r.sample_counts, np.log10(r.spread(r.weighted)), None)}
