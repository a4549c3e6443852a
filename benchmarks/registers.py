"""The registers and shared memory of the GPU kernels docs/performance.md discusses, from ``ptxas -v``: no GPU needed.

    python -m minivae.benchmarks.registers

For sm_90 (the H200), it compiles to PTX with numba-cuda's NVVM

- ``matmul 16x16`` and ``matmul 8x8``: ``MATMUL[float32, side]``, with the
  C-contiguous operands the backend passes (a strided layout costs more
  registers);
- ``normals (numba-cuda)``: the Philox draw for float32;

and reads each one's use from CUDA's ``ptxas -v``; then ``philox_normals_f32``
from ``nvcc -cubin -Xptxas -v kernels/random.cu`` (the cupy backend's draw).
Needs numba-cuda (not the simulator), NVRTC and CUDA's ``ptxas`` and ``nvcc``
on PATH. numba-cuda compiles a kernel's device functions for the current
GPU's compute capability; where there is no GPU, sm_90 stands in for it.
"""
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

ARCH = "sm_90"
KERNELS = Path(__file__).resolve().parent.parent / "kernels"


class NoDevice:
    compute_capability = (int(ARCH[3]), int(ARCH[4]))


def ptxas_usage(text):
    """{entry function: (registers, shared bytes)} from ``ptxas -v``'s report."""
    usage, entry = {}, None
    for line in text.splitlines():
        compiling = re.search(r"Compiling entry function '(\w+)'", line)
        used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
        if compiling:
            entry = compiling.group(1)
        elif used and entry:
            usage[entry] = (int(used.group(1)), int(used.group(2) or 0))
    return usage


def ptxas(ptx):
    """(registers, shared bytes) of the one kernel in ``ptx``, by ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "kernel.ptx"
        path.write_text(ptx, encoding="utf-8")
        done = subprocess.run(["ptxas", "-v", f"-arch={ARCH}", str(path), "-o", str(path.with_suffix(".cubin"))],
                              capture_output=True, text=True, check=True)
    (usage,) = ptxas_usage(done.stderr).values()
    return usage


def numba_cuda_usage():
    """{kernel: (registers, shared bytes)} of the numba-cuda kernels, each compiled to PTX for ``ARCH``."""
    from numba import boolean, cuda, float32, int64, uint32
    from numba.cuda import dispatcher

    from minivae.kernels.numba_cuda_matmul import MATMUL
    from minivae.kernels.numba_cuda_random import normals_kernel
    matrix, planes = float32[:, ::1], float32[:, :, ::1]
    kernels = {f"matmul {side}x{side}": (MATMUL[np.dtype(np.float32), side], (matrix, matrix, planes, boolean,
                                                                               boolean, int64)) for side in (16, 8)}
    kernels["normals (numba-cuda)"] = (normals_kernel, (uint32[::1], float32[::1], int64))
    with mock.patch.object(dispatcher, "get_current_device", NoDevice):
        return {name: ptxas(cuda.compile_ptx(kernel.py_func, signature, cc=NoDevice.compute_capability)[0])
                for name, (kernel, signature) in kernels.items()}


def cuda_c_usage():
    """{kernel: (registers, shared bytes)} of kernels/random.cu's float32 draw, by ``nvcc -Xptxas -v``."""
    done = subprocess.run(["nvcc", "-cubin", f"-arch={ARCH}", "-Xptxas", "-v", f"-I{KERNELS}", "-o", "/dev/null",
                           str(KERNELS / "random.cu")], capture_output=True, text=True, check=True)
    return {"philox_normals_f32 (CUDA C)": ptxas_usage(done.stderr)["philox_normals_f32"]}


def missing():
    """One line naming what this machine lacks to compile the kernels, or None."""
    try:
        importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return "numba-cuda is not installed (numba's own CUDA target cannot compile these): pip install numba-cuda"
    tools = [tool for tool in ("ptxas", "nvcc") if shutil.which(tool) is None]
    return f"{' and '.join(tools)} not on PATH: install CUDA's compiler (the toolkit's bin/)" if tools else None


def main():
    why = missing()
    if why:
        print(f"minivae.benchmarks.registers: {why}", file=sys.stderr)
        return 2
    rows = numba_cuda_usage() | cuda_c_usage()
    print(f"| kernel ({ARCH}) | registers a thread | shared memory a block |\n|---|---|---|")
    for name, (registers, shared) in rows.items():
        print(f"| {name} | {registers} | {shared} bytes |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
