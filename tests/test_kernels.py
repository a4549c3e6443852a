"""The CPU kernel sets against the NumPy reference: one table, kernel x backend x dtype x layout."""
import importlib
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from kernel_cases import (CASES, LAYOUTS, Arrays, assert_matches_reference,
                          assert_rng_state_round_trips)
from minivae.kernels import numba_cpu, reference
from minivae.kernels.reference import KERNEL_NAMES

KERNEL_SETS = ("reference", "numba_cpu", "numba_cuda", "cupy_kernels")
RNG_KERNELS = ("make_rng", "standard_normal")  # no array inputs: one layout is enough
TABLE = [(name, layout) for name in CASES for layout in (LAYOUTS[:1] if name in RNG_KERNELS else LAYOUTS)]


@pytest.fixture(params=["numpy", "numba", "numba-parallel"])
def kernels(request, monkeypatch):
    """The kernel set under test; numba-parallel forces the parallel twins even on tiny arrays."""
    if request.param == "numpy":
        return reference
    if request.param == "numba-parallel":
        monkeypatch.setattr(numba_cpu, "PARALLEL_MIN_SIZE", 0)
    return numba_cpu


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, layout", TABLE)
def test_kernel_matches_reference(kernels, name, layout, dtype):
    assert_matches_reference(kernels, name, dtype, layout)


def test_rng_state_round_trips(kernels):
    assert_rng_state_round_trips(kernels)


@pytest.mark.parametrize("module", KERNEL_SETS)
def test_kernel_set_exports_exactly_the_contract(module):
    kernels = importlib.import_module("minivae.kernels." + module)
    public = {name for name, obj in vars(kernels).items()
              if callable(obj) and not inspect.isclass(obj) and not name.startswith("_")
              and getattr(obj, "__module__", None) in (kernels.__name__, reference.__name__)}
    assert public == set(KERNEL_NAMES) | (set(reference.FORMULAS) if module == "reference" else set())


def test_unknown_activation_names_the_choices():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="unknown activation 'gelu'.*relu"):
        numba_cpu.bias_act(x, x[0], "gelu")


def test_import_minivae_imports_neither_numba_nor_cupy():
    code = ("import sys, minivae, minivae.backend, minivae.kernels, minivae.kernels.reference; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'cupy')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize("chosen, expected", [(None, "workqueue"), ("omp", "omp")])
def test_numba_kernels_use_a_threading_layer_that_does_not_spin(chosen, expected):
    """The numba backend picks ``workqueue`` (workers sleep, never spin against BLAS) unless the user chose."""
    code = ("import numpy as np, numba; from minivae.kernels import numba_cpu as k; "
            "p = np.zeros(k.PARALLEL_MIN_SIZE, np.float32); k.sgd_step(p, p.copy(), p.copy(), 0.1); "
            "print(numba.threading_layer())")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"}
    if chosen:
        env["NUMBA_THREADING_LAYER"] = chosen
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == expected


RETURNING = [name for name in CASES if name not in ("make_rng", "adam_step", "sgd_step")]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", RETURNING)
def test_numba_kernels_write_into_out_exactly_what_they_return(name, layout):
    """The recorded step replays each kernel into the arrays its first call returned: out= changes only where."""
    calls = zip(CASES[name](Arrays(np.float32, layout), numba_cpu), CASES[name](Arrays(np.float32, layout), numba_cpu))
    for (args, kwargs), (same_args, _) in calls:
        want = getattr(numba_cpu, name)(*args, **kwargs)
        results = want if isinstance(want, tuple) else (want,)
        out = tuple(np.full_like(r, np.nan) for r in results)
        got = getattr(numba_cpu, name)(*same_args, **kwargs, out=out if isinstance(want, tuple) else out[0])
        for result, expected, target in zip(got if isinstance(got, tuple) else (got,), results, out):
            np.testing.assert_array_equal(result, expected)
            assert result is target or result is same_args[0], "a result not written into out (nor its input g)"


def test_the_kl_gradient_into_out_allocates_no_array_of_its_size():
    """A replay into out= writes exp(logvar) - 1 into the logvar gradient and scales it there: NumPy's allocations
    (which tracemalloc sees) stay far below one B x D array."""
    import tracemalloc
    rng = np.random.default_rng(0)
    g, mu, logvar = rng.standard_normal(256), rng.standard_normal((256, 64)), rng.standard_normal((256, 64))
    out = (np.empty_like(mu), np.empty_like(mu))
    numba_cpu.kl_normal_backward(g, mu, logvar, out=out)  # compiled before measuring
    tracemalloc.start()
    try:
        numba_cpu.kl_normal_backward(g, mu, logvar, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < mu.nbytes / 4, f"{peak} bytes allocated; one 256 x 64 array is {mu.nbytes}"


def test_a_numba_kernel_refuses_an_out_that_does_not_fit():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"bias_act: out must be a C-contiguous float32 array of shape \(4, 3\)"):
        numba_cpu.bias_act(x, x[0], "relu", out=np.empty((3, 4), np.float32).T)


def test_a_numba_kernel_of_two_results_refuses_an_out_of_another_length():
    mu = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"^kl_normal_backward: out must hold 2 arrays, one per result, got 1$"):
        numba_cpu.kl_normal_backward(mu[:, 0], mu, mu, out=(np.empty_like(mu),))


def test_every_numba_cuda_kernel_is_compiled_once_per_machine():
    """Each @cuda.jit kernel (not a device function) asks for numba's on-disk cache, so a process does not
    recompile it: read from the sources, since the simulator ignores the flag."""
    import ast
    from pathlib import Path
    uncached = []
    for path in sorted((Path(reference.__file__).parent).glob("numba_cuda*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    if ast.unparse(target) != "cuda.jit":
                        continue
                    flags = {k.arg: ast.unparse(k.value) for k in getattr(decorator, "keywords", [])}
                    if flags.get("device") != "True" and flags.get("cache") != "True":
                        uncached.append(f"{path.name}:{node.lineno} {node.name}")
    assert not uncached, uncached
