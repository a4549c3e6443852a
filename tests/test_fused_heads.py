"""The encoder's fused mu|logvar head, and checkpoints written with the two heads apart.

Before the heads were fused, a model held ``fc_mu`` and ``fc_logvar`` and the
optimizer's flat buffers followed that parameter order. ``split_heads_layout``
rewrites a checkpoint of today into that layout (by slicing columns, written
here independently of the upgrade code), so the tests can load it.
"""
import numpy as np

pass
from minivae.app import run_checkpoint, runconfig, training
from minivae.app.checkpoint import load_checkpoint, save_checkpoint
from minivae.kernels.reference import make_rng
from minivae.tensor import Tensor
from minivae.vae import VAE
from runs import assert_same_run, reference_checkpoint, skip_figures


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


def test_one_head_computes_mu_and_logvar_side_by_side():
    model = VAE((6, 5), 3, (5, 6), dtype=np.float64)
    x = np.random.default_rng(0).random((4, 6))
    mu, logvar = model.encode(x)
    hidden = model.encoder(x).numpy()
    heads = hidden @ model.fc_heads.weight.numpy() + model.fc_heads.bias.numpy()
    np.testing.assert_allclose(np.hstack([mu.numpy(), logvar.numpy()]), heads, rtol=1e-12)


def test_a_separate_heads_state_dict_loads_to_the_same_elbo():
    model = VAE((6, 5), 3, (5, 6), dtype=np.float64, rng=np.random.default_rng(1))
    old = split_heads(model.state_dict(), latent=3)
    loaded = VAE((6, 5), 3, (5, 6), dtype=np.float64, rng=np.random.default_rng(2))
    loaded.load_state_dict(old)
    x = np.random.default_rng(0).random((4, 6))
    eps = np.random.default_rng(3).standard_normal((2, 4, 3))
    np.testing.assert_array_equal(loaded.elbo(x, eps=eps).elbo.numpy(), model.elbo(x, eps=eps).elbo.numpy())


def test_an_old_layout_checkpoint_loads_to_the_same_elbo(tmp_path, tmp_path_factory):
    reference = reference_checkpoint(tmp_path_factory, 3)
    old = split_heads_layout(reference, tmp_path / "old.npz")
    assert "model/fc_mu.weight" in load_checkpoint(old)[0]
    (model, _, _), (upgraded, _, _) = run_checkpoint.load_trained(reference), run_checkpoint.load_trained(old)
    x = Tensor(np.random.default_rng(0).random((8, 64), dtype=np.float32))
    np.testing.assert_array_equal(upgraded.elbo(x, rng=make_rng(5)).elbo.numpy(),
                                  model.elbo(x, rng=make_rng(5)).elbo.numpy())


def test_resuming_an_old_layout_checkpoint_continues_the_run_exactly(tmp_path, tmp_path_factory, monkeypatch):
    reference = reference_checkpoint(tmp_path_factory, 3)
    skip_figures(monkeypatch)
    config = runconfig.TrainConfig(hidden=(16,), epochs=1, plot_interval=0, out=str(tmp_path))
    training.train(config, progress=False, log=lambda line: None)
    old = split_heads_layout(tmp_path / run_checkpoint.CHECKPOINT_NAME, tmp_path / "old.npz")
    resumed = tmp_path / "resumed"
    training.train(runconfig.TrainConfig(hidden=(16,), epochs=3, plot_interval=0, out=str(resumed)), resume=old,
                progress=False, log=lambda line: None)
    assert_same_run(resumed / run_checkpoint.CHECKPOINT_NAME, reference)
