"""Small, bounded hypothesis strategies for the engine's tests (MiniTorch's ``tests/strategies.py``).

Values stay in [-3, 3] so ``exp`` and friends stay well-conditioned; shapes
have 1-3 dimensions of size 1-4. Arrays may come in a non-contiguous layout
(a transposed or strided view of a larger array) with the same values, so an
op that assumes C order shows it. Raw values are drawn here; each
``OpCase`` moves them into its own domain with ``case.inputs(raw)``.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

VALUES = st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=3)
LAYOUTS = ("contiguous", "transposed", "strided")


def shapes():
    """1 to 3 dimensions, each of size 1 to 4."""
    return hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def broadcast_pairs():
    """Two shapes that broadcast together, e.g. (3, 1) and (1, 4), or (4,) and (2, 3, 4)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=4).map(
        lambda drawn: drawn.input_shapes)


def laid_out(array, layout):
    """The same values in another memory layout: C order, a transposed view, or every other element.

    The strided view's base holds NaN between the elements, so an op that
    reads past the view's strides turns its result into NaN.
    """
    if layout == "contiguous":
        return np.ascontiguousarray(array)
    if layout == "transposed":
        return np.ascontiguousarray(array.T).T
    base = np.full(array.shape[:-1] + (2 * array.shape[-1],), np.nan, dtype=array.dtype)
    base[..., ::2] = array
    return base[..., ::2]


@st.composite
def float_arrays(draw, shape, dtype=np.float64, layouts=LAYOUTS):
    """An array of ``shape`` with values in [-3, 3], in a layout drawn from ``layouts``."""
    values = draw(hnp.arrays(np.float64, shape, elements=VALUES)).astype(dtype)
    return laid_out(values, draw(st.sampled_from(layouts)))


@st.composite
def raw_inputs(draw, case):
    """Raw float64 arrays for an ``OpCase``, shaped by its ``kind`` (domains are the case's job).

    ``elementwise``: one drawn shape for every input; ``broadcast``: a drawn
    broadcast pair; ``fixed``: the case's own shapes.
    """
    if case.kind == "elementwise":
        case_shapes = (draw(shapes()),) * len(case.shapes)
    elif case.kind == "broadcast":
        case_shapes = draw(broadcast_pairs())
    else:
        case_shapes = case.shapes
    return [draw(float_arrays(shape, layouts=("contiguous",))) for shape in case_shapes]


# ----- Fuzzing: a valid file, slightly damaged -----

@st.composite
def mutated(draw, blob):
    """``blob`` with a few bytes overwritten, then possibly cut short."""
    edits = draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=4))
    mutant = bytearray(blob)
    for position, value in edits:
        mutant[position] = value
    return bytes(mutant[:draw(st.integers(0, len(blob)))])


# ----- Fixed draws for example-based tests -----

def normal(shape, seed=0):
    """A fixed float64 standard-normal array."""
    return np.random.default_rng(seed).standard_normal(shape)


def binary(shape, seed=0):
    """A fixed float64 array of zeros and ones, each with probability 1/2."""
    return (np.random.default_rng(seed).random(shape) < 0.5).astype(np.float64)
