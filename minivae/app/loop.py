"""One training step and one epoch: maximize the ELBO by minibatch gradient ascent.

One step (Kingma & Welling, Algorithm 1): draw a minibatch x and noise eps,
compute the ELBO with z = mu + sigma * eps, backpropagate, update. Or, with
``objective="iwae"``, the same for the importance-weighted bound L_K (Burda et
al. 2016). ``beta`` weighs the KL term of the objective (``kl_weight``: fixed,
or warmed up linearly from 0); the test ELBO is always the true one (beta = 1).

An epoch runs a step object on every minibatch: ``EagerStep`` here, or
``static_step.StaticStep``, which keeps every changing number on the device.
Both answer the same two calls: ``step(x_batch, beta)``, False when it saw the
step go non-finite, and ``step.take_sums()``, the summed terms since the last
call and whether they and the parameters are finite.
"""
import time

import numpy as np

from minivae.app.data import batches
from minivae.app.stop_requests import check_stop
from minivae.backend import get_backend
from minivae.errors import NonFiniteResult
from minivae.likelihood import evaluate_elbo, float64_sums
from minivae.tensor import Tensor

NOT_FINITE = "the loss or the updated parameters are not finite"


class Diverged(NonFiniteResult):
    """The loss or the parameters became NaN or infinite; nothing of that epoch was saved (exit status 3)."""


# ----- One step -----

def train_step(model, optimizer, x_batch, samples, rng, objective="elbo", beta=1.0):
    """One gradient step on -mean objective; returns the batch's per-example (objective, elbo, reconstruction, kl) sums.

    Returns None when those sums (the loss among them), or a parameter after
    the update, are not finite: the caller stops, and must not save this
    model. A non-finite loss makes no update. Two reads of the device: the
    sums, then the parameters.
    """
    optimizer.zero_grad()
    backend = get_backend()
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are checked for below
        maximized, terms = model.objective(Tensor(x_batch), objective, samples, rng, beta=beta)
        sums = backend.asnumpy(objective_sums(maximized, terms))
        if not np.isfinite(sums).all():
            return None
        (-maximized.mean()).backward()
        optimizer.step()
    if not backend.xp.isfinite(optimizer.flat.data).all():
        return None
    return sums


def objective_sums(maximized, terms):
    """The batch's summed (objective, elbo, reconstruction, kl) in float64, on the device, stacked."""
    return float64_sums(maximized, terms.elbo, terms.reconstruction, terms.kl)


class EagerStep:
    """``train_step`` on each batch as it comes (any size), its loss read at once, its sums kept on the host."""

    def __init__(self, run):
        self.run = run
        self.sums = np.zeros(4)

    def __call__(self, x_batch, beta=1.0):
        """One step; False (and no update where the loss was not finite) when it went non-finite."""
        run = self.run
        sums = train_step(run.model, run.optimizer, x_batch, run.config.samples, run.rngs["sample"],
                          run.config.objective, beta)
        if sums is None:
            return False
        self.sums += sums
        return True

    def take_sums(self):
        """(summed (objective, elbo, reconstruction, kl) since the last call, True): every step was checked."""
        sums, self.sums = self.sums, np.zeros(4)
        return sums, True


# ----- Schedules -----

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


# ----- What is maximized -----

def objective_name(config):
    """The training objective's short name in an epoch line: ELBO or L_K, beta-ELBO or beta-L_K when the KL is
    weighted (beta != 1, or warmed up)."""
    name = f"L_{config.samples}" if config.objective == "iwae" else "ELBO"
    return f"beta-{name}" if config.beta != 1 or config.kl_warmup else name


def describe_objective(config):
    """The training objective's line: its name, K and the KL weight beta."""
    k = config.samples
    text = (f"the importance-weighted bound, K = {k} samples of z per image; Burda et al. 2016"
            if config.objective == "iwae" else f"the ELBO, {k} sample{'s' * (k > 1)} of z per image")
    if config.kl_warmup:
        text += f"; its KL weighted by beta rising from 0 to {config.beta:g} over {config.kl_warmup} epochs"
    elif config.beta != 1:
        text += f"; its KL weighted by beta = {config.beta:g}"
    return f"objective: {objective_name(config)} ({text})"


# ----- One epoch -----

def train_epoch(run, step, progress=False):
    """One pass of ``step`` over the training set: the mean per-example (objective, ELBO, reconstruction, KL),
    and the last beta.

    The sums are read, and checked, every ``log_interval`` steps and at the end
    of the epoch: a step that keeps them on the device waits for the host no more often.
    """
    from tqdm import tqdm
    config, epoch = run.config, run.next_epoch
    steps = run.steps_per_epoch
    binarize = "dynamic" if config.binarize == "dynamic" else "none"  # static: done once in prepare_data
    totals, examples = np.zeros(4), 0
    with tqdm(batches(run.data.train_x, run.data.train_y, config.batch_size, run.rngs["data"], binarize=binarize),
              total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
              disable=not progress) as bar:
        for number, (x_batch, _) in enumerate(bar, start=1):
            check_stop()
            beta = kl_weight(config, epoch, number, steps)
            if not step(x_batch, beta):
                raise Diverged(f"training diverged at epoch {epoch}, step {number}: {NOT_FINITE}")
            examples += len(x_batch)
            if config.log_interval and number % config.log_interval == 0:
                sums = _checked_sums(step, epoch, number)
                totals += sums
                bar.set_postfix(elbo=f"{sums[1] / examples:.2f}")
                bar.write(f"  epoch {epoch} step {number}/{steps}  ELBO {sums[1] / examples:.3f}")
                examples = 0
    totals += _checked_sums(step, epoch, steps)
    return totals / len(run.data.train_x), beta


def _checked_sums(step, epoch, number):
    """``step.take_sums()``'s sums, or Diverged if they or the parameters are not finite."""
    sums, finite = step.take_sums()
    if not finite:
        raise Diverged(f"training diverged in epoch {epoch}, by step {number}: {NOT_FINITE}")
    return sums


def run_epoch(run, step, progress=False):
    """Train the run's next epoch and measure the test ELBO; appends the epoch's metrics row to ``run.history``."""
    epoch, config = run.next_epoch, run.config
    started = time.perf_counter()
    run.optimizer.lr = learning_rate(config, epoch)
    train_terms, beta = train_epoch(run, step, progress)
    with np.errstate(over="ignore", invalid="ignore"):
        test_terms = evaluate_elbo(run.model, run.data.test_x, config.batch_size, config.samples, seed=config.seed)
    if not np.isfinite(test_terms).all():
        raise Diverged(f"training diverged at epoch {epoch}: the test ELBO is {test_terms[0]:g}")
    run.history.append(_metrics_row(epoch, beta, train_terms, test_terms, time.perf_counter() - started))
    return run.history[-1]


def _metrics_row(epoch, beta, train_terms, test_terms, seconds):
    """The epoch's row of metrics.jsonl: beta at its last step, the training objective (with that
    schedule's betas), and the train and test ELBO terms (beta = 1)."""
    row = {"epoch": epoch, "beta": beta, "train_objective": float(train_terms[0])}
    for split, terms in (("train", train_terms[1:]), ("test", test_terms)):
        row.update({f"{split}_{key}": float(v) for key, v in zip(("elbo", "reconstruction", "kl"), terms)})
    row["seconds"] = round(seconds, 3)
    return row
