"""The shell commands of README.md and docs/*.md, run in order as a newcomer runs them after ``pip install -e .``.

Every line of every ```bash block is run in one fresh directory standing in
for the repository root (README.md first, then the guides), so a command
that needs what an earlier one made finds it there. A ``minivae ...`` line
runs in this process (``cli.main``: the same code without a new interpreter
importing numpy, scikit-learn and matplotlib again, seconds each time; the
tests of ``runs.minivae`` run the command itself), any other line through
bash. Two tables say what differs from the docs, so that neither can go
stale silently:

- ``SMALLER``: settings substituted where the documented size takes minutes
  (each substitution must still match a documented command);
- ``NOT_RUN``: commands a test cannot run (installs, the test suite itself,
  the GPU section), each with the reason.

After the run: every command exited 0 without a word on stderr; everything
the docs wrote lies under ``results/``, the one folder .gitignore ignores;
a training run's folder holds only that run's files; and ``evaluate`` printed
the test ELBO of the training run's last epoch line.
"""
import contextlib
import io
import re
import shlex
import subprocess
import warnings

import pytest

from minivae import backend, cli
from runs import ROOT, write_fake_mnist

GUIDES = ["README.md", "docs/walkthrough.md", "docs/autodiff.md"]  # then any other docs/*.md, in name order
OUTPUT_FOLDER = "results"
# (regex on a documented command, its replacement): the same command at a size that runs in seconds.
SMALLER = [
    (r"^minivae train$", "minivae train --epochs 3"),                         # Quick start: 150 epochs
    (r"^minivae train --latent-dim 2 --epochs 50 ", "minivae train --latent-dim 2 --epochs 3 "),
    (r"^(minivae train --data fashion-mnist .*)--epochs 10 ",                  # 60,000 images: a tiny IDX set
     r"\1--epochs 1 --data-dir {fashion} "),
    (r"--iw-samples 5000", "--iw-samples 20"),
    (r"--limit 1000$", "--limit 50"),
    (r"^(minivae bound-gap .*)$", r"\1 --examples 2 --grid-size 31 --max-samples 100 --seeds 2"),
    (r"^(minivae estimators .*)$", r"\1 --samples-n 5 --k 1,4"),
    (r"^minivae figures --seed 0 ", "minivae figures --quick --only bound_gap --seed 0 "),
    (r"^minivae figures --quick ", "minivae figures --quick --only dimensions "),  # test_figures draws them all
]
# (regex on a documented command, or "## Heading" naming a section, why no test runs it here)
NOT_RUN = [
    (r"^pip install ", "installs: the test runs in the environment they made"),
    (r"^(sudo )?apt-get ", "a system package: the Fashion-MNIST commands read a tiny IDX set instead"),
    (r"python -m pytest", "the test suite, which this test is part of"),
    ("## On a GPU", "needs an NVIDIA GPU: tests/test_gpu.py and the gpu_check run it where there is one"),
]
RUN_FILES = re.compile(r"(checkpoint\.npz|metrics\.jsonl|(reconstruction|sample)_\d+\.png|loss_curves\.png|"
                       r"latent_scatter\.png|manifold\.png)")


def documented_commands():
    """(guide, section, command) for every command of every ```bash block, in reading order.

    Lines continued with a backslash are joined, a trailing ``# comment`` is
    dropped, and ``a && b`` is two commands.
    """
    guides = GUIDES + sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")
                             if str(path.relative_to(ROOT)) not in GUIDES)
    commands = []
    for guide in guides:
        section, block = None, None
        for line in (ROOT / guide).read_text().splitlines():
            if block is None and line.startswith("## "):
                section = line
            elif block is None and line.strip() == "```bash":
                block = []
            elif block is not None and line.strip() == "```":
                text = "\n".join(block).replace("\\\n", " ")
                for command_line in text.splitlines():
                    command_line = re.sub(r"\s+#.*$", "", command_line).strip()
                    commands += [(guide, section, part.strip()) for part in command_line.split(" && ") if part]
                block = None
            elif block is not None:
                block.append(line)
    return commands


def not_run_reason(section, command, used):
    """Why no test runs ``command`` (of ``section``): the first NOT_RUN entry that matches it, recorded in ``used``;
    None if none does."""
    for number, (pattern, reason) in enumerate(NOT_RUN):
        if section == pattern or (not pattern.startswith("## ") and re.search(pattern, command)):
            used.add(number)
            return reason
    return None


def smaller(command, used, places):
    """``command`` with every SMALLER substitution that matches it; records which ones matched in ``used``."""
    for number, (pattern, replacement) in enumerate(SMALLER):
        command, count = re.subn(pattern, replacement.format(**places), command)
        if count:
            used.add(number)
    return command


def test_every_documented_command_has_a_bash_block_the_test_reads():
    commands = [command for _, _, command in documented_commands()]
    assert "minivae train" in commands and any(c.startswith("minivae evaluate") for c in commands), commands


def test_the_test_commands_shown_name_tests_that_exist():
    """The suite is not run here, but every test file or folder a shown pytest command names exists."""
    named = [path for _, _, command in documented_commands() if "python -m pytest" in command
             for path in re.findall(r"tests/\S+", command)]
    assert "tests/test_docs_commands.py" in named
    assert [path for path in named if not (ROOT / path).exists()] == []


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """Every documented command run in order in a fresh directory: (directory, [(command as run, result)])."""
    tmp = tmp_path_factory.mktemp("newcomer")
    places = {"fashion": write_fake_mnist(tmp / "fashion-mnist")}
    clone = tmp / "clone"
    clone.mkdir()
    ran, used, not_run = [], set(), set()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(clone)
        patch.delenv("MINIVAE_BACKEND", raising=False)
        for guide, section, command in documented_commands():
            if not_run_reason(section, command, not_run):
                continue
            command = smaller(command, used, places)
            result = run(command)
            ran.append((f"{guide}: {command}", result))
            assert result.returncode == 0, (guide, command, result.stderr[-2000:])
    unused = [SMALLER[number][0] for number in range(len(SMALLER)) if number not in used]
    assert not unused, f"substitutions that no documented command needs any more: {unused}"
    unused = [NOT_RUN[number][0] for number in range(len(NOT_RUN)) if number not in not_run]
    assert not unused, f"NOT_RUN entries that no documented command matches any more: {unused}"
    return clone, ran


def run(command):
    """``command`` run in the current directory: a finished process (returncode, stdout, stderr), with each
    Python warning a ``minivae`` line gave written into its stderr."""
    argv = shlex.split(command)
    if argv[0] != "minivae":
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            status = cli.main(argv[1:])
        except SystemExit as exited:
            status = exited.code
        finally:
            backend.set_backend("numpy")
    err.writelines(f"{warning.category.__name__}: {warning.message}\n" for warning in seen)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def test_every_command_works_in_the_docs_order_without_a_warning(newcomer):
    _, ran = newcomer
    for command, result in ran:
        assert result.stderr == "", (command, result.stderr)


def test_the_docs_write_only_into_the_one_ignored_folder(newcomer):
    clone, _ = newcomer
    assert [path.name for path in clone.iterdir()] == [OUTPUT_FOLDER]
    assert f"/{OUTPUT_FOLDER}/" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_training_run_folder_holds_only_the_runs_files(newcomer):
    for folder in training_folders(newcomer):
        strangers = [path.name for path in folder.iterdir() if path.is_file() and not RUN_FILES.fullmatch(path.name)]
        assert not strangers, (folder, strangers)


def training_folders(newcomer):
    clone, ran = newcomer
    folders = [re.search(r"--out (\S+)", command) for command, _ in ran if ": minivae train" in command]
    return [clone / (found[1] if found else OUTPUT_FOLDER) for found in folders]


def test_evaluate_prints_the_test_elbo_of_the_training_runs_last_line(newcomer):
    clone, ran = newcomer
    last_lines = {}
    evaluated = 0
    for command, result in ran:
        if ": minivae train" in command:
            found = re.search(r"--out (\S+)", command)
            epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
            last_lines[clone / (found[1] if found else OUTPUT_FOLDER)] = epochs[-1]
        elif ": minivae evaluate" in command and "--limit" not in command:
            checkpoint = clone / command.split("minivae evaluate ")[1].split()[0]
            elbo = re.search(r"test ELBO \(K=1\): (\S+) nats", result.stdout)[1]
            assert f"test ELBO {float(elbo):9.3f}" in last_lines[checkpoint.parent], (command, result.stdout)
            evaluated += 1
    assert evaluated, "no documented evaluate of a whole test set"
