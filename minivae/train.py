"""Training: maximise the ELBO by minibatch gradient ascent, with figures, metrics and exact resume.

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
  holds and how to resume (``TrainingInterrupted``);
- the output directory is owned (``rundir.own_run_directory``): a second run
  on it refuses at once, and a run never replaces another's checkpoint unless
  told to (``--overwrite``);
- a kill or a crash at any moment leaves the previous checkpoint, because it
  is only ever replaced by a rename;
- too little free space is reported before training starts, a failed write
  afterwards names the checkpoint that is still intact.
"""
import argparse
import dataclasses
import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minivae import optim, plots
from minivae.backend import get_backend
from minivae.checkpoint import check_writable, load_checkpoint, save_checkpoint
from minivae.data import (BINARIZE_MODES, DATASET_NAMES, SPLITS, STATIC_SEED, Pixels, batches, binarize_static,
                          check_pixels, load_dataset)
from minivae.errors import MinivaeError
from minivae.files import write_atomically
from minivae.graph_step import CAPTURING_BACKENDS, StaticStep
from minivae.kernels import reference
from minivae.rundir import own_run_directory
from minivae.tensor import Tensor, no_grad
from minivae.threads import choose_threads, product_size, threads_limited
from minivae.vae import OBJECTIVES, VAE, fuse_split_heads_flat, parameter_count

OPTIMIZERS = {"adam": optim.Adam, "sgd": optim.SGD, "adagrad": optim.Adagrad}
LR_SCHEDULES = ("constant", "burda")
CHECKPOINT_NAME = "checkpoint.npz"
# Room kept free beside a new checkpoint: figures (well under 1 MiB each at
# 28x28), metrics.jsonl and the checkpoint's JSON metadata.
OUTPUT_ALLOWANCE = 8 << 20
FIGURE_BATCH = 1000  # test images encoded at once for the latent scatter
# The options a run's checkpoint fixes: resuming with another value would not continue the same run.
RESUME_FIELDS = ("data", "train_examples", "test_examples", "hidden", "latent_dim", "activation", "likelihood",
                 "sigma", "logvar_clamp", "objective", "samples", "beta", "kl_warmup", "batch_size", "lr",
                 "lr_schedule", "optimizer", "binarize", "seed")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint."""
    data: str = "digits"
    data_dir: str | None = None
    train_examples: int | None = None  # train on the first N training images only (None: all)
    test_examples: int | None = None  # measure the test ELBO, and draw figures, on the first N test images
    hidden: tuple = (256,)
    latent_dim: int = 2
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    logvar_clamp: float | None = None
    objective: str = "elbo"
    samples: int = 1
    beta: float = 1.0
    kl_warmup: int = 0
    batch_size: int = 128
    epochs: int = 150
    lr: float = 3e-3
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    binarize: str = "none"
    seed: int = 1
    log_interval: int = 0
    plot_interval: int = 25
    out: str = "results"

    def model_sizes(self, input_dim):
        """Encoder sizes (input, hidden...) and the mirrored decoder sizes (hidden..., input)."""
        return (input_dim, *self.hidden), (*reversed(self.hidden), input_dim)


def prepare_data(config, splits=SPLITS):
    """The dataset's ``splits`` (the first ``train_examples`` and ``test_examples`` of each), checked for the
    likelihood; with static binarization, train binarized once here."""
    data = load_dataset(config.data, config.data_dir, splits=splits)
    data = dataclasses.replace(data, **_first(config.train_examples, "train", data),
                               **_first(config.test_examples, "test", data))
    for x in (data.train_x, data.test_x):
        if x is not None:
            check_pixels(x, config.likelihood)
    if config.binarize == "static" and data.train_x is not None:  # in place: the gray images are not held twice
        binarize_static(data.train_x, np.random.default_rng(STATIC_SEED), out=data.train_x)
    return data


def check_same_data(path, meta, data):
    """Refuse ``data`` unless its test images are those the checkpoint at ``path`` was trained beside."""
    trained_on = meta.get("data")
    if not isinstance(trained_on, dict) or trained_on.get("test_images") == data.test_fingerprint:
        return
    expected, found = trained_on.get("test_images") or {}, data.test_fingerprint or {}
    raise MinivaeError(f"{path} was trained with the test images in {trained_on.get('source')} "
                       f"({expected.get('file')}, {expected.get('bytes')} bytes), but {data.source} holds other "
                       f"ones ({found.get('file')}, {found.get('bytes')} bytes); pass --data-dir "
                       f"{trained_on.get('source')} or a copy of it")


def _first(n, split, data):
    """The fields of ``data`` to replace so that ``split`` keeps its first ``n`` images (none when n is None)."""
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if n is None or x is None:
        return {}
    if n > len(x):
        raise MinivaeError(f"--{split}-examples {n}: {data.name} has only {len(x)} {split} images; "
                           "ask for at most that many")
    return {f"{split}_x": x.subset(slice(n)) if isinstance(x, Pixels) else x[:n], f"{split}_y": y[:n]}


def build_model(config, input_dim):
    encoder_sizes, decoder_sizes = config.model_sizes(input_dim)
    return VAE(encoder_sizes, config.latent_dim, decoder_sizes, activation=config.activation,
               likelihood=config.likelihood, sigma=config.sigma, logvar_clamp=config.logvar_clamp,
               rng=np.random.default_rng(config.seed))


def build_optimizer(config, model):
    return OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)


# ----- One step, one epoch -----

class Diverged(MinivaeError):
    """The loss or the parameters became NaN or infinite; nothing of that epoch was saved."""


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
    return np.concatenate([[float(maximized.data.sum())], _sums(terms)])


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

    With ``kl_warmup`` E > 0, beta rises linearly step by step from B / (E S)
    at the first step to B at the last step of epoch E (so B e / E at the end
    of epoch e), then stays at B (``beta``); with E = 0 it is B throughout.
    It depends only on the step's place in the run, so a resumed run
    continues the same schedule.
    """
    if config.kl_warmup == 0:
        return config.beta
    t = (epoch - 1) * steps_per_epoch + step
    return config.beta * min(1.0, t / (config.kl_warmup * steps_per_epoch))


def _sums(terms):
    return np.array([float(t.data.sum()) for t in (terms.elbo, terms.reconstruction, terms.kl)])


def evaluate_elbo(model, x, batch_size, samples, seed):
    """Mean per-example (ELBO, reconstruction, KL) over ``x`` (``Pixels`` or float32 rows), with a fixed noise seed."""
    rng = get_backend().kernels.make_rng(seed)
    totals = np.zeros(3)
    with no_grad():
        for start in range(0, len(x), batch_size):
            totals += _sums(model.elbo(Tensor(x[start:start + batch_size]), k=samples, rng=rng))
    return totals / len(x)


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


def train(config, resume=None, progress=True, log=print, overwrite=False, threads=None, cuda_graph=None):
    """Train per ``config`` (or continue the checkpoint ``resume``); returns (model, history).

    The output directory is held for the whole run (``own_run_directory``):
    it must not hold another run's checkpoint unless ``overwrite``. ``threads``
    (None: chosen for the model and the machine) caps BLAS and numba while it runs.
    ``cuda_graph``: capture the step once and replay it (``make_static_step``);
    None captures where the backend can.
    """
    if config.data_dir is not None:  # stored absolute: a checkpoint finds its data from any directory
        config = dataclasses.replace(config, data_dir=str(Path(config.data_dir).resolve()))
    out = check_writable(config.out)
    with own_run_directory(out, CHECKPOINT_NAME, resume, overwrite, log):
        data = prepare_data(config)
        sizes = (data.train_x.shape[1], *config.hidden)
        count, reason = choose_threads(threads, product_size(config.batch_size, sizes))
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
        history = _restore(resume, config, model, optimizer, rngs, data)
        saved = Saved(Path(resume), len(history))
    check_free_space(out, _checkpoint_payload(model, optimizer, rngs, config, history, data)[0])
    static_step = make_static_step(cuda_graph, config, model, optimizer, rngs["sample"], log)
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            history.append(run_epoch(model, optimizer, data, config, epoch, rngs, progress, static_step))
            _save(out / CHECKPOINT_NAME, _checkpoint_payload(model, optimizer, rngs, config, history, data), saved)
            saved = Saved(out / CHECKPOINT_NAME, epoch)
            _write_outputs(out, model, data, config, history, saved)
            log(_epoch_line(history[-1]))
    except Diverged as diverged:
        raise Diverged(f"{diverged}; lower --lr (now {config.lr:g}) or set --logvar-clamp; "
                       f"{saved.describe()}") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted_message(saved)) from None
    return model, history


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


def _interrupted_message(saved):
    """Where the run stopped (the epoch after the last saved one) and how to continue."""
    if saved.path is None:
        return "interrupted in epoch 1, before the first checkpoint; run the same command to start again"
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
        write_atomically(out / "metrics.jsonl", lambda f: f.write(metrics))
        epoch = history[-1]["epoch"]
        if epoch == config.epochs or (config.plot_interval and epoch % config.plot_interval == 0):
            write_figures(out, model, data, epoch, history, seed=config.seed)
    except OSError as exc:
        raise MinivaeError(f"cannot write metrics or figures in {out} ({exc}); {saved.describe()}; "
                           "free some space and continue with --resume") from None


def write_figures(out, model, data, epoch, history, seed):
    """reconstruction_{epoch}.png, sample_{epoch}.png, loss_curves.png, and the 2-D latent figures."""
    with no_grad():
        originals = data.test_x[:8]
        plots.save_reconstructions(out / f"reconstruction_{epoch}.png", originals,
                                   model.reconstruct(originals), data.image_shape)
        plots.save_samples(out / f"sample_{epoch}.png", model.sample(64, get_backend().kernels.make_rng(seed)),
                           data.image_shape)
        if history:
            plots.save_loss_curves(out / "loss_curves.png", history)
        if model.config["latent_dim"] == 2:
            mu = np.concatenate([model.encode(Tensor(data.test_x[start:start + FIGURE_BATCH]))[0].numpy()
                                 for start in range(0, len(data.test_x), FIGURE_BATCH)])  # not all hidden units at once
            plots.save_latent_scatter(out / "latent_scatter.png", mu, data.test_y)
            grid = Tensor(plots.manifold_grid(15), dtype=model.dtype)
            plots.save_manifold(out / "manifold.png", model.p_x_given_z(grid).mean.numpy(), data.image_shape, 15)


def _checkpoint_payload(model, optimizer, rngs, config, history, data):
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    optimizer_arrays, optimizer_scalars = optimizer.state_dict()
    arrays.update({f"optimizer/{name}": value for name, value in optimizer_arrays.items()})
    rng_meta, rng_arrays = _rng_states(rngs)
    arrays.update(rng_arrays)
    meta = {"config": dataclasses.asdict(config), "model": model.config, "history": history,
            "optimizer": optimizer_scalars, "rng": rng_meta, "backend": get_backend().name,
            "image_shape": list(data.image_shape),
            "data": {"source": data.source, "test_images": data.test_fingerprint}}
    return arrays, meta


def _rng_kernels():
    """The kernel set owning each generator: NumPy shuffles the host-held data, the backend draws the noise."""
    return {"data": reference, "sample": get_backend().kernels}


def _rng_states(rngs):
    """Each generator's ``rng_state``: its JSON values for the metadata, its arrays as ``rng/NAME/KEY``."""
    meta, arrays = {}, {}
    for name, kernels in _rng_kernels().items():
        state = kernels.rng_state(rngs[name])
        meta[name] = {key: value for key, value in state.items() if not isinstance(value, np.ndarray)}
        arrays.update({f"rng/{name}/{key}": value for key, value in state.items() if isinstance(value, np.ndarray)})
    return meta, arrays


def _split_arrays(arrays, prefix):
    return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}


def _restore(path, config, model, optimizer, rngs, data):
    """Load a checkpoint into a freshly built run; returns its history."""
    arrays, meta, trained = read_training_checkpoint(path)
    check_same_data(path, meta, data)
    for field in RESUME_FIELDS:
        if getattr(trained, field) != getattr(config, field):
            raise MinivaeError(f"{path} was trained with {field}={getattr(trained, field)!r}, not "
                               f"{getattr(config, field)!r}; resume with the same options")
    if len(meta["history"]) >= config.epochs:
        raise MinivaeError(f"{path} already holds {len(meta['history'])} epochs; pass --epochs above "
                           f"{len(meta['history'])} to train further")
    model_arrays = _split_arrays(arrays, "model/")
    model.load_state_dict(model_arrays)
    optimizer_arrays = {name: fuse_split_heads_flat(buffer, model_arrays)  # a checkpoint with the heads apart
                        for name, buffer in _split_arrays(arrays, "optimizer/").items()}
    optimizer.load_state_dict(optimizer_arrays, meta["optimizer"])
    for name, kernels in _rng_kernels().items():
        state = meta["rng"].get(name)
        if isinstance(state, dict):
            state = {**state, **_split_arrays(arrays, f"rng/{name}/")}
        try:
            rngs[name] = kernels.restore_rng(state)
        except MinivaeError as err:
            raise MinivaeError(f"{path}: {err}; it was written with --backend {meta.get('backend', 'numpy')}, "
                               "resume with that backend") from None
    return meta["history"]


def read_training_checkpoint(path):
    """(arrays, meta, TrainConfig) of a checkpoint written by ``train``, or a one-line MinivaeError.

    Beyond ``load_checkpoint``'s checks, and before any array is loaded
    (``check_training_meta``): the metadata has the fields ``train`` writes,
    the arrays are those a model of the stored sizes and its optimizer hold,
    no more. After loading, every array must hold finite floats (training
    never saves NaN).
    """
    arrays, meta = load_checkpoint(path, check=lambda meta, headers: check_training_meta(path, meta, headers))
    for name, array in arrays.items():
        if not name.startswith("rng/") and not np.isfinite(array).all():  # rng/: integer states, checked on restore
            raise MinivaeError(f"checkpoint {path}: {name} is not an array of finite floats; "
                               "it is damaged, use another checkpoint")
    return arrays, meta, _train_config(path, meta)


def check_training_meta(path, meta, headers):
    """Refuse metadata ``train`` did not write, or array headers ((shape, dtype) by name) that do not fit it.

    The model's parameter count follows from its stored sizes
    (``vae.parameter_count``); the model's arrays must hold exactly that many
    floats and each optimizer buffer one per parameter. So a metadata claiming
    a huge model is refused unless the file holds its weights, and an array
    nobody asked for is never loaded.
    """
    parts = {"config": dict, "model": dict, "optimizer": dict, "rng": dict, "history": list}
    wrong = [name for name, kind in parts.items() if not isinstance(meta.get(name), kind)]
    if wrong:
        raise MinivaeError(f"{path} is not a checkpoint written by minivae train: its metadata lacks "
                           f"{', '.join(wrong)}; use the checkpoint.npz a training run wrote")
    if any(not isinstance(row, dict) or row.get("epoch") != n for n, row in enumerate(meta["history"], 1)):
        raise MinivaeError(f"checkpoint {path}: its history does not count epochs 1, 2, ...; "
                           "it is damaged, use another checkpoint")
    _train_config(path, meta)
    model = meta["model"]
    try:
        count = parameter_count(model.get("encoder_sizes"), model.get("latent_dim"), model.get("decoder_sizes"))
    except MinivaeError as err:
        raise MinivaeError(f"checkpoint {path}: {err}; it is damaged, use another checkpoint") from None
    unknown = [name for name in headers if not name.startswith(("model/", "optimizer/", "rng/"))]
    if unknown:
        raise MinivaeError(f"checkpoint {path}: unexpected array {unknown[0]!r}, which minivae train never "
                           "writes; use the checkpoint.npz a training run wrote")
    stored = sum(math.prod(shape) for name, (shape, _) in headers.items() if name.startswith("model/"))
    if stored != count:
        raise MinivaeError(f"checkpoint {path}: its metadata describes a model of {count:,} parameters but its "
                           f"arrays hold {stored:,}; it is damaged, use another checkpoint")
    for name, (shape, dtype) in headers.items():
        if name.startswith("rng/"):
            _check_rng_header(path, name, shape, dtype)
        elif dtype.kind != "f":
            raise MinivaeError(f"checkpoint {path}: {name} is not an array of finite floats ({dtype}); "
                               "it is damaged, use another checkpoint")
        if name.startswith("optimizer/") and shape != (count,):
            raise MinivaeError(f"checkpoint {path}: {name} has shape {shape}, not ({count},) for the "
                               f"{count:,} parameters its metadata describes; use another checkpoint")


MAX_RNG_WORDS = 1 << 26  # far above any generator's state (numba-cuda: 128k uint64 words; CuPy: a few MB of bytes)


def _check_rng_header(path, name, shape, dtype):
    """A generator's state array holds unsigned integers, and no more of them than any backend keeps."""
    if dtype.kind not in "ui" or math.prod(shape) > MAX_RNG_WORDS:
        raise MinivaeError(f"checkpoint {path}: {name} is not a random generator's state ({dtype}, shape {shape}); "
                           "it is damaged, use another checkpoint")


def _train_config(path, meta):
    try:
        return TrainConfig(**{**meta["config"], "hidden": tuple(meta["config"]["hidden"])})
    except (KeyError, TypeError) as exc:
        raise MinivaeError(f"{path}: its training options do not fit this minivae ({exc}); "
                           "use a checkpoint this version wrote") from None


def load_trained(path):
    """The model stored in a checkpoint, and the checkpoint's metadata."""
    arrays, meta, config = read_training_checkpoint(path)
    try:
        model = VAE(**{**meta["model"], "rng": np.random.default_rng(0)})
    except TypeError as exc:
        raise MinivaeError(f"{path}: its model options do not fit this minivae ({exc}); "
                           "use a checkpoint this version wrote") from None
    model.load_state_dict(_split_arrays(arrays, "model/"))
    return model, config, meta


# ----- minivae train -----

def add_train_arguments(parser):
    from minivae.argtypes import int_list, non_negative_int, positive_float, positive_int, sigma
    defaults = TrainConfig()
    parser.add_argument("--data", choices=DATASET_NAMES, default=defaults.data,
                        help="dataset (default: digits, bundled with scikit-learn)")
    parser.add_argument("--data-dir", default=None, help="directory holding the IDX files (mnist, fashion-mnist)")
    parser.add_argument("--train-examples", type=positive_int, default=defaults.train_examples, metavar="N",
                        help="train on the first N training images only, e.g. for a quick smoke run (default: all)")
    parser.add_argument("--test-examples", type=positive_int, default=defaults.test_examples, metavar="N",
                        help="measure the test ELBO and draw the figures on the first N test images (default: all)")
    parser.add_argument("--hidden", type=int_list, default=list(defaults.hidden),
                        help="hidden layer sizes, comma-separated (default 256)")
    parser.add_argument("--latent-dim", type=positive_int, default=defaults.latent_dim, help="size of z")
    parser.add_argument("--activation", choices=("relu", "tanh"), default=defaults.activation,
                        help="the hidden layers' activation")
    parser.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=defaults.likelihood,
                        help="the decoder's distribution p(x|z)")
    parser.add_argument("--sigma", type=sigma, default=defaults.sigma,
                        help="the Gaussian decoder's fixed standard deviation (default 0.1)")
    parser.add_argument("--logvar-clamp", type=positive_float, default=defaults.logvar_clamp, metavar="C",
                        help="clip the encoder's logvar to [-C, C] so exp(logvar) stays finite (default: off)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective,
                        help="elbo, or iwae: the importance-weighted bound L_K with K = --samples (default elbo)")
    parser.add_argument("--samples", type=positive_int, default=defaults.samples,
                        help="K, samples of z per example (default 1)")
    parser.add_argument("--beta", type=positive_float, default=defaults.beta, metavar="B",
                        help="weight of the KL term in the training objective (1: the bound itself)")
    parser.add_argument("--kl-warmup", type=non_negative_int, default=defaults.kl_warmup, metavar="E",
                        help="raise beta linearly, step by step, from 0 to B over the first E epochs (0: off)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="examples per step")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                        help="epochs in all (with --resume: the new total)")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="learning rate")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="constant, or burda: lr 10^(-i/7) for 3^i epochs, i = 0, 1, ...")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=defaults.optimizer, help="the update rule")
    parser.add_argument("--binarize", choices=BINARIZE_MODES, default=defaults.binarize,
                        help="binarize the images: not at all, once (static) or every batch (dynamic)")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed,
                        help="seeds the weights, the shuffling and the noise")
    parser.add_argument("--log-interval", type=non_negative_int, default=defaults.log_interval,
                        help="print every N steps (default 0: once per epoch)")
    parser.add_argument("--plot-interval", type=non_negative_int, default=defaults.plot_interval,
                        help="write figures every N epochs, and always after the last (default 25)")
    parser.add_argument("--out", default=defaults.out, help="output directory (default: results)")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="continue a run from its checkpoint.npz (same options; --epochs is the new total)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run whose checkpoint.npz is already in --out (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="capture the training step as a CUDA graph once and replay it for every full "
                             "batch (default: on with --backend cupy and Adam; other backends train eagerly)")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal (default: only on one)")


def config_from_args(args):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    values["hidden"] = tuple(values["hidden"])
    return TrainConfig(**values)


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def run_train(args):
    """Train; on Ctrl-C or SIGTERM, one line on stderr saying how to resume, and exit status 130."""
    config = config_from_args(args)
    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        train(config, resume=args.resume, progress=progress, overwrite=args.overwrite, threads=args.threads,
              cuda_graph=args.cuda_graph)
    except TrainingInterrupted as interrupted:
        print(f"minivae: {interrupted}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    latent_figures = ", latent_scatter.png, manifold.png" if config.latent_dim == 2 else ""
    print(f"outputs in {config.out}/: {CHECKPOINT_NAME}, metrics.jsonl, reconstruction_{config.epochs}.png, "
          f"sample_{config.epochs}.png, loss_curves.png{latent_figures}")
    return 0


# ----- minivae sample, minivae reconstruct -----

def add_figure_arguments(parser):
    from minivae.argtypes import non_negative_int
    parser.add_argument("checkpoint", help="a checkpoint.npz written by minivae train")
    parser.add_argument("--out", default=None, help="where to write the figure (default: beside the checkpoint)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the prior samples (sample)")


def _figure_job(args):
    """(model, config, meta, out), the output directory checked before the checkpoint is read."""
    out = check_writable(Path(args.out) if args.out else Path(args.checkpoint).parent)
    model, config, meta = load_trained(args.checkpoint)
    return model, config, meta, out


def _write_figure(save, path, *arguments):
    """``save(path, *arguments)``, or a one-line MinivaeError when the file cannot be written."""
    try:
        save(path, *arguments)
    except OSError as exc:
        raise MinivaeError(f"cannot write {path} ({exc}); check free space and permissions") from None
    print(f"wrote {path}")


def image_shape(path, model, meta):
    """The images' (height, width): stored by train; for older checkpoints, square if the input size is."""
    pixels = model.config["encoder_sizes"][0]
    shape = meta.get("image_shape")
    if isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) for n in shape) \
            and math.prod(shape) == pixels:
        return tuple(shape)
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise MinivaeError(f"{path} does not say its images' shape and {pixels} pixels are not a square; "
                           "retrain it with this minivae, which stores the shape")
    return side, side


def run_sample(args):
    """Decode samples from the prior into sample_epoch{E}_seed{S}.png (never a training run's sample_{E}.png)."""
    model, _, meta, out = _figure_job(args)
    shape = image_shape(args.checkpoint, model, meta)
    _write_figure(plots.save_samples, out / f"sample_epoch{len(meta['history'])}_seed{args.seed}.png",
                  model.sample(64, get_backend().kernels.make_rng(args.seed)), shape)
    return 0


def run_reconstruct(args):
    """Test images over their reconstructions into reconstruction_epoch{E}.png (never reconstruction_{E}.png)."""
    model, config, meta, out = _figure_job(args)
    data = prepare_data(config, splits=("test",))
    check_same_data(args.checkpoint, meta, data)
    print(f"{data.name} test images from {data.source}")
    originals = data.test_x[:8]
    _write_figure(plots.save_reconstructions, out / f"reconstruction_epoch{len(meta['history'])}.png", originals,
                  model.reconstruct(Tensor(originals, dtype=model.dtype)), data.image_shape)
    return 0
