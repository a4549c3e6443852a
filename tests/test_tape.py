"""The tape as plain data (``minivae.tape``), the presets and their drawing (``minivae.app``), and ``minivae graph``."""
import numpy as np
import pytest

from minivae import MinivaeError, Tensor, no_grad, ops
from minivae.app.data import load_digits
from minivae.app.tape_plot import layout, node_text, tape_dot
from minivae.app.tapes import PRESETS, preset_tape, small_model
from minivae.gradcheck import check_grads
from minivae.tape import retain_grads, trace
from minivae.vae import VAE
from runs import assert_one_line_error, reference_checkpoint, run_cli


@pytest.fixture(scope="module")
def tapes():
    """Each preset's tape for the small untrained model on four digits."""
    images = load_digits().test_x[:4]
    return {name: preset_tape(name, small_model(), images) for name in PRESETS}


def leaves(tape, role):
    return [node for node in tape.nodes if not node.op and node.role == role]


# ----- The tape as data -----

def test_trace_lists_each_tensor_once_parents_first_and_folds_numbers_into_labels():
    """c = [3, 4] is wrapped twice (by mul and by add) but is one node; the 2 of the division is no node."""
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = np.array([3.0, 4.0])
    out = ((a * c + c) / 2).sum()
    tape = trace(out, {a: "a"})
    assert [(n.label, n.op, n.role) for n in tape.nodes] == [
        ("a", "", "parameter"), ("constant [3, 4]", "", "constant"), ("mul", "mul", "op"), ("add", "add", "op"),
        ("div 2", "div", "op"), ("sum", "sum", "op")]
    assert tape.nodes[4].numbers == ("2",) and tape.nodes[-1].shape == ()
    assert [(e.source, e.target, e.carries_grad) for e in tape.edges] == [
        (0, 2, True), (1, 2, False), (2, 3, True), (1, 3, False), (3, 4, True), (4, 5, True)]
    assert all(n.grad_norm is None for n in tape.nodes)  # before backward


def test_an_input_named_by_its_operation_keeps_its_leaf_role_unless_the_signature_gives_one():
    """reparameterize names mu, logvar and eps; a constant mu stays a constant, a parameter logvar a parameter,
    and only eps, a constant there, becomes noise."""
    logvar = Tensor(np.zeros((3, 2)), requires_grad=True)
    eps = np.ones((1, 3, 2))
    tape = trace(ops.reparameterize(np.zeros((3, 2)), logvar, eps).sum())
    assert [(n.label, n.op, n.role) for n in tape.nodes[:3]] == [
        ("mu", "", "constant"), ("logvar", "", "parameter"), ("eps", "", "noise")]


def test_gradient_norms_after_backward_are_those_of_each_tensors_gradient():
    a = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = a * 3
    out = (y * y).sum()
    retain_grads(out)
    out.backward()
    norms = [n.grad_norm for n in trace(out).nodes]  # a, y = a * 3, y * y, its sum
    assert norms == pytest.approx([np.linalg.norm(18 * a.data), np.linalg.norm(2 * y.data), np.sqrt(2), 1.0])


def test_mu_and_logvar_gradients_on_the_elbo_tape_are_the_loss_gradients_finite_differences_confirm():
    """The tape's |dL/dmu| and |dL/dlogvar| equal those of L written as a function of mu and logvar alone,
    whose gradient central differences in float64 confirm."""
    model = VAE((64, 16), 2, (16, 64), rng=np.random.default_rng(0), dtype=np.float64)
    x = Tensor(load_digits().test_x[:3], dtype=np.float64)
    eps = np.random.default_rng(1).standard_normal((2, 3, 2))
    loss = -model.elbo(x, eps=eps).elbo.mean()
    retain_grads(loss)
    loss.backward()
    tape = trace(loss)

    def loss_of(mu, logvar):
        reconstruction = model.p_x_given_z(ops.reparameterize(mu, logvar, eps)).log_prob(x).mean(axis=0)
        return -(reconstruction - ops.kl_normal(mu, logvar)).mean()
    with no_grad():
        mu, logvar = model.encode(x)
    check_grads(loss_of, mu, logvar)
    mu, logvar = Tensor(mu.numpy(), requires_grad=True), Tensor(logvar.numpy(), requires_grad=True)
    loss_of(mu, logvar).backward()
    assert tape.node("mu").grad_norm == pytest.approx(np.linalg.norm(mu.grad), rel=1e-12)
    assert tape.node("logvar").grad_norm == pytest.approx(np.linalg.norm(logvar.grad), rel=1e-12)


def test_the_table_gives_each_node_its_role_shape_reads_and_gradient_norm():
    """The printed tape of docs/autodiff.md: a number read (the 2) is listed among the reads, a constant gets
    no gradient."""
    a = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    out = (a * 2 + np.ones(2)).sum()
    retain_grads(out)
    out.backward()
    assert [line.split() for line in trace(out, {a: "a"}).table().splitlines()] == [
        ["0", "a", "parameter", "(2,)", "|grad|", "2.83"],
        ["1", "mul", "2", "op", "(2,)", "mul(0,", "2)", "|grad|", "1.41"],
        ["2", "constant", "[1,", "1]", "constant", "(2,)", "no", "gradient"],
        ["3", "add", "op", "(2,)", "add(1,", "2)", "|grad|", "1.41"],
        ["4", "sum", "op", "()", "sum(3)", "|grad|", "1"]]


def test_a_tensor_without_a_tape_and_unknown_names_are_refused_in_one_line():
    a = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        untaped = (a * 2).sum()
    with pytest.raises(MinivaeError, match="no tape: no input it was computed from requires grad"):
        trace(untaped)
    with pytest.raises(MinivaeError, match="unknown role 'weights'"):
        trace((a * 2).sum(), roles={a: "weights"})
    with pytest.raises(MinivaeError, match="no node 'mu'; its labels are parameter, mul 2, sum"):
        trace((a * 2).sum()).node("mu")


# ----- The presets -----

def test_the_elbo_tape_noise_leaf_gets_no_gradient_while_mu_and_logvar_do(tapes):
    tape = tapes["elbo"]
    (noise,), (data,) = leaves(tape, "noise"), leaves(tape, "data")
    assert (noise.label, noise.shape, noise.grad_norm) == ("eps", (1, 4, 2), None)
    assert (data.label, data.shape, data.grad_norm) == ("x", (4, 64), None)
    assert tape.node("mu").grad_norm > 0 and tape.node("logvar").grad_norm > 0
    z = tape.node("z")
    assert [n.label for n in tape.inputs(z.index)] == ["mu", "logvar", "eps"]
    assert not [e for e in tape.edges if e.source == noise.index and e.carries_grad]
    assert len(leaves(tape, "parameter")) == 8 and all(n.grad_norm > 0 for n in leaves(tape, "parameter"))


def test_the_score_function_tape_reaches_the_encoder_only_through_log_q(tapes):
    tape = tapes["score_function"]
    assert {n.label for n in leaves(tape, "parameter")} == {"encoder.layers.0.weight", "encoder.layers.0.bias",
                                                             "fc_heads.weight", "fc_heads.bias"}
    assert all(n.grad_norm > 0 for n in leaves(tape, "parameter"))
    assert "reparameterize" not in {n.op for n in tape.nodes}  # z was sampled: it is a leaf, not an operation
    sample = tape.node("z (sampled)")
    assert (sample.role, sample.shape, sample.grad_norm) == ("noise", (3, 4, 2), None)
    assert tape.node("f(z) as numbers").grad_norm is None
    assert tape.node("mu").grad_norm > 0 and tape.node("logvar").grad_norm > 0  # through log q alone


def test_the_iwae_tape_joins_the_samples_by_logsumexp(tapes):
    tape = tapes["iwae"]
    logsumexp = next(n for n in tape.nodes if n.op == "logsumexp")
    assert tape.inputs(logsumexp.index)[0].shape == (3, 4) and logsumexp.shape == (4,)
    assert tape.node("L_K").numbers == (f"{-np.log(3):.4g}",)
    assert tape.node("eps").grad_norm is None and tape.node("mu").grad_norm > 0


# ----- The drawing -----

@pytest.mark.parametrize("name", list(PRESETS))
def test_no_two_boxes_of_a_row_overlap_and_each_leaf_sits_in_its_readers_row(tapes, name):
    tape = tapes[name]
    boxes = layout(tape)
    assert set(boxes) == {n.index for n in tape.nodes}
    for row in {b.row for b in boxes.values()}:
        in_row = sorted((b for b in boxes.values() if b.row == row), key=lambda b: b.x)
        assert all(left.right < right.left for left, right in zip(in_row, in_row[1:])), row
    for node in tape.nodes:
        readers = [e.target for e in tape.edges if e.source == node.index]
        if not node.op:
            assert boxes[node.index].row == boxes[readers[0]].row
        for reader in readers:
            assert boxes[reader].row >= boxes[node.index].row


def test_a_box_gives_a_named_operation_beside_its_op_and_numbers(tapes):
    """L_K = logsumexp(...) - log 3 is named: its box shows the operation too; the mean's div 4 is labelled by it."""
    named, unnamed = tapes["iwae"].node("L_K"), tapes["iwae"].node("div 4")
    assert (named.operation, unnamed.operation) == (f"add {-np.log(3):.4g}", "div 4")
    assert node_text(named).splitlines()[0] == f"L_K = add {-np.log(3):.4g}"
    assert node_text(unnamed).splitlines()[0] == "div 4"


def test_the_dot_file_has_every_node_and_edge_and_dashes_those_without_gradient(tapes):
    tape = tapes["elbo"]
    dot = tape_dot(tape, "ELBO")
    assert dot.startswith("digraph tape {") and dot.rstrip().endswith("}")
    assert dot.count("[label=") == len(tape.nodes)
    assert dot.count(" -> ") == len(tape.edges)
    assert dot.count("style=dashed") == sum(not e.carries_grad for e in tape.edges) == 3  # x twice, eps once


# ----- minivae graph -----

def test_graph_draws_the_three_presets(tmp_path, capsys):
    status, out, err = run_cli(["graph", "--out", str(tmp_path)], capsys)
    assert status == 0, err
    for name in PRESETS:
        assert (tmp_path / f"tape_{name}.png").stat().st_size > 10_000, name
        assert (tmp_path / f"tape_{name}.dot").read_text().startswith("digraph"), name
        assert f"wrote {tmp_path / f'tape_{name}.png'}, {tmp_path / f'tape_{name}.dot'}" in out
    assert "elbo: 22 operations, 8 parameters; no gradient reaches x, eps" in out
    assert "not on this tape: decoder.layers.0.weight" in out


def test_graph_of_a_checkpoint_draws_what_it_is_asked_for(tmp_path, tmp_path_factory, capsys):
    checkpoint = reference_checkpoint(tmp_path_factory, 3)
    status, out, err = run_cli(["graph", "--checkpoint", str(checkpoint), "--only", "iwae", "--examples", "2",
                                "--out", str(tmp_path)], capsys)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tape_iwae.dot", "tape_iwae.png"]
    assert "(2, 64)" in (tmp_path / "tape_iwae.dot").read_text()


@pytest.mark.parametrize("argv, fragments", [
    (["--only", "elbo,vae"], ("unknown vae", "choose among elbo, score_function, iwae")),
    (["--examples", "0"], ("0 must be a positive whole number",)),
    (["--checkpoint", "missing.npz"], ("no checkpoint at missing.npz",)),
])
def test_bad_input_is_refused_in_one_line(tmp_path, capsys, argv, fragments):
    status, _, err = run_cli(["graph", "--out", str(tmp_path), *argv], capsys)
    assert_one_line_error(status, err, *fragments)


def test_an_output_path_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    status, _, err = run_cli(["graph", "--out", str(tmp_path / "taken")], capsys)
    assert_one_line_error(status, err, "is a file, not a directory")
