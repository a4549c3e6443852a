"""The walkthrough's figures (``minivae figures``): a figure, and the numbers it shows, for each argument of
docs/walkthrough.md.

Each figure is computed by the inference code itself (likelihood.py,
estimators.py) on small VAEs trained on the bundled 8x8 digits in seconds,
drawn by plots.py, and its numbers are printed, so the walkthrough and the
README quote what the command printed. Everything follows from the seed;
``QUICK`` shrinks every size to a run of seconds. A figure is one entry of
``FIGURES``: its file and a function ``(Context, path) -> {quantity: array plotted}``.
"""
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from minivae.app import plots
from minivae.app.checkpoint import check_writable
from minivae.app.data import load_digits
from minivae.app.loading import train_small_model
from minivae.backend import get_backend
from minivae.distributions import DiagonalNormal
from minivae.estimators import ESTIMATORS, elbo_problem, gradient_statistics
from minivae.likelihood import (bound_gap, kl_q_to_posterior_on_grid, log_px_importance, log_px_prior_sampling,
                                log_px_quadrature, posterior_on_grid, spread_across_seeds)
from minivae.tensor import Tensor, no_grad

TARGET_ERROR = 0.1  # nats: the dimension sweep asks how many samples reach this root-mean-square error
SIGMA_RECONSTRUCTIONS = (0.1, 0.3, 1.0)
ERASED_ROWS = 3
EXTENT = 5.0  # the quadrature grid covers [-EXTENT, EXTENT]^L


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each figure computes; ``QUICK`` is a smoke run of seconds."""
    epochs: int = 40                        # training epochs of every small model
    examples: int = 8                       # test images per estimate
    seeds: int = 10                         # repetitions behind every spread and error
    max_samples: int = 10_000               # sample counts are 1, 10, 100, ... up to this
    reference_samples: int = 100_000        # K of the importance-sampled log p(x) where no grid exists
    latent_dims: tuple = (1, 2, 5, 10, 20)
    sigmas: tuple = (0.1, 0.2, 0.3, 0.5, 1.0)
    grid_size: int = 101                    # quadrature points per latent axis
    estimates: int = 200                    # N per estimator and K in the gradient-variance figure
    estimator_ks: tuple = (1, 10, 100)

    def changes(self):
        """The fields that differ from the walkthrough's sizes (``Sizes()``), as "name value" pairs."""
        full = Sizes()
        return [f"{field.name} {getattr(self, field.name)}" for field in dataclasses.fields(self)
                if getattr(self, field.name) != getattr(full, field.name)]


def sample_counts(max_samples):
    """The sample counts the estimates of log p(x) are drawn at: 1, 10, 100, ... up to ``max_samples``."""
    return [10**i for i in range(int(math.log10(max_samples)) + 1)]


QUICK = Sizes(epochs=2, examples=2, seeds=3, max_samples=100, reference_samples=1000, latent_dims=(1, 2, 3),
              sigmas=SIGMA_RECONSTRUCTIONS, grid_size=31, estimates=5, estimator_ks=(1, 4))


class Models:
    """Small VAEs trained on the digits when first asked for, one per (latent dim, likelihood, sigma)."""

    def __init__(self, directory, epochs, seed):
        self.directory, self.epochs, self.seed = Path(directory), epochs, seed
        self.trained = {}

    def get(self, latent_dim=2, likelihood="bernoulli", sigma=0.1):
        key = (latent_dim, likelihood, sigma)
        if key not in self.trained:
            out = self.directory / f"latent{latent_dim}_{likelihood}_{sigma:g}"
            self.trained[key], _ = train_small_model(out, self.epochs, self.seed, latent_dim=latent_dim,
                                                        likelihood=likelihood, sigma=sigma)
        return self.trained[key]


@dataclasses.dataclass
class Context:
    """What every figure reads: the sizes, the models, the digits, the seed, and where to print."""
    sizes: Sizes
    models: Models
    digits: object
    seed: int
    log: object = print

    @property
    def test_x(self):
        return self.digits.test_x[:self.sizes.examples]

    @property
    def sample_counts(self):
        return sample_counts(self.sizes.max_samples)

    def make_rng(self, offset=0):
        return get_backend().kernels.make_rng(self.seed + offset)

    def title(self, text=None):
        """A figure's title: ``text``, under a warning when the sizes are not the walkthrough's."""
        changes = self.sizes.changes()
        if not changes:
            return text
        shown = ", ".join(changes[:3]) + (", ..." if len(changes) > 3 else "")
        warning = (f"{'QUICK RUN' if self.sizes == QUICK else 'REDUCED SIZES'} ({shown}): too small and noisy to show "
                   "the walkthrough's conclusions")
        return warning if text is None else f"{warning}\n{text}"


# ----- Pixel distance is not meaning -----

def shift(images, down, right):
    """Images (N, H, W) moved ``down`` rows and ``right`` columns, the uncovered border black (0)."""
    height, width = images.shape[1:]
    moved = np.zeros_like(images)
    moved[:, down:, right:] = images[:, :height - down, :width - right]
    return moved


def erase_bottom(images, rows):
    """Images (N, H, W) with their bottom ``rows`` rows set to 0."""
    erased = images.copy()
    erased[:, -rows:, :] = 0
    return erased


def squared_distance(a, b):
    """Mean over pixels of (a - b)^2, per image: (N,)."""
    return ((a - b) ** 2).mean(axis=(1, 2))


def figure_pixel_distance(ctx, path):
    """A test "2", moved by one pixel and with its bottom rows erased: the moved one is farther in pixels."""
    images = ctx.digits.test_x[:].reshape(-1, *ctx.digits.image_shape)
    variants = {"moved 1 px right": shift(images, 0, 1), "moved 1 px right, 1 down": shift(images, 1, 1),
                f"bottom {ERASED_ROWS} rows erased": erase_bottom(images, ERASED_ROWS)}
    distances = {name: squared_distance(variant, images) for name, variant in variants.items()}
    twos = ctx.digits.test_y == 2
    erased = distances[f"bottom {ERASED_ROWS} rows erased"]
    ctx.log(f"mean squared pixel distance to the original, {twos.sum()} test 2s | all {len(images)} test digits")
    for name, d in distances.items():
        line = f"  {name:<26} {d[twos].mean():.3f} | {d.mean():.3f}"
        if d is not erased:
            line += (f"   farther than the erasure for {np.mean(d[twos] > erased[twos]):.0%} of the 2s "
                     f"| {np.mean(d > erased):.0%} of all")
        ctx.log(line)
    example = int(np.flatnonzero(twos)[0])
    tiles = np.stack([images[example]] + [v[example] for v in variants.values()]).reshape(4, -1)
    labels = ["original"] + [f"{name}\nd = {d[example]:.3f}" for name, d in distances.items()]
    diagonal = distances["moved 1 px right, 1 down"]
    plots.save_panels(path, [[
        plots.Images("a test 2 and three changed copies", tiles, ctx.digits.image_shape, 4, tuple(labels)),
        plots.Scatter("every test 2: moved (y) against erased (x)", "d(erased, original)",
                      "d(moved 1 px right and down, original)", erased[twos], diagonal[twos])]],
        panel_size=(5.5, 3.3))
    return {"distances": np.stack(list(distances.values())), "example": tiles}


# ----- What the Gaussian decoder's sigma does -----

def figure_sigma(ctx, path):
    """Per sigma, on a 2-D latent model: the naive n = 10 estimate's bias and the ELBO's reconstruction term."""
    sizes, x = ctx.sizes, ctx.test_x
    rows = []
    ctx.log(f"Gaussian decoder, 2-D latent, {len(x)} test images; bias = mean over {sizes.seeds} seeds of the "
            f"naive n = 10 estimate minus log p(x) (quadrature, {sizes.grid_size}^2 points)")
    ctx.log(f"{'sigma':>6} {'log p(x)':>10} {'naive bias':>11} {'ELBO':>10} {'recon term':>11} {'KL':>7}")
    for sigma in sizes.sigmas:
        model = ctx.models.get(2, "gaussian", sigma)
        exact = log_px_quadrature(model, x, sizes.grid_size)
        naive = spread_across_seeds(log_px_prior_sampling, model, x, [10], sizes.seeds)[0]
        with no_grad():
            terms = model.elbo(Tensor(x, dtype=model.dtype), samples=100, rng=ctx.make_rng())
        reconstruction, kl = terms.reconstruction.numpy().mean(), terms.kl.numpy().mean()
        rows.append((sigma, exact.mean(), (naive - exact).mean(), reconstruction - kl, reconstruction, kl))
        ctx.log("{:6.2f} {:10.2f} {:11.2f} {:10.2f} {:11.2f} {:7.2f}".format(*rows[-1]))
    table = np.array(rows)
    shown = [sigma for sigma in SIGMA_RECONSTRUCTIONS if sigma in sizes.sigmas]
    images = [x[:6]] + [ctx.models.get(2, "gaussian", sigma).reconstruct(Tensor(x[:6])) for sigma in shown]
    images = np.clip(np.concatenate(images), 0, 1)
    sigmas = table[:, 0]
    plots.save_panels(path, [[
        plots.Curves("naive Monte Carlo, n = 10: how far below log p(x)", "sigma", "log p(x) - estimate, nats",
                     {"bias of the naive estimate": (sigmas, -table[:, 2], None)}, yscale="symlog"),
        plots.Curves("ELBO's reconstruction term E_q[log p(x|z)]", "sigma", "nats per image",
                     {"reconstruction term": (sigmas, table[:, 4], None), "ELBO": (sigmas, table[:, 3], None)}),
        plots.Images("test images and their reconstructions", images, ctx.digits.image_shape, min(6, len(x)),
                     row_labels=("original",) + tuple(f"sigma {s:g}" for s in shown))]], ctx.title())
    return {"table": table, "images": images}


# ----- Naive Monte Carlo against importance sampling, as the latent dimension grows -----

def reference_log_px(ctx, model, x):
    """log p(x) by quadrature for a 1-D or 2-D latent space, else importance sampling with K very large."""
    if model.config["latent_dim"] <= 2:
        return log_px_quadrature(model, x, ctx.sizes.grid_size), "quadrature"
    k = ctx.sizes.reference_samples
    return log_px_importance(model, x, k, ctx.make_rng(1)), f"IW, K = {k:.0e}"


def active_dimensions(model, x, threshold=0.01):
    """Latent dimensions whose posterior mean varies across images, Var_x E_q[z_j] > 0.01 (Burda et al. 2016)."""
    with no_grad():
        mu, _ = model.encode(Tensor(x, dtype=model.dtype))
    return int((mu.numpy().var(axis=0) > threshold).sum())  # the others sit at the prior: free for naive sampling


def samples_needed(counts, rms_error):
    """n_max (error(n_max) / TARGET_ERROR)^2: the count reaching the target if the error falls as 1/sqrt(n) from n_max."""
    return counts[-1] * (rms_error[-1] / TARGET_ERROR) ** 2


def figure_dimensions(ctx, path):
    """Root-mean-square error of both estimators against the reference, and the samples each needs, per latent dim."""
    counts, x = ctx.sample_counts, ctx.test_x
    errors, needed = {}, {"naive Monte Carlo, z ~ p(z)": [], "importance sampling, z ~ q(z|x)": []}
    ctx.log(f"rms error over {ctx.sizes.seeds} seeds and {len(x)} test images at n = {counts[-1]}; samples needed "
            f"for {TARGET_ERROR} nats = n (error / {TARGET_ERROR})^2")
    ctx.log(f"{'latent':>6} {'active':>6} {'reference':>13} {'log p(x)':>9} {'naive error':>11} {'IS error':>9} "
            f"{'naive needs':>11} {'IS needs':>9} {'ratio':>8}")
    for dim in ctx.sizes.latent_dims:
        model = ctx.models.get(dim)
        reference, how = reference_log_px(ctx, model, x)
        rms = [np.sqrt(((spread_across_seeds(estimator, model, x, counts, ctx.sizes.seeds) - reference) ** 2)
                       .mean(axis=(1, 2))) for estimator in (log_px_prior_sampling, log_px_importance)]
        for name, error in zip(needed, rms):
            if dim in (ctx.sizes.latent_dims[0], ctx.sizes.latent_dims[-1]):  # two dimensions keep it readable
                errors[f"{name.split(',')[0]}, latent {dim}"] = (counts, error, None)
            needed[name].append(samples_needed(counts, error))
        naive_n, weighted_n = needed["naive Monte Carlo, z ~ p(z)"][-1], needed["importance sampling, z ~ q(z|x)"][-1]
        active = active_dimensions(model, ctx.digits.test_x[:])
        ctx.log(f"{dim:6d} {active:6d} {how:>13} {reference.mean():9.2f} {rms[0][-1]:11.4f} {rms[1][-1]:9.4f} "
                f"{naive_n:11.3g} {weighted_n:9.3g} {naive_n / weighted_n:8.3g}")
    dims = list(ctx.sizes.latent_dims)
    plots.save_panels(path, [[
        plots.Curves(f"samples needed for a {TARGET_ERROR}-nat rms error", "latent dimension", "samples (log scale)",
                     {name: (dims, n, None) for name, n in needed.items()}, log_x=False, yscale="log"),
        plots.Curves("rms error against the reference", "samples n", "nats", errors, yscale="log")]],
        ctx.title(), panel_size=(5, 3.8))
    return {"needed": np.array(list(needed.values())), "errors": np.array([e[1] for e in errors.values()])}


# ----- q(z|x) against the true posterior -----

def figure_posterior(ctx, path, images=4):
    """The exact posterior on a grid (filled) and q(z|x) (lines) for a few test images, with KL(q || p(z|x))."""
    model, x = ctx.models.get(2), ctx.digits.test_x[:images]
    grid = posterior_on_grid(model, x, ctx.sizes.grid_size * 2 - 1)
    kl = kl_q_to_posterior_on_grid(model, x, ctx.sizes.grid_size * 2 - 1)
    side = round(math.sqrt(len(grid.points)))
    axis = grid.points[::side, 0]
    with no_grad():
        q = DiagonalNormal(*model.encode(Tensor(x, dtype=model.dtype)))
        q_density = np.exp(q.log_prob(Tensor(grid.points[:, None, :], dtype=model.dtype)).numpy().T)
    posterior = np.exp(grid.log_density)
    panels = []
    for b in range(images):
        limits = _limits(grid.points, posterior[b] + q_density[b])
        panels.append(plots.Contours(f"test image {b}: KL(q || p(z|x)) = {kl[b]:.3f} nats", axis,
                                     posterior[b].reshape(side, side), q_density[b].reshape(side, side), limits,
                                     "p(z|x), exact", "q(z|x)"))
        ctx.log(f"test image {b}: KL(q(z|x) || p(z|x)) = log p(x) - ELBO = {kl[b]:.4f} nats")
    pictures = [plots.Images(f"test image {b}", x[b:b + 1], ctx.digits.image_shape, 1) for b in range(images)]
    plots.save_panels(path, [pictures, panels], ctx.title(), panel_size=(3.4, 3.2))
    return {"kl": kl, "posterior": posterior, "q": q_density}


def _limits(points, density, margin=0.3):
    """A square window around where ``density`` exceeds a thousandth of its peak."""
    inside = points[density > density.max() * 1e-3]
    low, high = inside.min(axis=0) - margin, inside.max(axis=0) + margin
    centre, half = (low + high) / 2, (high - low).max() / 2
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


# ----- Gradient variance, the bound gap, the drawn figures -----

def variance_curves(totals):
    """{estimator: (K values, log10 total variance, None)} from {K: {estimator: total variance}}."""
    series = {}
    for name in ESTIMATORS:
        ks = [k for k in totals if name in totals[k]]
        if ks:
            series[name] = (ks, [math.log10(totals[k][name]) for k in ks], None)
    return series


def bound_gap_panels(r):
    """(panels, title) of the bound-gap figure: ELBO <= L_K <= log p(x) on a scale that shows their gaps (tenths of
    a nat), the naive estimate beside them; the title says what the curves and bands are taken over."""
    counts = r.sample_counts
    exact = (counts, [r.exact.mean()] * len(counts), None)
    bounds = {"importance sampling, z ~ q(z|x): L_K": (counts, r.weighted.mean(axis=(1, 2)), r.spread(r.weighted)),
              "ELBO": (counts, [r.elbo.mean()] * len(counts), None), "exact log p(x) (quadrature)": exact}
    naive = {"naive Monte Carlo, z ~ p(z)": (counts, r.naive.mean(axis=(1, 2)), r.spread(r.naive)),
             "exact log p(x) (quadrature)": exact}
    panels = [[plots.Curves("ELBO <= L_K <= log p(x)", "samples K", "nats", bounds),
               plots.Curves("naive Monte Carlo against the exact value", "samples n", "nats", naive)]]
    return panels, (f"log p(x) estimates against sample count, mean over {len(r.exact)} examples; "
                    f"bands: spread over {r.naive.shape[1]} seeds")


def figure_estimator_variance(ctx, path):
    """Total variance of the three encoder-gradient estimators against K, KL closed (left) and sampled (right)."""
    model, sizes = ctx.models.get(2), ctx.sizes
    x = ctx.digits.train_x[:16]
    panels, totals_by_kl = [], {}
    for kl in ("closed", "sampled"):
        totals = {}
        for k in sizes.estimator_ks:
            stats = gradient_statistics(elbo_problem(model, x, kl), k, sizes.estimates, ctx.make_rng(k))["all"]
            totals[k] = {name: summary.total_variance for name, summary in stats.items()}
            reference = totals[k]["reparameterization"]
            ratios = ", ".join(f"{name} {v / reference:.3g}x" for name, v in totals[k].items()
                               if name != "reparameterization")
            ctx.log(f"KL {kl}, K = {k}: variance over reparameterization's: {ratios}")
        totals_by_kl[kl] = totals
        panels.append(plots.Curves(f"KL {kl}", "K, samples per estimate", "log10 total variance",
                                   variance_curves(totals)))
    plots.save_panels(path, [panels],
                      ctx.title(f"encoder gradient of the ELBO, {len(x)} images, N = {sizes.estimates} estimates each"))
    return {f"total variance, KL {kl}": np.array([v for t in totals.values() for v in t.values()])
            for kl, totals in totals_by_kl.items()}


def figure_bound_gap(ctx, path):
    """ELBO <= L_K <= log p(x) against K on their own scale, and the naive estimate beside them."""
    model, x, sizes = ctx.models.get(2), ctx.test_x, ctx.sizes
    result = bound_gap(model, x, sizes.grid_size, EXTENT, ctx.sample_counts, sizes.seeds, seed=ctx.seed)
    naive, weighted = result.spread(result.naive), result.spread(result.weighted)
    ctx.log(f"mean over {len(x)} test images: ELBO {result.elbo.mean():.3f} <= L_{result.sample_counts[-1]} "
            f"{result.bound.mean():.3f} <= log p(x) {result.exact.mean():.3f}; gap log p(x) - ELBO "
            f"{result.gap.mean():.3f}, KL(q || p(z|x)) {result.kl.mean():.3f} nats")
    ctx.log("spread over seeds, naive / importance sampling: " + ", ".join(
        f"n = {n}: {a:.3g} / {b:.3g} ({(a / b) ** 2:.2g}x the samples)" for n, a, b in
        zip(result.sample_counts, naive, weighted)))
    panels, title = bound_gap_panels(result)
    plots.save_panels(path, panels, ctx.title(title))
    return {"bounds": np.array([result.elbo, result.bound, result.exact]), "naive": result.naive,
            "weighted": result.weighted}


def figure_reparameterization(ctx, path):
    plots.save_reparameterization_diagram(path)
    return {}


def figure_training_pipeline(ctx, path):
    plots.save_training_pipeline(path)
    return {}


def figure_tapes(ctx, path):
    """Every tape of ``minivae graph`` beside ``path`` (tape_elbo.png is the first); their gradient norms."""
    from minivae.app.tapes import small_model, write_tapes
    tapes = write_tapes(path.parent, small_model(), ctx.digits.test_x[:4], seed=ctx.seed)
    for name, tape in tapes.items():
        ctx.log(f"{name}: {tape.summary()}")
    return {name: np.array([node.grad_norm for node in tape.nodes if node.grad_norm is not None])
            for name, tape in tapes.items()}


FIGURES = {  # name: (file, function(ctx, path) -> {quantity: array plotted})
    "pixel_distance": ("pixel_distance.png", figure_pixel_distance),
    "sigma": ("sigma.png", figure_sigma),
    "dimensions": ("naive_vs_importance.png", figure_dimensions),
    "posterior": ("posterior.png", figure_posterior),
    "estimator_variance": ("estimator_variance.png", figure_estimator_variance),
    "bound_gap": ("bound_gap.png", figure_bound_gap),
    "reparameterization": ("reparameterization.png", figure_reparameterization),
    "training_pipeline": ("training_pipeline.png", figure_training_pipeline),
    "tapes": ("tape_elbo.png", figure_tapes),
}


def write_figures(out, sizes=Sizes(), seed=0, names=tuple(FIGURES), log=print):
    """Every figure in ``names`` into ``out``; returns {name: {quantity: array}}, the numbers each one plots."""
    out = check_writable(out)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        ctx = Context(sizes, Models(scratch, sizes.epochs, seed), load_digits(), seed, log)
        for name in names:
            started = time.perf_counter()
            log(f"\n== {name} ==")
            file, draw = FIGURES[name]
            results[name] = draw(ctx, out / file)
            log(f"wrote {out / file} [{time.perf_counter() - started:.1f} s]")
    return results
