"""The user's commands end to end on --backend numba-cuda, under the CUDA simulator (see end_to_end.py)."""
from end_to_end import SMALL, check_user_path
from minivae import backend
from runs import assert_one_line_error, run_cli


def test_train_resume_evaluate_sample_reconstruct(tmp_path, capsys, monkeypatch):
    check_user_path("numba-cuda", tmp_path, capsys, monkeypatch)


def test_resume_with_another_backends_generator_is_refused_in_one_line(tmp_path, capsys):
    argv = ["train", *SMALL, "--epochs", "1", "--out", str(tmp_path)]
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    status, _, err = run_cli([*argv[:-4], "--epochs", "2", "--out", str(tmp_path), "--backend", "numba-cuda",
                              "--resume", str(tmp_path / "checkpoint.npz")], capsys)
    backend.set_backend("numpy")
    assert_one_line_error(status, err, "random state is from generator 'PCG64', not Philox4x32-10",
                          "written with --backend numpy, resume with that backend")
