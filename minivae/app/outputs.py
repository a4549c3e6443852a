"""The files a training run writes in its ``--out``, named in this one place.

The writer (``training``), the refusal to replace a user's files
(``rundir.own_run_directory``) and the command's closing line all take the
names from here, so none of them can name a file the others do not.
"""
import os

from minivae.app.run_checkpoint import CHECKPOINT_NAME

METRICS_NAME = "metrics.jsonl"
LISTED_EPOCHS = 4  # per-epoch figures named in full up to this many epochs, abbreviated beyond
PER_EPOCH = ("reconstruction", "sample")  # the figures of figure_names whose file names carry the epoch


def figure_names(epoch, latent_dim):
    """{figure: file name} of the figures drawn after ``epoch``; the 2-D latent ones only for a 2-D latent space."""
    names = {"reconstruction": f"reconstruction_{epoch}.png", "sample": f"sample_{epoch}.png",
             "loss_curves": "loss_curves.png"}
    if latent_dim == 2:
        names.update(latent_scatter="latent_scatter.png", manifold="manifold.png")
    return names


def draws_figures(config, epoch):
    """Whether the run draws its figures after ``epoch``: every ``plot_interval`` epochs, and after the last."""
    return epoch == config.epochs or bool(config.plot_interval and epoch % config.plot_interval == 0)


def plotted_epochs(config):
    """The epochs after which a run of ``config`` draws its figures."""
    return [epoch for epoch in range(1, config.epochs + 1) if draws_figures(config, epoch)]


def run_outputs(config):
    """Every file name a run of ``config`` writes in its ``--out``: checkpoint, metrics and each figure."""
    names = {CHECKPOINT_NAME: None, METRICS_NAME: None}
    for epoch in plotted_epochs(config):
        names.update(dict.fromkeys(figure_names(epoch, config.latent_dim).values()))
    return list(names)


def unwritten_outputs(out, config, epoch, checkpoint):
    """The outputs of ``epoch`` (metrics, and its figures if it draws them) missing from ``out`` or older than
    ``checkpoint``, which holds that epoch: a run writes them just after it, so a stop in between left these."""
    names = [METRICS_NAME, *(figure_names(epoch, config.latent_dim).values() if draws_figures(config, epoch) else ())]
    saved_at = os.stat(checkpoint).st_mtime_ns
    return [name for name in names if not (out / name).is_file() or (out / name).stat().st_mtime_ns < saved_at]


def describe_outputs(config):
    """``run_outputs`` in words: the per-epoch figures once, with the epochs they are drawn for."""
    epochs = plotted_epochs(config)
    shown = epochs if len(epochs) <= LISTED_EPOCHS else [*epochs[:2], "...", epochs[-1]]
    last = figure_names(epochs[-1], config.latent_dim)
    fixed = [name for key, name in last.items() if key not in PER_EPOCH]
    if len(epochs) == 1:
        each_epoch = ", ".join(last[key] for key in PER_EPOCH)
    else:
        pattern = figure_names("E", config.latent_dim)
        each_epoch = f"{' and '.join(pattern[key] for key in PER_EPOCH)} for E = {', '.join(map(str, shown))}"
    return ", ".join([CHECKPOINT_NAME, METRICS_NAME, *fixed, each_epoch])
