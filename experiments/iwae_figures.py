"""The walkthrough's figures of the importance-weighted bound and of KL warm-up (docs/figures/).

- ``iwae_bounds.png``: E L_K against K on a VAE with a 2-D latent space trained
  on the bundled digits, with log p(x) exact by quadrature: L_1 (the ELBO) <=
  L_5 <= L_50 <= log p(x), each L_K the mean of repeated draws, with its
  standard error.
- ``kl_warmup.png``: the test KL(q(z|x) || p(z)) per epoch of the same model
  trained with and without a linear KL warm-up, and the warm-up's beta.

    python experiments/iwae_figures.py                  # about a minute on 2 cores
"""
import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from minivae.app import plots
from minivae.app.data import load_digits
from minivae.app.loading import train_small_model
from minivae.app.runconfig import TrainConfig
from minivae.app.training import train
from minivae.backend import get_backend
from minivae.likelihood import log_px_quadrature
from minivae.tensor import Tensor, no_grad

SAMPLE_COUNTS = (1, 2, 5, 10, 20, 50, 200, 1000)
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def bound_curve(model, x, sample_counts, repeats, seed=0):
    """Per K: the mean over examples and ``repeats`` draws of L_K, and its standard error."""
    rng = get_backend().kernels.make_rng(seed)
    means, errors = [], []
    with no_grad():
        for k in sample_counts:
            draws = np.stack([model.iwae(x, samples=k, rng=rng).bound.numpy() for _ in range(repeats)]).mean(axis=1)
            means.append(draws.mean())
            errors.append(draws.std(ddof=1) / math.sqrt(repeats))
    return np.array(means), np.array(errors)


def save_bounds_figure(path, work, examples, repeats):
    model, _ = train_small_model(work / "iwae_model", epochs=40)
    x = Tensor(load_digits().test_x[:examples])
    means, errors = bound_curve(model, x, SAMPLE_COUNTS, repeats)
    exact = log_px_quadrature(model, x).mean()
    plots.save_curves(path, {"E L_K (band: 1 standard error)": (SAMPLE_COUNTS, means, errors),
                             "log p(x), quadrature": (SAMPLE_COUNTS, [exact] * len(SAMPLE_COUNTS), None)},
                      "K, importance samples", "nats per example (mean over test images)",
                      f"L_1 = ELBO <= L_5 <= L_50 <= log p(x): 2-D latent digits VAE, {examples} test images")
    return dict(zip(SAMPLE_COUNTS, means.round(3).tolist())), round(float(exact), 3)


def save_warmup_figure(path, work, epochs, warmup):
    curves = {}
    for name, kl_warmup in (("no warm-up", 0), (f"warm-up over {warmup} epochs", warmup)):
        config = TrainConfig(data="digits", hidden=(64,), latent_dim=2, epochs=epochs, batch_size=64, lr=1e-2,
                             kl_warmup=kl_warmup, plot_interval=0, out=str(work / f"warmup{kl_warmup}"))
        history = train(config, progress=False, log=lambda line: None).history
        curves[name] = history
    epoch_axis = list(range(1, epochs + 1))
    series = {f"test KL, {name}": (epoch_axis, [row["test_kl"] for row in history], None)
              for name, history in curves.items()}
    warmed = curves[f"warm-up over {warmup} epochs"]
    series["5 beta (warm-up run)"] = (epoch_axis, [5 * row["beta"] for row in warmed], None)
    plots.save_curves(path, series, "epoch", "nats per example", "KL(q(z|x) || p(z)) with and without KL warm-up",
                      log_x=False)
    return {name: [round(row["test_kl"], 3) for row in history] for name, history in curves.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(FIGURES), help="directory for the PNG files (default docs/figures)")
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        bounds, exact = save_bounds_figure(out / "iwae_bounds.png", Path(scratch), args.examples, args.repeats)
        kl = save_warmup_figure(out / "kl_warmup.png", Path(scratch), args.epochs, args.warmup)
    print(json.dumps({"E L_K by K": bounds, "log p(x)": exact, "test KL by epoch": kl}))
    print(f"figures: {out / 'iwae_bounds.png'}, {out / 'kl_warmup.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
