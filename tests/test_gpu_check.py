"""The GPU acceptance check refuses, in one line and with exit status 2, where it cannot run."""
import subprocess
import sys

import pytest

from minivae.benchmarks import gpu_check, harness


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(harness, "gpu_name", lambda: None)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "no CUDA GPU here" in line and "pip install" in line
    assert not (tmp_path / "out").exists()


def test_a_gpu_without_the_gpu_packages_names_what_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(harness, "gpu_name", lambda: "a test GPU")
    monkeypatch.setattr(gpu_check, "available_backends",
                        lambda: {"numpy": None, "numba": None, "cupy": "cupy: package not installed (pip ...)",
                                 "numba-cuda": None})
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "minivae: gpu_check: cupy: package not installed (pip ...)"


@pytest.mark.skipif(harness.gpu_name() is not None, reason="a GPU is here: the check would run in full")
def test_the_module_runs_as_the_readme_says():
    done = subprocess.run([sys.executable, "-m", "minivae.benchmarks.gpu_check"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "no CUDA GPU" in done.stderr
