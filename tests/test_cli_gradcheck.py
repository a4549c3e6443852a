"""``minivae gradcheck``: one row per primitive of the table and per ELBO case, and a one-line refusal of bad flags."""
import pytest

from minivae.cli import main
from minivae.modelcases import model_cases
from minivae.opcases import CASES


def test_gradcheck_prints_a_passing_row_per_case(capsys):
    assert main(["gradcheck", "--trials", "1"]) == 0
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows == {case.name: "ok" for case in CASES + model_cases()}


def test_zero_trials_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["gradcheck", "--trials", "0"])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("minivae gradcheck: ") and "--trials: 0 must be a positive whole number" in line
