"""Nothing of the user's is deleted or replaced: each case runs ``python -m minivae`` as a subprocess.

docs/reliability.md names each test here against the case it covers.
"""
import os

from minivae.app.run_checkpoint import CHECKPOINT_NAME
from runs import TINY, assert_refused, ended_pid, minivae


def tiny_train(out, epochs=1, *extra):
    """``minivae train`` of a tiny model as a subprocess."""
    return minivae("train", *TINY, "--epochs", epochs, "--out", out, *extra)


# ----- Temporary files -----

def test_only_minivaes_own_temporaries_of_ended_runs_are_removed_and_only_by_an_accepted_run(tmp_path):
    run = tmp_path / "d"
    run.mkdir()
    users = {run / ".settings.json.tmp": b"x\n", run / ".draft.v2.tmp": b"draft\n"}
    for path, content in users.items():
        path.write_bytes(content)
    live = run / f".metrics.jsonl.minivae-{os.getpid()}-abcd_123.tmp"  # a live minivae's (this process)
    live.write_bytes(b"being written")
    killed = run / f".checkpoint.npz.minivae-{ended_pid()}-abcd_123.tmp"
    killed.write_bytes(b"half a checkpoint")
    first = tiny_train(run)
    assert first.returncode == 0, first.stderr
    assert f"removed 1 temporary file(s) a killed run left in {run}: {killed.name}" in first.stdout
    assert not killed.exists() and live.exists()
    assert {path: path.read_bytes() for path in users} == users
    killed.write_bytes(b"half a checkpoint")
    refused = tiny_train(run)  # the directory holds a run: refused before anything is removed
    assert_refused(refused, f"{run} already holds a run")
    assert killed.exists() and live.exists() and {path: path.read_bytes() for path in users} == users


# ----- Files a run would write -----

def test_a_directory_holding_a_file_the_run_would_write_is_refused_unless_overwrite(tmp_path):
    run = tmp_path / "d"
    run.mkdir()
    users = {run / "metrics.jsonl": b"my own metrics\n", run / "loss_curves.png": b"my own figure"}
    for path, content in users.items():
        path.write_bytes(content)
    refused = tiny_train(run)
    assert_refused(refused, f"{run} holds metrics.jsonl, loss_curves.png, which this run would replace",
                   "--overwrite")
    assert {path: path.read_bytes() for path in users} == users and not (run / CHECKPOINT_NAME).exists()
    replaced = tiny_train(run, 2, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert f"--overwrite: metrics.jsonl, loss_curves.png in {run} will be replaced" in replaced.stdout
    assert replaced.stdout.splitlines()[-1] == (
        f"outputs in {run}/: checkpoint.npz, metrics.jsonl, loss_curves.png, latent_scatter.png, manifold.png, "
        "reconstruction_2.png, sample_2.png")
    written = replaced.stdout.splitlines()[-1].split(": ", 1)[1].split(", ")
    assert sorted(written) == sorted(path.name for path in run.iterdir() if not path.name.startswith("."))
