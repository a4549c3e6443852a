"""Hardening: numerical extremes, the gradient checker in float32, the logvar clamp,
divergence, faults (SIGKILL, SIGINT, a full disk) and hostile checkpoints.

Bad options and files at the command line are in test_cli.py, the
training loop's own stops in test_train.py, hostile files at the library
level in test_data.py and test_checkpoint.py. docs/reliability.md maps each
case to its test.
"""
import errno
import os
import re
import signal
import subprocess
import sys
import time
import types

import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from checkpoint_files import UNPICKLED, Trap, altered, encoded_meta, write_npz
from minivae import cli, ops
from minivae.app import loop, run_checkpoint, training
from minivae.gradcheck import GradcheckError, check_grads
from minivae.ops import make_result
from minivae.tensor import Tensor
from minivae.vae import VAE
from runs import assert_one_line_error, assert_same_run, reference_checkpoint, run_cli, skip_figures, train_argv

# ----- Numerical extremes: logits up to +-1e4, logvar from -50 to 50, against 40-digit mpmath -----
#
# Each result is compared with the exact value at the same (dtype-rounded)
# inputs. A sum of terms can only be as accurate as its largest terms allow,
# so its error is measured against the sum of the terms' sizes, in units of
# the dtype's epsilon; a single value against itself.

mpmath.mp.dps = 40
DTYPES = [np.float32, np.float64]
NO_FLOAT_WARNINGS = {"over": "raise", "divide": "raise", "invalid": "raise"}


def vectors(low, high):
    """1 to 8 numbers in [low, high]."""
    return hnp.arrays(np.float64, st.integers(1, 8), elements=st.floats(low, high))


LOGITS, LOGVARS = vectors(-1e4, 1e4), vectors(-50, 50)


def engine(fn, dtype, *arrays):
    """fn's value and its inputs' gradients (seeded with ones), run in ``dtype`` with float warnings as errors."""
    tensors = [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]
    with np.errstate(**NO_FLOAT_WARNINGS):
        out = fn(*tensors)
        out.backward(np.ones(out.shape))
    assert out.dtype == dtype
    return out.numpy().astype(np.float64), [t.grad.astype(np.float64) for t in tensors]


def exact(fn, *arrays):
    """fn of mpmath numbers, elementwise over equal-length arrays, rounded to float64."""
    return np.array([float(fn(*map(mpmath.mpf, row))) for row in zip(*(a.tolist() for a in arrays))])


def rounded(array, dtype):
    """The inputs the engine really sees: ``array`` rounded to ``dtype``, held in float64."""
    return np.asarray(array, dtype=dtype).astype(np.float64)


def assert_accurate(out, truth, scale, dtype, ulps):
    """|out - truth| <= ulps * eps * scale, plus the smallest normal number for results that underflow."""
    finfo = np.finfo(dtype)
    assert np.isfinite(out).all()
    error = np.abs(out - truth)
    allowed = ulps * finfo.eps * np.asarray(scale) + finfo.smallest_normal
    assert (error <= allowed).all(), f"error {error} > allowed {allowed} (out {out}, exact {truth})"


def mp_sigmoid(a):
    return 1 / (1 + mpmath.exp(-a))


def mp_softplus(a):
    return mpmath.log1p(mpmath.exp(a))


@pytest.mark.parametrize("dtype", DTYPES)
@given(logits=LOGITS)
def test_softplus_and_sigmoid_are_accurate_to_a_few_ulps(dtype, logits):
    logits = rounded(logits, dtype)
    softplus, (d_softplus,) = engine(ops.softplus, dtype, logits)
    sigmoid, (d_sigmoid,) = engine(ops.sigmoid, dtype, logits)
    assert_accurate(softplus, exact(mp_softplus, logits), exact(mp_softplus, logits), dtype, ulps=2)
    assert_accurate(d_softplus, exact(mp_sigmoid, logits), exact(mp_sigmoid, logits), dtype, ulps=2)
    assert_accurate(sigmoid, exact(mp_sigmoid, logits), exact(mp_sigmoid, logits), dtype, ulps=2)
    # out (1 - out): relative accuracy for a < 0; for a > 0 the 1 - out step keeps eps / 4 absolute.
    d_exact = exact(lambda a: mp_sigmoid(a) * (1 - mp_sigmoid(a)), logits)
    assert_accurate(d_sigmoid, d_exact, np.maximum(d_exact, 0.25), dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_bernoulli_log_likelihood_from_logits(dtype, data):
    """sum(x l - softplus(l)), accurate relative to the size of its terms; dl = x - sigmoid(l) to a few eps."""
    logits = rounded(data.draw(LOGITS), dtype)
    x = rounded(data.draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0, 1))), dtype)
    out, (d_logits,) = engine(lambda t: ops.bernoulli_log_prob(x.astype(dtype), t), dtype, logits)
    terms = exact(lambda xj, lj: xj * lj - mp_softplus(lj), x, logits)
    sizes = exact(lambda xj, lj: abs(xj * lj) + mp_softplus(lj), x, logits)
    assert_accurate(out, [sum(terms)], sizes.sum(), dtype, ulps=2 * len(x))
    assert_accurate(d_logits, exact(lambda xj, lj: xj - mp_sigmoid(lj), x, logits), 1.0, dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=LOGITS)
def test_logsumexp(dtype, a):
    """ln sum e^a, within a few eps of (max |a| + ln n); the softmax gradient within eps (|a_i| + out) of itself."""
    a = rounded(a, dtype)
    out, (softmax,) = engine(lambda t: t.logsumexp(), dtype, a)
    lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in a.tolist()))
    assert_accurate(out, [float(lse)], np.abs(a).max() + np.log(len(a)) + 1, dtype, ulps=4)
    softmax_exact = exact(lambda v: mpmath.exp(v - lse), a)
    assert_accurate(softmax, softmax_exact, softmax_exact * (np.abs(a) + abs(float(lse)) + 1), dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_kl_standard_normal(dtype, data):
    """-1/2 sum(1 + lv - mu^2 - e^lv), relative to the size of its terms; d/dlv = (e^lv - 1) / 2 to a few ulps."""
    logvar = rounded(data.draw(LOGVARS), dtype)
    mu = rounded(data.draw(hnp.arrays(np.float64, logvar.shape, elements=st.floats(-100, 100))), dtype)
    out, (d_mu, d_logvar) = engine(lambda m, lv: ops.kl_normal(m.reshape(1, -1), lv.reshape(1, -1)), dtype,
                                   mu, logvar)
    terms = exact(lambda m, lv: -(1 + lv - m * m - mpmath.exp(lv)) / 2, mu, logvar)
    sizes = exact(lambda m, lv: (1 + abs(lv) + m * m + mpmath.exp(lv)) / 2, mu, logvar)
    assert_accurate(out, [sum(terms)], sizes.sum(), dtype, ulps=2 * len(mu) + 2)
    np.testing.assert_array_equal(d_mu, mu)
    d_exact = exact(lambda lv: mpmath.expm1(lv) / 2, logvar)
    assert_accurate(d_logvar, d_exact, np.abs(d_exact), dtype, ulps=2)


# ----- The gradient checker under stress: float32 -----

def half_expm1_minus_identity(backward_formula):
    """A primitive out = (e^a - 1 - a) / 2 whose backward computes (e^a - 1) / 2 by ``backward_formula``."""
    def primitive(a):
        def backward(g):
            return (g * backward_formula(a.data) / 2,)
        return make_result((np.expm1(a.data) - a.data) / 2, (a,), backward, backward_formula.__name__)
    return primitive


def cancelling(a):
    """e^a - 1 as written: for |a| ~ 1e-4 the subtraction keeps only the last few digits of e^a."""
    return np.exp(a) - 1


SMALL = np.random.default_rng(0).uniform(-1e-4, 1e-4, 6)


@pytest.mark.parametrize("formula", [np.expm1, cancelling], ids=["expm1", "exp-1"])
def test_float64_cannot_tell_a_cancelling_backward_from_a_careful_one(formula):
    report = check_grads(half_expm1_minus_identity(formula), SMALL)
    assert report.dtype == "float64" and report.max_rel_error < 1e-6


def test_float32_reports_the_gradient_that_loses_its_digits():
    careful = check_grads(half_expm1_minus_identity(np.expm1), SMALL, dtype=np.float32, rtol=1e-4)
    assert careful.dtype == "float32" and careful.max_rel_error < 1e-6
    with pytest.raises(GradcheckError, match=r"exp-1, argument 0, index \(\d,\).*"
                                             r"\(float32 engine vs float64 differences\) .*rel error 0\.00"):
        check_grads(half_expm1_minus_identity(cancelling), SMALL, dtype=np.float32, rtol=1e-4, name="exp-1")


def test_float32_report_measures_float32_rounding_of_a_right_gradient():
    """A right gradient in float32 is off by float32 rounding: above float64's 1e-9, below rtol 1e-4."""
    x = np.random.default_rng(1).standard_normal((3, 4))
    single = check_grads(lambda a: (a * a).tanh().sum(axis=1).exp(), x, dtype=np.float32, rtol=1e-4)
    double = check_grads(lambda a: (a * a).tanh().sum(axis=1).exp(), x)
    assert 1e-9 < single.max_rel_error < 1e-4 and double.max_rel_error < 1e-8


# ----- The logvar clamp -----

def test_logvar_clamp_keeps_the_kl_finite_where_exp_logvar_overflows():
    x = Tensor(np.full((2, 6), 0.5, dtype=np.float32))
    free, clamped = (VAE((6, 5), 2, (5, 6), logvar_clamp=clamp, rng=np.random.default_rng(0)) for clamp in (None, 10))
    clamped.load_state_dict(free.state_dict())
    for model in (free, clamped):
        model.fc_heads.bias.data[2:] = [200.0, 0.0]  # logvar's bias; e^200 overflows float32
    (_, loose), (_, tight) = free.encode(x), clamped.encode(x)
    np.testing.assert_array_equal(tight.numpy(), ops.clip(loose, -10, 10).numpy())
    assert free.config["logvar_clamp"] is None and clamped.config["logvar_clamp"] == 10.0
    with np.errstate(over="ignore", invalid="ignore"):  # z = mu + inf * 0 is NaN too
        assert np.isinf(free.elbo(x, eps=np.zeros((1, 2, 2))).kl.numpy()).all()
    assert np.isfinite(clamped.elbo(x, eps=np.zeros((1, 2, 2))).kl.numpy()).all()


# ----- Divergence: a clear message, and no NaN in any checkpoint -----

def test_a_learning_rate_that_diverges_stops_before_any_checkpoint(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 3, "--lr", "1000"), capsys)
    assert_one_line_error(status, err, "minivae: training diverged at epoch 1, step ",
                          "the loss or the updated parameters are not finite; lower --lr (now 1000) or set "
                          "--logvar-clamp; no checkpoint was written yet", code=3)
    assert list(tmp_path.iterdir()) == []


def test_divergence_after_good_epochs_leaves_their_checkpoint_untouched(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    assert run_cli(train_argv(tmp_path, 2), capsys)[0] == 0
    saved = checkpoint.read_bytes()
    real_step = loop.train_step

    def step_from_nan_weights(model, optimizer, *args):
        optimizer.flat.data[0] = np.nan  # as if a previous update had gone wrong
        return real_step(model, optimizer, *args)
    monkeypatch.setattr(loop, "train_step", step_from_nan_weights)
    status, _, err = run_cli(train_argv(tmp_path, 4, "--resume", str(checkpoint)), capsys)
    assert_one_line_error(status, err, "training diverged at epoch 3, step 1",
                          f"the checkpoint {checkpoint} (epoch 2) is intact", code=3)
    assert checkpoint.read_bytes() == saved
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


# ----- Faults: SIGKILL at random moments, Ctrl-C, a full disk -----

# The child runs `minivae train` for real, with two changes: no figures (they
# would add seconds), and, if asked, its N-th checkpoint write stops after a
# fraction of the bytes, says so and waits to be killed mid-write.
CHILD = """
import io, sys, time
import numpy as np
from minivae import cli
from minivae.app import run_checkpoint
from minivae.app import training

training.write_figures = lambda *args, **kwargs: None
stall_at, fraction = int(sys.argv[1]), float(sys.argv[2])
real_savez, writes = np.savez, []

def savez_stalling(file, **arrays):
    writes.append(1)
    if len(writes) != stall_at:
        return real_savez(file, **arrays)
    whole = io.BytesIO()
    real_savez(whole, **arrays)
    file.write(whole.getvalue()[:int(fraction * len(whole.getvalue()))])
    file.flush()
    print("stalled in checkpoint write", len(writes), flush=True)
    time.sleep(120)

np.savez = savez_stalling
sys.exit(cli.main(sys.argv[3:]))
"""
EPOCHS = 6


def start_child(out, epochs=EPOCHS, stall_at=0, fraction=0.0):
    return subprocess.Popen([sys.executable, "-u", "-c", CHILD, str(stall_at), str(fraction),
                             *train_argv(out, epochs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(child, prefix):
    """Read the child's stdout until a line starts with ``prefix``."""
    for line in child.stdout:
        if line.startswith(prefix):
            return line
    child.wait(timeout=60)
    pytest.fail(f"the child ended (status {child.returncode}) before printing {prefix!r}: {child.stderr.read()}")


def kill_points(seed=20240611):
    """Where to kill: mid-way through the first checkpoint write, through two later ones, and 3 random delays."""
    rng = np.random.default_rng(seed)
    writes = [(1, rng.uniform(0.05, 0.95))] + [(int(rng.integers(2, EPOCHS + 1)), rng.uniform(0.05, 0.95))
                                               for _ in range(2)]
    points = [pytest.param(write, float(fraction), 0.0, id=f"in write {write} at {fraction:.0%}")
              for write, fraction in writes]
    return points + [pytest.param(0, 0.0, float(delay), id=f"{delay:.2f} s after epoch 1")
                     for delay in rng.uniform(0, 0.4, 3)]


@pytest.mark.parametrize("stall_at, fraction, delay", kill_points())
def test_sigkill_anywhere_leaves_a_checkpoint_that_resumes_exactly(tmp_path, tmp_path_factory, monkeypatch,
                                                                   stall_at, fraction, delay):
    reference = reference_checkpoint(tmp_path_factory, EPOCHS)
    child = start_child(tmp_path, stall_at=stall_at, fraction=fraction)
    wait_for_line(child, "stalled in checkpoint write" if stall_at else "epoch   1 ")
    time.sleep(delay)
    child.kill()
    child.communicate(timeout=60)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    saved = len(run_checkpoint.read_training_checkpoint(checkpoint)[1]["history"]) if checkpoint.exists() else 0
    if stall_at:
        assert saved == stall_at - 1  # the write in progress was lost, the one before it is whole
    else:
        assert saved >= 1
    skip_figures(monkeypatch)
    if saved == 0:  # killed during the first write: nothing to resume, start again
        assert cli.main(train_argv(tmp_path, EPOCHS)) == 0
    elif saved < EPOCHS:
        assert cli.main(train_argv(tmp_path, EPOCHS, "--resume", str(checkpoint))) == 0
    assert_same_run(checkpoint, reference)


def test_sigint_exits_130_and_the_checkpoint_resumes_exactly(tmp_path, tmp_path_factory, monkeypatch):
    child = start_child(tmp_path, epochs=1000)
    wait_for_line(child, "epoch   2 ")
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    (line,) = err.splitlines()
    found = re.fullmatch(rf"minivae: interrupted in epoch \d+; the checkpoint {checkpoint} \(epoch (\d+)\) is intact; "
                         rf"continue with the same options and --resume {checkpoint}", line)
    assert child.returncode == 130 and found, line
    _, meta, _ = run_checkpoint.read_training_checkpoint(checkpoint)
    saved = len(meta["history"])
    # The file can be one epoch ahead of the message if Ctrl-C lands between the
    # rename and the return of save_checkpoint (its directory fsync); --resume reads the file.
    assert saved - int(found.group(1)) in (0, 1) and saved >= 2
    reference = reference_checkpoint(tmp_path_factory, saved + 1)
    skip_figures(monkeypatch)
    assert cli.main(train_argv(tmp_path, saved + 1, "--resume", str(checkpoint))) == 0
    assert_same_run(checkpoint, reference)


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    assert run_cli(train_argv(tmp_path, 2), capsys)[0] == 0
    saved = checkpoint.read_bytes()

    def savez_until_the_disk_fills(file, **arrays):
        file.write(b"PK\x03\x04" + bytes(1000))
        disk_full()
    monkeypatch.setattr(np, "savez", savez_until_the_disk_fills)
    status, _, err = run_cli(train_argv(tmp_path, 4, "--resume", str(checkpoint)), capsys)
    assert_one_line_error(status, err, f"cannot write checkpoint {checkpoint} ([Errno 28] No space left on device)",
                          f"the checkpoint {checkpoint} (epoch 2) is intact")
    assert checkpoint.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.jsonl"]


def test_a_full_disk_while_writing_metrics_names_the_saved_epoch(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    monkeypatch.setattr(training, "write_atomically", disk_full)  # metrics.jsonl's writer
    status, _, err = run_cli(train_argv(tmp_path, 2), capsys)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    assert_one_line_error(status, err, f"cannot write metrics or figures in {tmp_path} ([Errno 28] No space left",
                          f"the checkpoint {checkpoint} (epoch 1) is intact; free some space, then the same "
                          f"options and --resume {checkpoint} write what is missing and go on")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    assert len(run_checkpoint.read_training_checkpoint(checkpoint)[1]["history"]) == 1


def test_too_little_free_space_is_reported_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=5 << 20))
    status, _, err = run_cli(train_argv(tmp_path, 2), capsys)
    assert_one_line_error(status, err, f"only 5.0 MiB free in {tmp_path}, but a checkpoint and the figures need "
                          "about 8.0 MiB; free some space or choose another --out")
    assert list(tmp_path.iterdir()) == []


# ----- Hostile checkpoints at the command line -----

def test_a_pickled_checkpoint_is_refused_without_unpickling(tmp_path, capsys):
    evil = write_npz(tmp_path / "evil.npz", trap=np.array([Trap()], dtype=object),
                     __meta__=encoded_meta({"format_version": 1, "meta": {}}))
    for argv in (["sample", str(evil)], train_argv(tmp_path / "run", 3, "--resume", str(evil))):
        status, _, err = run_cli(argv, capsys)
        assert_one_line_error(status, err, "evil.npz: array 'trap' holds Python objects, which only pickle could "
                              "load, and minivae never unpickles")
    assert UNPICKLED == []


def nan_weight(arrays, meta):
    arrays["model/fc_heads.weight"][0, 0] = np.nan


def integer_weights(arrays, meta):
    arrays["model/fc_heads.bias"] = arrays["model/fc_heads.bias"].astype(np.int64)


def not_from_training(arrays, meta):
    meta.clear()


def epochs_miscounted(arrays, meta):
    meta["history"][1]["epoch"] = 7


def unknown_option(arrays, meta):
    meta["config"]["warp_drive"] = True


@pytest.mark.parametrize("change, message", [
    (nan_weight, "model/fc_heads.weight is not an array of finite floats; it is damaged"),
    (integer_weights, "model/fc_heads.bias is int64, not the model's float32; it is damaged"),
    (not_from_training, "is not a checkpoint written by minivae train: its metadata lacks config, model, optimizer, "
                        "rng, history"),
    (epochs_miscounted, "its history does not count epochs 1, 2, ...; it is damaged"),
    (unknown_option, "its training options do not fit this minivae (TrainConfig.__init__() got an unexpected "
                     "keyword argument 'warp_drive')"),
])
def test_a_damaged_training_checkpoint_is_refused(tmp_path, tmp_path_factory, capsys, change, message):
    damaged = altered(reference_checkpoint(tmp_path_factory, 3), tmp_path / "damaged.npz", change)
    for argv in (["sample", str(damaged)], train_argv(tmp_path / "run", 4, "--resume", str(damaged))):
        status, _, err = run_cli(argv, capsys)
        assert_one_line_error(status, err, message)
