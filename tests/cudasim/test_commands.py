"""The user's commands end to end on --backend numba-cuda, under the CUDA simulator (see end_to_end.py)."""
import pytest

from end_to_end import check_user_path

# The simulator runs numba's xoroshiro arithmetic on NumPy uint64 scalars, which warn when they wrap (as intended).
pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning",
                                        "ignore:overflow encountered:RuntimeWarning")


def test_train_resume_evaluate_sample_reconstruct(tmp_path, capsys, monkeypatch):
    check_user_path("numba-cuda", tmp_path, capsys, monkeypatch)
