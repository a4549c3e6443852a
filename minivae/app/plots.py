"""Figures as PNG files, drawn with matplotlib's Agg backend (no display needed).

Every function takes plain NumPy arrays and a path, so it can be used on any
model's output; matplotlib is imported only when a figure is drawn. Every
figure is drawn through ``pyplot``, whose backend (``minivae.app.atomic_agg``)
writes each PNG to a temporary file and renames it over the target.
"""
import dataclasses
import statistics

import numpy as np

MANIFOLD_CELL_PIXELS = 30  # screen pixels per decoded image of the manifold, at least


def pyplot():
    """pyplot on Agg, saving PNG files atomically (``minivae.app.atomic_agg``)."""
    import matplotlib
    matplotlib.use("module://minivae.app.atomic_agg")
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


def _save_grid(path, canvas, title, long_side=400):
    plt = pyplot()
    scale = max(1.0, long_side / max(canvas.shape)) / 100  # at least ``long_side`` pixels on the long side
    fig = plt.figure(figsize=(canvas.shape[1] * scale, canvas.shape[0] * scale))
    ax = fig.add_axes((0, 0, 1, 1))  # the image fills the figure; the title is added above it
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


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
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("elbo", "reconstruction", "kl"),
                              ("ELBO", "reconstruction log p(x|z)", "KL(q(z|x) || p(z))")):
        for split in ("train", "test"):
            values = [row.get(f"{split}_{key}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_title(f"{label} (nats per example)", fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latent_scatter(path, z, labels):
    """The posterior means of a 2-D latent space, coloured by the example's label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("posterior means E[z|x] of the test set", fontsize=9)
    save_figure(fig, path)


def manifold_coordinates(n):
    """n values of z along one axis: a uniform grid on (0, 1) mapped through the Gaussian inverse CDF.

    Kingma & Welling (2014), figure 4: equal steps in probability under the prior.
    """
    # Within 1e-15 of scipy.stats.norm.ppf; importing scipy.stats for 15 numbers would cost a run 50 MiB at its peak.
    inverse_cdf = statistics.NormalDist().inv_cdf
    return [inverse_cdf(float(p)) for p in np.linspace(0.05, 0.95, n)]


def manifold_grid(n):
    """n x n latent points (z[0], z[1]) row by row, z[1] falling from the top row: ``manifold_coordinates`` squared."""
    coords = manifold_coordinates(n)
    return np.array([[x, y] for y in coords[::-1] for x in coords], dtype=np.float64)


def save_manifold(path, images, image_shape, n):
    """The decoded images of ``manifold_grid(n)``, laid out as the grid they came from, z[0] and z[1] on the axes."""
    plt = pyplot()
    height, width = image_shape
    side = n * MANIFOLD_CELL_PIXELS / 100  # inches at 100 dpi: at least MANIFOLD_CELL_PIXELS per decoded image
    fig, ax = plt.subplots(figsize=(side + 1, side + 0.8))
    ax.imshow(_tile(images, image_shape, n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    coords, shown = manifold_coordinates(n), range(0, n, 2)
    ax.set_xticks([j * (width + 1) + (width - 1) / 2 for j in shown], [f"{coords[j]:.2f}" for j in shown],
                  fontsize=7)
    ax.set_yticks([i * (height + 1) + (height - 1) / 2 for i in shown], [f"{coords[::-1][i]:.2f}" for i in shown],
                  fontsize=7)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("decoded means of p(x|z) on a grid of z, in equal steps of prior probability\n"
                 "(Kingma & Welling 2014, fig. 4)", fontsize=9)
    save_figure(fig, path)


def save_curves(path, series, xlabel, ylabel, title, log_x=True):
    """Several named (x, y, spread) series on one plot, spread drawn as a band where given (one ``Curves`` panel)."""
    save_panels(path, [[Curves(title, xlabel, ylabel, series, log_x)]], panel_size=(6, 4))


# ----- Multi-panel figures (``minivae figures``, ``minivae bound-gap``) -----
# A figure is a grid of panels, each one of the dataclasses below, drawn by save_panels.

@dataclasses.dataclass
class Curves:
    """Named series {name: (x, y, spread)} on one pair of axes; spread (or None) is drawn as a band."""
    title: str
    xlabel: str
    ylabel: str
    series: dict
    log_x: bool = True
    yscale: str = "linear"  # or "log", or "symlog" (logarithmic, but defined for values <= 0 too)


@dataclasses.dataclass
class Scatter:
    """One point per (x, y), with the diagonal y = x: points above it have y > x."""
    title: str
    xlabel: str
    ylabel: str
    x: np.ndarray
    y: np.ndarray


@dataclasses.dataclass
class Images:
    """Images (N, H*W) tiled ``columns`` to a row, with optional labels for the columns and the rows."""
    title: str
    images: np.ndarray
    image_shape: tuple
    columns: int
    column_labels: tuple = ()
    row_labels: tuple = ()


@dataclasses.dataclass
class Contours:
    """A density on a square grid (filled) against another drawn as contour lines, within ``limits``.

    ``filled`` and ``lines`` are (G, G) arrays indexed [i, j] at (axis[i], axis[j]).
    """
    title: str
    axis: np.ndarray
    filled: np.ndarray
    lines: np.ndarray
    limits: tuple  # (x0, x1, y0, y1)
    filled_label: str
    lines_label: str


def save_figure(fig, path):
    """Write ``fig`` as a PNG at 100 dpi, cropped to what it draws, and free it."""
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)


def save_panels(path, rows, title=None, panel_size=(4.2, 3.3)):
    """A grid of panels, one list per row (None leaves a cell empty), written by ``save_figure``."""
    plt = pyplot()
    height, width = len(rows), max(len(row) for row in rows)
    fig, axes = plt.subplots(height, width, figsize=(panel_size[0] * width, panel_size[1] * height), squeeze=False)
    for row, panels in zip(axes, rows):
        for ax, panel in zip(row, list(panels) + [None] * (width - len(panels))):
            if panel is None:
                ax.set_axis_off()
            else:
                _DRAW[type(panel)](ax, panel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _draw_curves(ax, panel):
    for name, (x, y, spread) in panel.series.items():
        ax.plot(x, y, marker=".", label=name)
        if spread is not None:
            ax.fill_between(x, np.asarray(y) - spread, np.asarray(y) + spread, alpha=0.2)
    ax.set_xscale("log" if panel.log_x else "linear")
    ax.set_yscale(panel.yscale)
    _integer_ticks(ax, [value for x, _, _ in panel.series.values() for value in x])
    _label(ax, panel)
    ax.legend(fontsize=7)


def _integer_ticks(ax, xs, most=12):
    """Where every x is a whole number (K, n, a latent dimension) and there are at most ``most`` of them, one
    tick at each, labelled as the integer it is (no 1.25 dimensions, no 2x10^0 samples), and no minor ticks."""
    values = sorted({float(x) for x in xs})
    if len(values) > most or not all(value.is_integer() for value in values):
        return
    ax.set_xticks(values, [str(int(value)) for value in values])
    ax.set_xticks([], minor=True)


def _draw_scatter(ax, panel):
    ax.scatter(panel.x, panel.y, s=8, alpha=0.6)
    top = float(max(np.max(panel.x), np.max(panel.y))) * 1.05
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--", label="y = x")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    _label(ax, panel)
    ax.legend(fontsize=7)


def _draw_images(ax, panel):
    height, width = panel.image_shape
    ax.imshow(_tile(panel.images, panel.image_shape, panel.columns), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([j * (width + 1) + (width - 1) / 2 for j in range(len(panel.column_labels))],
                  panel.column_labels, fontsize=7)
    ax.set_yticks([i * (height + 1) + (height - 1) / 2 for i in range(len(panel.row_labels))],
                  panel.row_labels, fontsize=7)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(panel.title, fontsize=9)


def _draw_contours(ax, panel):
    x0, x1, y0, y1 = panel.limits
    # [i, j] is at (axis[i], axis[j]): transposed, rows run along z[1] as imshow and contour expect
    ax.contourf(panel.axis, panel.axis, panel.filled.T, levels=12, cmap="Blues")
    ax.contour(panel.axis, panel.axis, panel.lines.T, levels=5, colors="tab:red", linewidths=0.9)
    ax.plot([], [], color="tab:red", label=panel.lines_label)
    ax.fill([], [], color="tab:blue", alpha=0.5, label=panel.filled_label)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(panel.title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def _label(ax, panel):
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title, fontsize=9)


_DRAW = {Curves: _draw_curves, Scatter: _draw_scatter, Images: _draw_images, Contours: _draw_contours}


# ----- Drawn diagrams -----

def _node(ax, xy, text, kind="deterministic"):
    """A node of a computation graph: a box (deterministic), a circle (random) or a white box (an input)."""
    style = {"deterministic": dict(boxstyle="round,pad=0.4", facecolor="#dbe9f6", edgecolor="#2b6ca3"),
             "random": dict(boxstyle="round,pad=0.4", facecolor="#fbe3d6", edgecolor="#c0504d", linestyle="--"),
             "input": dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#777777")}[kind]
    return ax.text(*xy, text, ha="center", va="center", fontsize=9, bbox=style, zorder=3)


def _arrow(ax, source, target, color="black", label=None, curve=0.0):
    """An arrow from one node to another, clipped at both boxes, with an optional label at its middle."""
    start, end = source.get_position(), target.get_position()
    ax.annotate("", xy=end, xytext=start, zorder=2,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2, connectionstyle=f"arc3,rad={curve}",
                                patchA=source.get_bbox_patch(), patchB=target.get_bbox_patch()))
    if label:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + (0.1 if curve else 0.04))
        ax.text(*middle, label, ha="center", fontsize=7, color=color)


def _blank(ax, title):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def save_reparameterization_diagram(path):
    """Kingma & Welling's picture of the trick: z drawn from q_phi (left) against z = mu + sigma * eps (right).

    Dashed boxes are random, blue boxes deterministic; black arrows run
    forward, red arrows are where the gradient of f with respect to phi flows.
    On the left it stops at the random node z.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    _blank(left, "original form: z ~ q_phi(z|x), random in a way that depends on phi")
    x, phi = _node(left, (0.1, 0.8), "x", "input"), _node(left, (0.1, 0.3), "phi", "input")
    z, f = _node(left, (0.5, 0.55), "z ~ q_phi(z|x)", "random"), _node(left, (0.88, 0.55), "f(z)")
    for source, target in ((x, z), (phi, z), (z, f)):
        _arrow(left, source, target)
    _arrow(left, f, z, color="tab:red", label="df/dz", curve=0.5)
    left.text(0.5, 0.06, "no derivative of a sample with respect to phi: the gradient stops at z;\n"
              "only the score function E_q[f(z) grad_phi log q_phi(z|x)] estimates it", ha="center",
              fontsize=7, color="tab:red")
    _blank(right, "reparameterized: z = mu + sigma * eps, eps ~ N(0, I)")
    x, phi = _node(right, (0.07, 0.8), "x", "input"), _node(right, (0.07, 0.3), "phi", "input")
    params, eps = _node(right, (0.3, 0.55), "mu, sigma"), _node(right, (0.58, 0.12), "eps ~ N(0, I)", "random")
    z, f = _node(right, (0.58, 0.55), "z = mu + sigma * eps"), _node(right, (0.92, 0.55), "f(z)")
    for source, target in ((x, params), (phi, params), (params, z), (eps, z), (z, f)):
        _arrow(right, source, target)
    _arrow(right, f, z, color="tab:red", label="df/dz", curve=0.5)
    _arrow(right, z, params, color="tab:red", label="dz/dmu = 1, dz/dsigma = eps", curve=0.5)
    _arrow(right, params, phi, color="tab:red", curve=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_training_pipeline(path):
    """One training step as a drawing: the forward pass left to right, then loss, backward and the update."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.4))
    _blank(ax, "one training step (Kingma & Welling 2014, Algorithm 1)")
    x = _node(ax, (0.04, 0.75), "minibatch x\n(B, D)", "input")
    encoder = _node(ax, (0.17, 0.75), "encoder MLP")
    heads = _node(ax, (0.31, 0.75), "mu, logvar\n(B, L)")
    eps = _node(ax, (0.5, 0.35), "eps ~ N(0, I)", "random")
    z = _node(ax, (0.5, 0.75), "z = mu + exp(logvar / 2) * eps\n(K, B, L)")
    decoder = _node(ax, (0.68, 0.75), "decoder MLP")
    reconstruction = _node(ax, (0.82, 0.75), "log p(x|z)\nmean over K")
    kl = _node(ax, (0.31, 0.35), "KL(q || p(z))\nclosed form")
    elbo = _node(ax, (0.95, 0.45), "ELBO =\nrecon - KL")
    loss = _node(ax, (0.72, 0.08), "loss = -mean ELBO\nbackward()")
    update = _node(ax, (0.31, 0.08), "Adam: update\nevery parameter")
    for source, target in ((x, encoder), (encoder, heads), (heads, z), (eps, z), (z, decoder),
                           (decoder, reconstruction), (reconstruction, elbo), (heads, kl), (kl, elbo),
                           (elbo, loss)):
        _arrow(ax, source, target)
    _arrow(ax, loss, update, color="tab:red", label="gradients")
    fig.tight_layout()
    save_figure(fig, path)
