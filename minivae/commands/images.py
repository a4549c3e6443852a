"""``minivae sample`` and ``minivae reconstruct``: a checkpoint's figures, under names a training run never writes."""
from pathlib import Path

import numpy as np

from minivae.app import plots
from minivae.app.checkpoint import check_writable
from minivae.app.run_checkpoint import load_trained
from minivae.app.runconfig import check_same_data, prepare_data
from minivae.backend import get_backend
from minivae.commands.argtypes import non_negative_int
from minivae.errors import MinivaeError, check_finite
from minivae.tensor import Tensor, no_grad


WEIGHTS_ADVICE = "the checkpoint's weights are too large to decode; use another checkpoint"


def add_reconstruct_arguments(parser):
    parser.add_argument("checkpoint", help="a checkpoint.npz written by minivae train")
    parser.add_argument("--out", default=None, help="where to write the figure (default: beside the checkpoint)")


def add_sample_arguments(parser):
    add_reconstruct_arguments(parser)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the prior samples z ~ N(0, I)")


def _figure_job(args):
    """(model, config, meta, out), the output directory checked before the checkpoint is read."""
    out = check_writable(Path(args.out) if args.out else Path(args.checkpoint).parent)
    model, config, meta = load_trained(args.checkpoint)
    return model, config, meta, out


def _decoded(model, z, what):
    """p(x | z)'s means (probabilities or grey levels) for the codes ``z`` (a Tensor), refused (NonFiniteResult,
    exit status 3) unless the decoder's output ``model.decode(z)`` (logits or means) is finite: a sigmoid shows
    infinite logits as plausible black and white."""
    with no_grad(), np.errstate(over="ignore", invalid="ignore"):  # checked below
        decoded = model.decode(z)
        check_finite(f"{what}: the decoder's output", decoded.numpy(), WEIGHTS_ADVICE)
        return model.p_x_given_decoded(decoded).mean.numpy()


def _write_figure(save, path, *arguments):
    """``save(path, *arguments)``, or a one-line MinivaeError when the file cannot be written."""
    try:
        save(path, *arguments)
    except OSError as exc:
        raise MinivaeError(f"cannot write {path} ({exc}); check free space and permissions") from None
    print(f"wrote {path}")


def run_sample(args):
    """Decode samples from the prior into sample_epoch{E}_seed{S}.png (never a training run's sample_{E}.png)."""
    model, _, meta, out = _figure_job(args)
    z = get_backend().kernels.standard_normal(get_backend().kernels.make_rng(args.seed),
                                              (64, model.config["latent_dim"]), model.dtype)
    samples = _decoded(model, Tensor(z), "samples")  # model.sample(64, rng), checked
    _write_figure(plots.save_samples, out / f"sample_epoch{len(meta['history'])}_seed{args.seed}.png", samples,
                  tuple(meta["image_shape"]))
    return 0


def run_reconstruct(args):
    """Test images over their reconstructions into reconstruction_epoch{E}.png (never reconstruction_{E}.png)."""
    model, config, meta, out = _figure_job(args)
    data = prepare_data(config, splits=("test",))
    check_same_data(args.checkpoint, meta, data)
    print(f"{data.name} test images from {data.source}")
    originals = data.test_x[:8]
    with no_grad(), np.errstate(over="ignore", invalid="ignore"):  # checked just below
        mu, _ = model.encode(Tensor(originals, dtype=model.dtype))
    check_finite("reconstructions: a code z", mu.numpy(), WEIGHTS_ADVICE)
    reconstructions = _decoded(model, mu, "reconstructions")  # model.reconstruct(originals), checked
    _write_figure(plots.save_reconstructions, out / f"reconstruction_epoch{len(meta['history'])}.png", originals,
                  reconstructions, data.image_shape)
    return 0
