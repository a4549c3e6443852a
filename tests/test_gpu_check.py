"""The GPU acceptance check: without a GPU, one line and exit status 2; on one, a report whatever fails."""
import contextlib
import io
import re
import subprocess
import sys

import pytest

from minivae import backend, cli
from minivae.benchmarks import gpu_check, harness
from runs import skip_figures


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(harness, "gpu_name", lambda: None)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "no CUDA GPU here" in line and "pip install" in line
    assert not (tmp_path / "out").exists()


GPU_CHECK_MODEL = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "8", "--train-examples", "16", "--test-examples", "8",
        "--plot-interval", "0", "--quiet"]
NO_NVVM = "minivae: numba-cuda: a 2x3 product on the device failed (NvvmSupportError: libNVVM is not available)"
NO_NVMATH = "minivae: cupy: needs nvmath-python (cuBLAS's bindings): not installed"


def minivae_here(failing):
    """``minivae ARGV`` run in this process, as (status, stdout, stderr); on a backend named in ``failing``
    ({backend: its one line}) it fails at once, as it does on a GPU without what that backend needs."""
    def minivae(*argv):
        argv = [str(arg) for arg in argv]
        name = argv[argv.index("--backend") + 1]
        if name in failing:
            return 2, "", failing[name] + "\n"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli.main(argv)
        return status, out.getvalue(), ""
    return minivae


def failing_step(name):
    if name != "numpy":
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory\n(a second line)")
    return 0.002


@pytest.fixture
def failing_gpu(monkeypatch):
    """A GPU on which cupy lacks nvmath-python, numba-cuda cannot compile, the gpu tests fail, steps run out of memory."""
    monkeypatch.setattr(harness, "gpu_name", lambda: "a test GPU")
    monkeypatch.setattr(gpu_check, "available_backends", lambda: {
        "numpy": None, "numba": None, "cupy": NO_NVMATH[len("minivae: "):], "numba-cuda": NO_NVVM[len("minivae: "):]})
    monkeypatch.setattr(gpu_check, "MODEL", GPU_CHECK_MODEL)
    monkeypatch.setattr(gpu_check, "minivae", minivae_here({"cupy": NO_NVMATH, "numba-cuda": NO_NVVM}))
    monkeypatch.setattr(gpu_check, "run_gpu_tests", lambda: (False, "1 failed, 3 passed in 9.10s"))
    monkeypatch.setattr(gpu_check, "step_seconds", failing_step)
    skip_figures(monkeypatch)


def test_every_stage_that_fails_is_a_fail_row_and_the_report_is_written(failing_gpu, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    report = (tmp_path / "gpu_check.md").read_text().splitlines()
    for row in ("| cupy | cupy: needs nvmath-python (cuBLAS's bindings): not installed |",
                "FAIL: 1 failed, 3 passed in 9.10s",
                "| cupy --cuda-graph | FAIL: RuntimeError: minivae train --backend cupy --cuda-graph failed: "
                + NO_NVMATH + " |",
                "| numba-cuda | FAIL: no 2-epoch run to compare (RuntimeError: minivae train --backend numba-cuda "
                "failed: " + NO_NVVM + ") |",
                "| numba-cuda | FAIL: RuntimeError: CUDA_ERROR_OUT_OF_MEMORY: out of memory |",
                "| numpy | 2 ms |"):
        assert row in report, "\n".join(report)
    assert re.search(r"^\| numpy \| -\d+\.\d{3} \|$", "\n".join(report), re.MULTILINE)  # numpy's test ELBO
    assert report[-1].startswith("A check FAILED in ")


def test_a_section_that_crashes_is_a_fail_line_and_the_next_ones_run(failing_gpu, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "evaluate_section", lambda runs: 1 / 0)
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    report = (tmp_path / "gpu_check.md").read_text()
    assert ("## evaluate --iw-samples 5000 on the first 1,000 test images\n\nFAIL: ZeroDivisionError: division by zero"
            "\n\n## One training step" in report)  # its own title, not the Python function's name


@pytest.mark.skipif(harness.gpu_name() is not None, reason="a GPU is here: the check would run in full")
def test_the_module_runs_as_the_readme_says():
    done = subprocess.run([sys.executable, "-m", "minivae.benchmarks.gpu_check"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "no CUDA GPU" in done.stderr


def test_on_the_fake_gpu_cupy_passes_eager_and_captured(monkeypatch, tmp_path):
    """Every stage through gpu_check's own code on the fake CuPy: training, exact resume (with --cuda-graph too),
    evaluation and step times for cupy; numba-cuda's rows fail, and say why."""
    import fake_cupy
    import fake_nvmath
    fake_cupy.install(monkeypatch)
    fake_nvmath.install(monkeypatch)
    monkeypatch.setattr(harness, "gpu_name", lambda: "a fake GPU")
    monkeypatch.setattr(gpu_check, "MODEL", GPU_CHECK_MODEL)
    monkeypatch.setattr(gpu_check, "minivae", minivae_here({"numba-cuda": NO_NVVM}))  # the fake GPU has no numba
    monkeypatch.setattr(gpu_check, "run_gpu_tests", lambda: (True, "12 passed in 3.00s"))
    monkeypatch.setattr(gpu_check, "IW_SAMPLES", 4)
    monkeypatch.setattr(gpu_check, "IW_EXAMPLES", 4)
    skip_figures(monkeypatch)
    try:
        assert gpu_check.main(["--out", str(tmp_path)]) == 1  # numba-cuda fails
    finally:
        backend.set_backend("numpy")
    report = (tmp_path / "gpu_check.md").read_text()
    for row in ("| cupy | available |", "| cupy | bit-identical |", "| cupy --cuda-graph | bit-identical |",
                "| numba-cuda | FAIL: no 2-epoch run to compare (RuntimeError: minivae train --backend numba-cuda"):
        assert row in report, report
    assert re.search(r"^\| cupy --cuda-graph \| -\d+\.\d{3} \|$", report, re.MULTILINE), report
    assert re.search(r"^\| cupy \| \d+\.\d{3} \+- \d+\.\d{3} nats \| \d+\.\d s \|$", report, re.MULTILINE), report
    assert re.search(r"^\| cupy --cuda-graph \| [\d.]+ [mu]?s \|$", report, re.MULTILINE), report


def test_a_check_stopped_part_way_leaves_its_report_so_far(failing_gpu, monkeypatch, tmp_path):
    """As when ``timeout`` stops it: the sections done are in the report, and it says it did not finish."""
    def stopped():
        raise KeyboardInterrupt
    monkeypatch.setattr(gpu_check, "step_section", stopped)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    assert "## evaluate --iw-samples" in report and "## One training step" not in report
    assert report.endswith("(the check is still running)\n")
