"""``minivae sample`` and ``minivae reconstruct``: a checkpoint's figures, under names a training run never writes."""
from pathlib import Path

from minivae.app import plots
from minivae.app.checkpoint import check_writable
from minivae.app.run_checkpoint import load_trained
from minivae.app.runconfig import check_same_data, prepare_data
from minivae.backend import get_backend
from minivae.commands.argtypes import non_negative_int
from minivae.errors import MinivaeError
from minivae.tensor import Tensor


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
    samples = model.sample(64, get_backend().kernels.make_rng(args.seed))  # NonFiniteResult (exit 3) if not finite
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
    reconstructions = model.reconstruct(Tensor(originals, dtype=model.dtype))  # NonFiniteResult (exit 3) if not finite
    _write_figure(plots.save_reconstructions, out / f"reconstruction_epoch{len(meta['history'])}.png", originals,
                  reconstructions, data.image_shape)
    return 0
