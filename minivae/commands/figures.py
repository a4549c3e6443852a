"""``minivae figures``: the walkthrough's figures (``app/figures.py``), each with the numbers it shows."""
import dataclasses
import time

from minivae.app.figures import FIGURES, QUICK, Sizes, write_figures
from minivae.commands.argtypes import int_list, name_list, non_negative_int, positive_int
from minivae.errors import MinivaeError


def add_arguments(parser):
    parser.add_argument("--out", default="results/figures", help="directory for the PNG files")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the models and every sample")
    parser.add_argument("--quick", action="store_true",
                        help="every size small (2 epochs, 2 images, n up to 100): a check that runs in seconds")
    parser.add_argument("--only", type=name_list(tuple(FIGURES)), default=list(FIGURES), metavar="NAMES",
                        help=f"comma-separated figures to draw, of: {', '.join(FIGURES)} (default: all)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs of each small model")
    parser.add_argument("--latent-dims", type=int_list, default=None, metavar="DIMS",
                        help="latent dimensions of the naive-vs-importance sweep (default 1,2,5,10,20)")
    parser.add_argument("--reference-samples", type=positive_int, default=None, metavar="K",
                        help="K of the importance-sampled log p(x) above 2 latent dimensions (default 100000)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="repetitions behind each error (default 10)")


def run(args):
    """Write every figure asked for, printing the numbers each one shows; the total time at the end."""
    sizes = QUICK if args.quick else Sizes()
    changes = {field: getattr(args, field) for field in ("epochs", "reference_samples", "seeds")
               if getattr(args, field) is not None}
    if args.latent_dims is not None:
        changes["latent_dims"] = tuple(args.latent_dims)
    if changes.get("seeds", 2) < 2:
        raise MinivaeError(f"--seeds {args.seeds}: an error over seeds needs at least 2; use e.g. 10")
    started = time.perf_counter()
    write_figures(args.out, dataclasses.replace(sizes, **changes), args.seed, args.only)
    print(f"\n{len(args.only)} figures in {args.out}; every number above follows from --seed {args.seed} (the "
          f"models' weights and every sample) [{time.perf_counter() - started:.0f} s]")
    return 0
