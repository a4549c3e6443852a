"""Figures as PNG files, drawn with matplotlib's Agg backend (no display needed).

Every function takes plain NumPy arrays and a path, so it can be used on any
model's output; matplotlib is imported only when a figure is drawn. Every
figure is drawn through ``_pyplot``, whose backend (``minivae.atomic_agg``)
writes each PNG to a temporary file and renames it over the target.
"""
import statistics

import numpy as np


def _pyplot():
    """pyplot on Agg, saving PNG files atomically (``minivae.atomic_agg``)."""
    import matplotlib
    matplotlib.use("module://minivae.atomic_agg")
    import matplotlib.pyplot as plt
    return plt


def _tile(images, image_shape, columns, gap=1):
    """Images (N, H*W) laid out row by row on one canvas, ``gap`` white pixels between them."""
    height, width = image_shape
    rows = -(-len(images) // columns)
    canvas = np.ones((rows * (height + gap) - gap, columns * (width + gap) - gap), dtype=np.float32)
    for n, image in enumerate(images):
        top, left = (n // columns) * (height + gap), (n % columns) * (width + gap)
        canvas[top:top + height, left:left + width] = image.reshape(image_shape)
    return canvas


def _save_grid(path, canvas, title):
    plt = _pyplot()
    scale = max(1.0, 400 / max(canvas.shape)) / 100  # at least 400 pixels on the long side
    fig, ax = plt.subplots(figsize=(canvas.shape[1] * scale + 0.2, canvas.shape[0] * scale + 0.5))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_reconstructions(path, originals, reconstructions, image_shape, title="originals (top), reconstructions (bottom)"):
    """Originals in the first row, their reconstructions in the row below."""
    columns = len(originals)
    canvas = _tile(np.concatenate([originals, reconstructions]), image_shape, columns)
    _save_grid(path, canvas, title)


def save_samples(path, images, image_shape, columns=8, title="decoded samples from the prior"):
    """A grid of images, e.g. decode(z) for z ~ N(0, I)."""
    _save_grid(path, _tile(images, image_shape, columns), title)


def save_loss_curves(path, history):
    """Train and test ELBO, reconstruction and KL (nats per example) against the epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("elbo", "reconstruction", "kl"),
                              ("ELBO", "reconstruction log p(x|z)", "KL(q(z|x) || p(z))")):
        for split in ("train", "test"):
            values = [row.get(f"{split}_{key}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(f"{label} (nats per example)", fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latent_scatter(path, z, labels):
    """The posterior means of a 2-D latent space, coloured by the example's label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("posterior means E[z|x] of the test set", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def manifold_grid(n):
    """n x n latent points: a uniform grid on (0, 1)^2 mapped through the Gaussian inverse CDF.

    Kingma & Welling (2014), figure 4: equal steps in probability under the prior.
    The inverse CDF is the standard library's (``statistics.NormalDist``,
    within 1e-15 of ``scipy.stats.norm.ppf``): importing scipy.stats for 15
    numbers would cost a training run some 50 MiB at its peak.
    """
    inverse_cdf = statistics.NormalDist().inv_cdf
    coords = [inverse_cdf(float(p)) for p in np.linspace(0.05, 0.95, n)]
    return np.array([[x, y] for y in coords[::-1] for x in coords], dtype=np.float64)


def save_manifold(path, images, image_shape, n):
    """The decoded images of ``manifold_grid(n)``, laid out as the grid they came from."""
    _save_grid(path, _tile(images, image_shape, n), "decoded latent grid (Kingma & Welling, fig. 4)")


def save_curves(path, series, xlabel, ylabel, title, log_x=True):
    """Several named (x, y, spread) series on one plot, spread drawn as a band where given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y, spread) in series.items():
        ax.plot(x, y, marker=".", label=name)
        if spread is not None:
            ax.fill_between(x, np.asarray(y) - spread, np.asarray(y) + spread, alpha=0.2)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
