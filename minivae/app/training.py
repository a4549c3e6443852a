"""Training: maximize the ELBO by minibatch gradient ascent, with figures, metrics and exact resume.

One step (Kingma & Welling, Algorithm 1): draw a minibatch x and noise eps,
compute the ELBO with z = mu + sigma * eps, backpropagate, update. Or, with
``objective="iwae"``, the same for the importance-weighted bound L_K (Burda et
al. 2016). ``beta`` weighs the KL term of the objective (``kl_weight``: fixed,
or warmed up linearly from 0); the test ELBO is always the true one (beta = 1).
After each epoch the test ELBO is measured, a checkpoint holding everything needed to
continue (weights, optimizer state, both random generators, history) replaces
the previous one atomically, and then ``metrics.jsonl`` and the figures are
written.

What can go wrong, and what happens (docs/reliability.md has the table):

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
import math
import shutil
import time
from pathlib import Path

import numpy as np

from minivae.app import plots
from minivae.app.checkpoint import check_writable, save_checkpoint
from minivae.app.data import batches
from minivae.app.files import write_atomically
from minivae.app.outputs import METRICS_NAME, draws_figures, figure_names, run_outputs, unwritten_outputs
from minivae.app.run_checkpoint import CHECKPOINT_NAME, checkpoint_payload, restore_checkpoint, trained_config
from minivae.app.runconfig import build_model, build_optimizer, prepare_data
from minivae.app.rundir import own_run_directory
from minivae.app.run_memory import check_run_memory
from minivae.app.stop_requests import check_stop
from minivae.app.threads import choose_threads, product_size, threads_limited
from minivae.backend import get_backend
from minivae.errors import MinivaeError, NonFiniteResult
from minivae.graph_step import CAPTURING_BACKENDS, StaticStep
from minivae.likelihood import evaluate_elbo, term_sums
from minivae.tensor import Tensor, no_grad

# Room kept free beside a new checkpoint: figures (well under 1 MiB each at
# 28x28), metrics.jsonl and the checkpoint's JSON metadata.
OUTPUT_ALLOWANCE = 8 << 20
FIGURE_BATCH = 1000  # test images encoded at once for the latent scatter


# ----- One step, one epoch -----

class Diverged(NonFiniteResult):
    """The loss or the parameters became NaN or infinite; nothing of that epoch was saved (exit status 3)."""


def train_step(model, optimizer, x_batch, samples, rng, objective="elbo", beta=1.0):
    """One gradient step on -mean objective; returns the batch's per-example (objective, elbo, reconstruction, kl) sums.

    Returns None when the loss, or a parameter after the update, is not
    finite: the caller stops, and must not save this model.
    """
    optimizer.zero_grad()
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are checked for below
        maximized, terms = model.objective(Tensor(x_batch), objective, samples, rng, beta=beta)
        loss = -maximized.mean()
        if not math.isfinite(loss.item()):
            return None
        loss.backward()
        optimizer.step()
    if not get_backend().xp.isfinite(optimizer.flat.data).all():
        return None
    return np.concatenate([[float(maximized.data.sum())], term_sums(terms)])


def learning_rate(config, epoch):
    """The epoch's learning rate: ``lr``, or with ``lr_schedule="burda"`` lr 10^(-i/7) in stage i = 0, 1, ...

    Stage i lasts 3^i epochs (Burda et al. 2016, section 5: epochs 1, 2-4, 5-13,
    ...; stages 0 to 7 make their 3280 epochs; later stages go on decaying).
    """
    if config.lr_schedule == "constant":
        return config.lr
    stage, last_epoch = 0, 1
    while epoch > last_epoch:
        stage += 1
        last_epoch += 3 ** stage
    return config.lr * 10 ** (-stage / 7)


def kl_weight(config, epoch, step, steps_per_epoch):
    """beta at a step: B min(1, t / (E S)), t the step's number in the run (1, 2, ...), S steps per epoch.

    A function of the step's place in the run alone, so a resumed run continues the same schedule.
    """
    if config.kl_warmup == 0:
        return config.beta
    t = (epoch - 1) * steps_per_epoch + step  # from B / (E S) up to B at the end of epoch E (B e / E after epoch e)
    return config.beta * min(1.0, t / (config.kl_warmup * steps_per_epoch))



def train_epoch(model, optimizer, data, config, epoch, rngs, progress, static_step=None):
    """One pass over the training set: the mean per-example (objective, ELBO, reconstruction, KL), and the last beta.

    With a ``static_step`` (``graph_step.StaticStep``, replaying a CUDA graph)
    every full batch goes through it, and its losses are checked once, at the
    end of the epoch; the last, partial batch runs ``train_step``.
    """
    from tqdm import tqdm
    steps = math.ceil(len(data.train_x) / config.batch_size)
    binarize = "dynamic" if config.binarize == "dynamic" else "none"  # static: done once in prepare_data
    totals = np.zeros(4)
    with tqdm(batches(data.train_x, data.train_y, config.batch_size, rngs["data"], binarize=binarize),
              total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
              disable=not progress) as bar:
        for step, (x_batch, _) in enumerate(bar, start=1):
            check_stop()
            beta = kl_weight(config, epoch, step, steps)
            if static_step is not None and len(x_batch) == config.batch_size:
                static_step(x_batch, beta)
                continue
            sums = train_step(model, optimizer, x_batch, config.samples, rngs["sample"], config.objective, beta)
            if sums is None:
                raise Diverged(f"training diverged at epoch {epoch}, step {step}: "
                               "the loss or the updated parameters are not finite")
            totals += sums
            bar.set_postfix(elbo=f"{sums[1] / len(x_batch):.2f}")
            if config.log_interval and step % config.log_interval == 0:
                bar.write(f"  epoch {epoch} step {step}/{steps}  ELBO {sums[1] / len(x_batch):.3f}")
    if static_step is not None:
        sums, finite = static_step.take_sums()
        if not finite:
            raise Diverged(f"training diverged in epoch {epoch} (a captured step is checked once an epoch): "
                           "the loss or the updated parameters are not finite")
        totals += sums
    return totals / len(data.train_x), beta


def run_epoch(model, optimizer, data, config, epoch, rngs, progress, static_step=None):
    """Train one epoch and measure the test ELBO; the epoch's metrics row."""
    started = time.perf_counter()
    optimizer.lr = learning_rate(config, epoch)
    train_terms, beta = train_epoch(model, optimizer, data, config, epoch, rngs, progress, static_step)
    with np.errstate(over="ignore", invalid="ignore"):
        test_terms = evaluate_elbo(model, data.test_x, config.batch_size, config.samples, seed=config.seed)
    if not np.isfinite(test_terms).all():
        raise Diverged(f"training diverged at epoch {epoch}: the test ELBO is {test_terms[0]:g}")
    return _metrics_row(epoch, beta, train_terms, test_terms, time.perf_counter() - started)


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
    """Train per ``config`` (or continue the checkpoint ``resume``); returns (model, history).

    The output directory is held for the whole run (``own_run_directory``):
    it must not hold another run's checkpoint unless ``overwrite``. ``config.threads``
    (None: chosen for the model and the machine; on resume, the run's own) caps
    BLAS and numba while it runs, and is stored in the checkpoint.
    ``cuda_graph``: capture the step once and replay it (``make_static_step``);
    None captures where the backend can.
    """
    if config.data_dir is not None:  # stored absolute: a checkpoint finds its data from any directory
        config = dataclasses.replace(config, data_dir=str(Path(config.data_dir).resolve()))
    out = check_writable(config.out)
    with own_run_directory(out, run_outputs(config), resume, overwrite, log):
        data = prepare_data(config)
        check_run_memory(config, data.train_x.shape[1])
        sizes = (data.train_x.shape[1], *config.hidden)
        trained = trained_config(resume).threads if resume is not None else None
        count, reason = choose_threads(config.threads, product_size(config.batch_size, sizes), trained)
        config = dataclasses.replace(config, threads=count)
        log(f"{data.name} from {data.source}: {len(data.train_x)} training and {len(data.test_x)} test images; "
            f"{get_backend().name} backend, {reason}")
        with threads_limited(count):
            return _train(config, data, out, resume, progress, log, cuda_graph)


def _train(config, data, out, resume, progress, log, cuda_graph):
    """The run itself, once ``train`` owns ``out`` and has the data."""
    model = build_model(config, data.train_x.shape[1])
    optimizer = build_optimizer(config, model)
    rngs = {"data": np.random.default_rng([config.seed, 0]), "sample": get_backend().kernels.make_rng(config.seed)}
    history, saved = [], Saved()
    if resume is not None:
        history = restore_checkpoint(resume, config, model, optimizer, rngs, data)
        saved = Saved(Path(resume), len(history))
    check_free_space(out, checkpoint_payload(model, optimizer, rngs, config, history, data)[0])
    static_step = make_static_step(cuda_graph, config, model, optimizer, rngs["sample"], log)
    try:
        if resume is not None:
            _complete_outputs(out, model, data, config, history, saved, log)
        for epoch in range(len(history) + 1, config.epochs + 1):
            history.append(run_epoch(model, optimizer, data, config, epoch, rngs, progress, static_step))
            _save(out / CHECKPOINT_NAME, checkpoint_payload(model, optimizer, rngs, config, history, data), saved)
            saved = Saved(out / CHECKPOINT_NAME, epoch)
            _write_outputs(out, model, data, config, history, saved)
            log(_epoch_line(history[-1]))
            if epoch < config.epochs:
                check_stop()  # a stop asked for during the evaluation or the figures: now, with the epoch saved
    except Diverged as diverged:
        raise Diverged(f"{diverged}; lower --lr (now {config.lr:g}) or set --logvar-clamp; "
                       f"{saved.describe()}") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted_message(saved, config.epochs)) from None
    return model, history


def _complete_outputs(out, model, data, config, history, saved, log):
    """In the checkpoint's own directory, write what a stopped run left unwritten after its epoch; refuse a
    finished run with nothing to write."""
    own = saved.path.parent.samefile(out)
    unwritten = unwritten_outputs(out, config, saved.epoch, saved.path) if own else []
    if unwritten:
        _write_outputs(out, model, data, config, history, saved)
        log(f"wrote what the run had left unwritten after epoch {saved.epoch}: {', '.join(unwritten)}")
    elif saved.epoch == config.epochs:
        raise MinivaeError(f"{saved.path} already holds {saved.epoch} epochs; pass --epochs above {saved.epoch} "
                           "to train further")


def make_static_step(cuda_graph, config, model, optimizer, rng, log):
    """A StaticStep capturing the step as a CUDA graph where asked and possible, else None (every step eager).

    ``cuda_graph`` None means where possible: a capturing backend and Adam.
    Asked for where it is not possible, it says so in one line and trains eagerly.
    """
    backend = get_backend().name
    if cuda_graph is None:
        cuda_graph = backend in CAPTURING_BACKENDS and config.optimizer == "adam"
    if not cuda_graph:
        return None
    if backend not in CAPTURING_BACKENDS:
        log(f"--cuda-graph: only the cupy backend captures the training step; training eagerly on {backend}")
        return None
    if config.optimizer != "adam":
        log(f"--cuda-graph: only Adam's step is captured; training eagerly with {config.optimizer}")
        return None
    return StaticStep(model, optimizer, config.batch_size, config.samples, rng, capture=True,
                      objective=config.objective)


def _interrupted_message(saved, epochs):
    """Where the run stopped (the epoch after the last saved one, or the last one's outputs) and how to continue."""
    if saved.path is None:
        return "interrupted in epoch 1, before the first checkpoint; run the same command to start again"
    if saved.epoch == epochs:
        return (f"interrupted while writing the outputs of epoch {saved.epoch}, the last; {saved.describe()}; "
                f"write what is missing with the same options and --resume {saved.path}")
    return (f"interrupted in epoch {saved.epoch + 1}; {saved.describe()}; continue with the same options "
            f"and --resume {saved.path}")


def check_free_space(out, arrays):
    """Refuse to start unless ``out`` has room for one more checkpoint (written beside the old one) and outputs."""
    needed = sum(array.nbytes for array in arrays.values()) + OUTPUT_ALLOWANCE
    free = shutil.disk_usage(out).free
    if free < needed:
        raise MinivaeError(f"only {free / 2**20:.1f} MiB free in {out}, but a checkpoint and the figures need "
                           f"about {needed / 2**20:.1f} MiB; free some space or choose another --out")


def _metrics_row(epoch, beta, train_terms, test_terms, seconds):
    """The epoch's row of metrics.jsonl: beta at its last step, the training objective (with that
    schedule's betas), and the train and test ELBO terms (beta = 1)."""
    row = {"epoch": epoch, "beta": beta, "train_objective": float(train_terms[0])}
    for split, terms in (("train", train_terms[1:]), ("test", test_terms)):
        row.update({f"{split}_{key}": float(v) for key, v in zip(("elbo", "reconstruction", "kl"), terms)})
    row["seconds"] = round(seconds, 3)
    return row


def _epoch_line(row):
    return (f"epoch {row['epoch']:3d}  train ELBO {row['train_elbo']:9.3f} "
            f"(recon {row['train_reconstruction']:9.3f}, KL {row['train_kl']:7.3f})  "
            f"test ELBO {row['test_elbo']:9.3f}  beta {row['beta']:.3g}  [{row['seconds']:.2f} s]")


# ----- Outputs: metrics, figures, checkpoints -----

def _save(path, payload, saved):
    """save_checkpoint, with the intact previous checkpoint named if the write fails."""
    try:
        save_checkpoint(path, *payload)
    except MinivaeError as err:
        raise MinivaeError(f"{err}; {saved.describe()}") from None


def _write_outputs(out, model, data, config, history, saved):
    """metrics.jsonl every epoch; figures every ``plot_interval`` epochs and at the last."""
    try:
        metrics = "".join(json.dumps(row) + "\n" for row in history).encode()
        write_atomically(out / METRICS_NAME, lambda f: f.write(metrics))
        epoch = history[-1]["epoch"]
        if draws_figures(config, epoch):
            write_figures(out, model, data, epoch, history, seed=config.seed)
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
