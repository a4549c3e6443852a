"""Checkpoints an older minivae wrote are refused in one line, naming what is old and what to do.

Before the encoder's heads were fused, a model held ``fc_mu`` and
``fc_logvar`` and the optimizer's flat buffers followed that parameter order;
``split_heads_layout`` rewrites a checkpoint of today into that layout (by
slicing columns). Before the images' shape was stored, the metadata had no
``image_shape``.
"""
import numpy as np
import pytest

from checkpoint_files import altered
from minivae.app import run_checkpoint
from minivae.app.checkpoint import load_checkpoint, save_checkpoint
from minivae.errors import MinivaeError
from minivae.vae import VAE
from runs import assert_one_line_error, reference_checkpoint, run_cli, skip_figures, train_argv

HEADS_APART = "holds the encoder's mu and logvar heads apart (fc_mu, fc_logvar)"
NO_SHAPE = "does not say the (height, width) of its 64-pixel images"


def split_heads(state, latent):
    """{name: array} in the separate-heads layout and parameter order (mu's W, b, then logvar's W, b)."""
    split = {}
    for name, array in state.items():
        if name == "fc_heads.weight":
            split.update({"fc_mu.weight": array[:, :latent], "fc_mu.bias": state["fc_heads.bias"][:latent],
                          "fc_logvar.weight": array[:, latent:], "fc_logvar.bias": state["fc_heads.bias"][latent:]})
        elif name != "fc_heads.bias":
            split[name] = array
    return split


def split_heads_layout(source, target):
    """The checkpoint ``source`` rewritten with separate heads (model arrays and optimizer buffers), at ``target``."""
    arrays, meta = load_checkpoint(source)
    latent = meta["model"]["latent_dim"]
    shapes = {name: p.shape for name, p in VAE(**meta["model"]).named_parameters()}
    model = split_heads({name: arrays.pop(f"model/{name}") for name in shapes}, latent)
    arrays.update({f"model/{name}": np.ascontiguousarray(value) for name, value in model.items()})
    for name in [name for name in arrays if name.startswith("optimizer/")]:
        pieces = np.split(arrays[name], np.cumsum([np.prod(shape) for shape in shapes.values()])[:-1])
        by_name = {key: piece.reshape(shape) for (key, shape), piece in zip(shapes.items(), pieces)}
        arrays[name] = np.concatenate([value.ravel() for value in split_heads(by_name, latent).values()])
    save_checkpoint(target, arrays, meta)
    return target


def without_image_shape(source, target):
    return altered(source, target, lambda arrays, meta: meta.pop("image_shape"))


@pytest.mark.parametrize("make_old, message", [(split_heads_layout, HEADS_APART), (without_image_shape, NO_SHAPE)],
                         ids=["heads apart", "no image shape"])
def test_an_older_checkpoint_is_refused_in_one_line(tmp_path, tmp_path_factory, make_old, message):
    old = make_old(reference_checkpoint(tmp_path_factory, 3), tmp_path / "old.npz")
    with pytest.raises(MinivaeError) as refused:
        run_checkpoint.load_trained(old)
    line = str(refused.value)
    assert line.startswith(f"checkpoint {old} {message}") and line.endswith("; retrain it with this minivae")
    assert "\n" not in line


@pytest.mark.parametrize("make_old, message", [(split_heads_layout, HEADS_APART), (without_image_shape, NO_SHAPE)],
                         ids=["heads apart", "no image shape"])
@pytest.mark.parametrize("command", ["sample", "resume"])
def test_commands_refuse_an_older_checkpoint(tmp_path, tmp_path_factory, monkeypatch, capsys, make_old, message,
                                             command):
    old = make_old(reference_checkpoint(tmp_path_factory, 3), tmp_path / "old.npz")
    skip_figures(monkeypatch)
    argv = ["sample", str(old)] if command == "sample" else train_argv(tmp_path / "run", 4, "--resume", str(old))
    status, _, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, message, "retrain it with this minivae")
    assert not (tmp_path / "run" / run_checkpoint.CHECKPOINT_NAME).exists()
