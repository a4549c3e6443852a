"""A training run, start to finish: ``train`` runs ``loop.run_epoch`` until ``--epochs``, saving as it goes.

After each epoch (``loop.py``: the step and the epoch) a checkpoint holding
everything needed to continue (``Run``: weights, optimizer state, both random
generators, history) replaces the previous one atomically, and then
``metrics.jsonl`` and the figures are written. Here is the rest of the run:
whether the step is captured (``make_step``), and what can go wrong, and
what happens (docs/reliability.md has the table):

- a loss, or parameters after an update, that are not finite stop training
  with the epoch and step (``Diverged``) before anything is saved (a step
  replayed from a CUDA graph is checked at the end of its epoch instead);
- Ctrl-C (or SIGTERM) stops with one line saying which epoch the checkpoint
  holds and how to resume (``TrainingInterrupted``); under
  ``stop_requests.stop_requests()`` (the command) it stops before the next
  step, or after the epoch's outputs, never inside an import or a figure;
- the output directory is owned (``rundir.own_run_directory``): a second run
  on it refuses at once, and a run never replaces another's checkpoint, or any
  file it would write (``outputs.run_outputs``), unless told to
  (``--overwrite``);
- a kill or a crash at any moment leaves the previous checkpoint, because it
  is only ever replaced by a rename;
- too little free space is reported before training starts, a failed write
  afterwards names the checkpoint that is still intact; ``--resume`` in its
  directory first writes what a stopped run left unwritten.
"""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from minivae.app import plots
from minivae.app.checkpoint import check_writable, save_checkpoint
from minivae.app.loop import Diverged, EagerStep, describe_objective, objective_name, run_epoch
from minivae.app.files import write_atomically
from minivae.app.outputs import METRICS_NAME, draws_figures, figure_names, run_outputs, unwritten_outputs
from minivae.app.run_checkpoint import (CHECKPOINT_NAME, checkpoint_nbytes, checkpoint_payload,
                                        read_training_checkpoint, restore_checkpoint)
from minivae.app.run_memory import check_run_memory
from minivae.app.runconfig import prepare_data, start_run
from minivae.app.rundir import own_run_directory
from minivae.app.stop_requests import check_stop
from minivae.app.static_step import CAPTURING_BACKENDS, CaptureFailed, StaticStep, why_not_static
from minivae.app.threads import choose_threads, product_size, threads_limited
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.tensor import Tensor, no_grad

# Room kept free beside a new checkpoint: figures (well under 1 MiB each at
# 28x28), metrics.jsonl and the checkpoint's JSON metadata.
OUTPUT_ALLOWANCE = 8 << 20
FIGURE_BATCH = 1000  # test images encoded at once for the latent scatter
RECORDED_BY_DEFAULT = ("numba",)  # its replay is checked bit for bit here; cupy's capture waits for a GPU


# ----- The run -----

class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what the checkpoint holds and how to resume."""


@dataclasses.dataclass
class Saved:
    """The checkpoint holding this run's last completed epoch, if there is one yet."""
    path: Path | None = None
    epoch: int = 0

    def describe(self):
        if self.path is None:
            return "no checkpoint was written yet"
        return f"the checkpoint {self.path} (epoch {self.epoch}) is intact"


def train(config, resume=None, progress=True, log=print, overwrite=False, cuda_graph=None):
    """Train per ``config`` (or continue the checkpoint ``resume``); returns the ``Run``, its last epoch done.

    ``resume`` is read (and checked) once, before the output directory is
    created, and refused if another run replaced it before this one held the
    directory; that directory is held for the whole run (``own_run_directory``):
    it must not hold another run's checkpoint unless ``overwrite``. ``config.threads``
    (None: chosen for the model and the machine; on resume, the run's own) caps
    BLAS and numba while it runs, and is stored in the checkpoint.
    ``cuda_graph``: record the step once and replay it (``make_step``); None: on numba with Adam only.
    """
    if config.data_dir is not None:  # stored absolute: a checkpoint finds its data from any directory
        config = dataclasses.replace(config, data_dir=str(Path(config.data_dir).resolve()))
    read_as = _file_identity(resume) if resume is not None else None
    checkpoint = read_training_checkpoint(resume) if resume is not None else None
    out = check_writable(config.out)
    with own_run_directory(out, run_outputs(config), resume, overwrite, log):
        if resume is not None and _file_identity(resume) != read_as:
            raise MinivaeError(f"{resume} was replaced while this run started (another run saved into it); "
                               "run the command again to continue from what it holds now")
        data = prepare_data(config)
        check_run_memory(config, data.train_x.shape[1])
        sizes = (data.train_x.shape[1], *config.hidden)
        trained = checkpoint.config.threads if checkpoint is not None else None
        count, reason = choose_threads(config.threads, product_size(config.batch_size, sizes), trained)
        config = dataclasses.replace(config, threads=count)
        log(f"{data.name} from {data.source}: {len(data.train_x)} training and {len(data.test_x)} test images; "
            f"{get_backend().name} backend, {reason}")
        log(describe_objective(config))
        with threads_limited(count):
            run = start_run(config, data)
            _train(run, out, resume, checkpoint, progress, log, cuda_graph)
            return run


def _file_identity(path):
    """What tells a file from the one that replaces it by a rename: (device, inode, size, modification time);
    None if there is no file (reading it then says so in one line)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _train(run, out, resume, checkpoint, progress, log, cuda_graph):
    """The epochs of ``run``, once ``train`` owns ``out``: each saved, then its metrics and figures written;
    first ``checkpoint`` (read from ``resume``) restored into it, if given."""
    saved = Saved()
    if resume is not None:
        restore_checkpoint(resume, checkpoint, run)
        saved = Saved(Path(resume), len(run.history))
    check_free_space(out, checkpoint_nbytes(run))
    try:
        if resume is not None:
            _complete_outputs(out, run, saved, log)
        step = make_step(run, cuda_graph, log)
        while len(run.history) < run.config.epochs:
            run_epoch(run, step, progress)
            _save(out / CHECKPOINT_NAME, checkpoint_payload(run), saved)
            saved = Saved(out / CHECKPOINT_NAME, len(run.history))
            _write_outputs(out, run, saved)
            log(_epoch_line(run.history[-1], objective_name(run.config)))
            if len(run.history) < run.config.epochs:
                check_stop()  # a stop asked for during the evaluation or the figures: now, with the epoch saved
    except Diverged as diverged:
        raise Diverged(f"{diverged}; lower --lr (now {run.config.lr:g}) or set --logvar-clamp; "
                       f"{saved.describe()}") from None
    except CaptureFailed as failed:
        raise MinivaeError(f"{failed}; {saved.describe()}") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted_message(saved, run.config.epochs)) from None


def _complete_outputs(out, run, saved, log):
    """In the checkpoint's own directory, write what a stopped run left unwritten after its epoch; refuse a
    checkpoint holding ``--epochs`` epochs with nothing to write, or more."""
    epochs = run.config.epochs
    own = saved.epoch <= epochs and saved.path.parent.samefile(out)  # an epoch of this run, in its directory
    unwritten = unwritten_outputs(out, run.config, saved.epoch, saved.path) if own else []
    if unwritten:
        _write_outputs(out, run, saved)
        log(f"wrote what the run had left unwritten after epoch {saved.epoch}: {', '.join(unwritten)}")
    elif saved.epoch >= epochs:
        raise MinivaeError(f"{saved.path} already holds {saved.epoch} epochs; pass --epochs above {saved.epoch} "
                           "to train further")


def make_step(run, cuda_graph, log):
    """The run's step: a StaticStep recorded once and replayed where asked and possible, else an EagerStep.

    Recorded: on numba as its list of calls (``recording.py``), on cupy as a CUDA
    graph (``static_step.py``). ``cuda_graph`` None records on numba with Adam,
    whose replay equals the eager step bit for bit; cupy's capture is opt-in (no
    GPU has run it yet). Asked for where it is not possible, it says so in one
    line and trains eagerly.
    """
    backend, refusal = get_backend().name, why_not_static(run.optimizer)
    if cuda_graph is None:
        cuda_graph = backend in RECORDED_BY_DEFAULT and not refusal
    if not cuda_graph:
        return EagerStep(run)
    if backend not in CAPTURING_BACKENDS:
        log(f"--cuda-graph: only the {' and '.join(CAPTURING_BACKENDS)} backends record the training step; "
            f"training eagerly on {backend}")
        return EagerStep(run)
    if refusal:
        log(f"--cuda-graph: {refusal}; training eagerly")
        return EagerStep(run)
    return StaticStep(run, capture=True)


def _interrupted_message(saved, epochs):
    """Where the run stopped (the epoch after the last saved one, or the last one's outputs) and how to continue."""
    if saved.path is None:
        return "interrupted in epoch 1, before the first checkpoint; run the same command to start again"
    if saved.epoch == epochs:
        return (f"interrupted while writing the outputs of epoch {saved.epoch}, the last; {saved.describe()}; "
                f"write what is missing with the same options and --resume {saved.path}")
    return (f"interrupted in epoch {saved.epoch + 1}; {saved.describe()}; continue with the same options "
            f"and --resume {saved.path}")


def check_free_space(out, checkpoint_bytes):
    """Refuse to start unless ``out`` has room for one more checkpoint (written beside the old one) and outputs."""
    needed = checkpoint_bytes + OUTPUT_ALLOWANCE
    free = shutil.disk_usage(out).free
    if free < needed:
        raise MinivaeError(f"only {free / 2**20:.1f} MiB free in {out}, but a checkpoint and the figures need "
                           f"about {needed / 2**20:.1f} MiB; free some space or choose another --out")


def _epoch_line(row, objective):
    """The epoch's line: the training objective's value where it is not the ELBO itself, the train ELBO and its
    terms, the test ELBO, beta and the seconds."""
    trained = "" if objective == "ELBO" else f"{objective} {row['train_objective']:9.3f}  "
    return (f"epoch {row['epoch']:3d}  train {trained}ELBO {row['train_elbo']:9.3f} "
            f"(recon {row['train_reconstruction']:9.3f}, KL {row['train_kl']:7.3f})  "
            f"test ELBO {row['test_elbo']:9.3f}  beta {row['beta']:.3g}  [{row['seconds']:.2f} s]")


# ----- Outputs: metrics, figures, checkpoints -----

def _save(path, payload, saved):
    """save_checkpoint, with the intact previous checkpoint named if the write fails."""
    try:
        save_checkpoint(path, *payload)
    except MinivaeError as err:
        raise MinivaeError(f"{err}; {saved.describe()}") from None


def _write_outputs(out, run, saved):
    """metrics.jsonl every epoch; figures every ``plot_interval`` epochs and at the last."""
    try:
        metrics = "".join(json.dumps(row) + "\n" for row in run.history).encode()
        write_atomically(out / METRICS_NAME, lambda f: f.write(metrics))
        epoch, config = len(run.history), run.config
        if draws_figures(config, epoch):
            write_figures(out, run.model, run.data, epoch, run.history, seed=config.seed)
    except OSError as exc:
        raise MinivaeError(f"cannot write metrics or figures in {out} ({exc}); {saved.describe()}; free some "
                           f"space, then the same options and --resume {saved.path} write what is missing and "
                           "go on") from None


def write_figures(out, model, data, epoch, history, seed):
    """reconstruction_{epoch}.png, sample_{epoch}.png, loss_curves.png, and the 2-D latent figures (``figure_names``)."""
    names = figure_names(epoch, model.config["latent_dim"])
    with no_grad():
        originals = data.test_x[:8]
        plots.save_reconstructions(out / names["reconstruction"], originals,
                                   model.reconstruct(originals), data.image_shape)
        plots.save_samples(out / names["sample"], model.sample(64, get_backend().kernels.make_rng(seed)),
                           data.image_shape)
        if history:
            plots.save_loss_curves(out / names["loss_curves"], history)
        if "manifold" in names:
            mu = np.concatenate([model.encode(Tensor(data.test_x[start:start + FIGURE_BATCH]))[0].numpy()
                                 for start in range(0, len(data.test_x), FIGURE_BATCH)])  # not all hidden units at once
            plots.save_latent_scatter(out / names["latent_scatter"], mu, data.test_y)
            grid = Tensor(plots.manifold_grid(15), dtype=model.dtype)
            plots.save_manifold(out / names["manifold"], model.p_x_given_z(grid).mean.numpy(), data.image_shape, 15)
