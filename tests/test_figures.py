"""minivae figures: every figure written at the quick size, every plotted number finite; its pieces."""
import numpy as np
import pytest

from minivae.app import plots
from minivae.app.figures import (FIGURES, QUICK, Context, Sizes, erase_bottom, samples_needed, shift,
                                 squared_distance, write_figures)
from minivae.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    lines = []
    return out, write_figures(out, QUICK, seed=0, log=lines.append), lines


def test_every_figure_is_written(quick_run):
    out, results, _ = quick_run
    assert set(results) == set(FIGURES)
    for file, _ in FIGURES.values():
        assert (out / file).stat().st_size > 1000, file


@pytest.mark.parametrize("name", [name for name in FIGURES if name not in ("reparameterization", "training_pipeline")])
def test_every_plotted_quantity_is_finite(quick_run, name):
    _, results, _ = quick_run
    assert results[name], name
    for quantity, values in results[name].items():
        assert np.all(np.isfinite(np.asarray(values, dtype=float))), (name, quantity)


def test_the_bounds_are_printed_in_order(quick_run):
    _, results, lines = quick_run
    elbo, bound, exact = results["bound_gap"]["bounds"].mean(axis=1)
    assert elbo < bound < exact + 0.05
    assert any(line.startswith("mean over 2 test images: ELBO") for line in lines)


def test_the_command_writes_what_it_is_asked_for(tmp_path, capsys):
    assert main(["figures", "--quick", "--only", "pixel_distance,training_pipeline", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "farther than the erasure" in out and "2 figures in" in out and "follows from --seed 0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixel_distance.png", "training_pipeline.png"]


def test_an_unknown_figure_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["figures", "--only", "manifold", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown manifold" in capsys.readouterr().err


def test_a_shift_moves_pixels_and_an_erasure_blanks_rows():
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    np.testing.assert_array_equal(shift(image, 1, 1)[0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    np.testing.assert_array_equal(erase_bottom(image, 1)[0], [[1, 2, 3], [4, 5, 6], [0, 0, 0]])
    assert squared_distance(erase_bottom(image, 1), image)[0] == pytest.approx((49 + 64 + 81) / 9)


def test_samples_needed_follows_one_over_root_n():
    assert samples_needed([1, 10, 100], np.array([1.0, 0.5, 0.2])) == pytest.approx(100 * (0.2 / 0.1) ** 2)


def _drawn_figures(monkeypatch):
    """Every matplotlib figure ``plots.save_figure`` is handed from now on, kept open instead of saved."""
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    return drawn


def test_a_quick_figure_says_so_in_its_title(tmp_path, monkeypatch):
    drawn = _drawn_figures(monkeypatch)
    write_figures(tmp_path, QUICK, seed=0, names=("bound_gap",), log=lambda line: None)
    assert drawn[-1]._suptitle.get_text().startswith("QUICK RUN (epochs 2, examples 2, seeds 3, ...): too small")


def test_a_full_size_figure_carries_no_warning():
    assert Sizes().changes() == [] and Context(Sizes(), None, None, 0).title("bounds") == "bounds"
    assert Context(Sizes(epochs=5), None, None, 0).title().startswith("REDUCED SIZES (epochs 5)")


@pytest.mark.parametrize("log_x, xs", [(True, [1, 4]), (True, [1, 10, 100]), (False, [1, 2, 5, 10, 20])])
def test_integer_quantities_get_integer_ticks(tmp_path, monkeypatch, log_x, xs):
    drawn = _drawn_figures(monkeypatch)
    plots.save_curves(tmp_path / "curves.png", {"a": (xs, np.arange(len(xs)), None)}, "K", "y", "t", log_x=log_x)
    axis = drawn[0].axes[0].xaxis
    assert list(axis.get_majorticklocs()) == xs
    assert [label.get_text() for label in axis.get_majorticklabels()] == [str(x) for x in xs]
    assert len(axis.get_minorticklocs()) == 0


def test_the_manifold_shows_z_on_its_axes(tmp_path, monkeypatch):
    drawn = _drawn_figures(monkeypatch)
    plots.save_manifold(tmp_path / "manifold.png", np.zeros((15 * 15, 64)), (8, 8), 15)
    ax = drawn[0].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z[0]", "z[1]")
    xs = [label.get_text() for label in ax.get_xticklabels()]
    ys = [label.get_text() for label in ax.get_yticklabels()]
    assert xs[0] == "-1.64" and xs[-1] == "1.64" and ys[0] == "1.64" and ys[-1] == "-1.64"  # z[1] falls downwards
