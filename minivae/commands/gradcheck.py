"""``minivae gradcheck``: every primitive's and the model's gradient against central differences, as a table."""
from minivae.commands.argtypes import non_negative_int, positive_int
from minivae.modelcases import model_cases
from minivae.opcases import CASES, check_table


def add_arguments(parser):
    parser.add_argument("--trials", type=positive_int, default=3, help="random draws per primitive (default 3)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random inputs")
    parser.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    parser.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance (default 1e-8)")


def run(args):
    """Print every primitive's (and the ELBO's) worst gradient error against central differences; 1 if any fails."""
    rows = check_table(CASES + model_cases(), trials=args.trials, seed=args.seed, rtol=args.rtol, atol=args.atol)
    print(f"{'primitive':<22} {'input shapes':<26} {'max abs err':>11} {'max rel err':>11}  result")
    for row in rows:
        shapes = " ".join("x".join(map(str, s)) or "()" for s in row.shapes)
        shapes = shapes if len(shapes) <= 26 else f"{len(row.shapes)} parameter arrays"
        print(f"{row.name:<22} {shapes:<26} {row.max_abs_error:11.2e} {row.max_rel_error:11.2e}  "
              f"{'ok' if row.passed else 'FAIL'}")
    failed = [row.name for row in rows if not row.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed"
          f" (float64 central differences, rtol {args.rtol:g}, atol {args.atol:g})")
    return 1 if failed else 0
