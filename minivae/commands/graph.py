"""``minivae graph``: the tape that ``backward()`` walks, drawn, for the ELBO, the score-function surrogate and L_K.

Each preset (``minivae.app.tapes``) is computed on a few digits, traced
after one backward pass and drawn (``tape_NAME.png``) and written as DOT
(``tape_NAME.dot``, for graphviz users). Without ``--checkpoint`` the model
is a small untrained one, so the command works right after installing.
"""
from minivae.app.tapes import PRESETS


def add_arguments(parser):
    from minivae.commands.argtypes import name_list, non_negative_int, positive_int
    parser.add_argument("--out", default="results/graphs", help="directory for tape_NAME.png and tape_NAME.dot")
    parser.add_argument("--only", type=name_list(tuple(PRESETS)), default=list(PRESETS), metavar="NAMES",
                        help=f"comma-separated tapes to draw, of: {', '.join(PRESETS)} (default: all)")
    parser.add_argument("--checkpoint", default=None,
                        help="draw this trained model's tapes, on its test images (default: a small untrained "
                             "64-16-2 VAE on the bundled digits)")
    parser.add_argument("--examples", type=positive_int, default=4, help="images in the batch")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the noise eps")


def run(args):
    """Write each tape asked for; print what reaches which leaf, and the files."""
    from minivae.app.checkpoint import check_writable
    from minivae.app.tapes import small_model, write_tapes
    out = check_writable(args.out)
    if args.checkpoint is None:
        from minivae.app.data import load_digits
        model, images = small_model(), load_digits().test_x
    else:
        from minivae.app.loading import load_model_and_data
        model, _, images = load_model_and_data(args.checkpoint)
    tapes = write_tapes(out, model, images[:args.examples], args.only, args.seed)
    for name, tape in tapes.items():
        print(f"{name}: {tape.summary()}")
        labels = {node.label for node in tape.nodes}
        absent = [parameter for parameter, _ in model.named_parameters() if parameter not in labels]
        if absent:
            print(f"  not on this tape: {', '.join(absent)}")
        print(f"  wrote {out / f'tape_{name}.png'}, {out / f'tape_{name}.dot'}")
    return 0
