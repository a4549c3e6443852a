"""The package's layers point down: every module imports only from its own layer or the layers below it.

    kernels  <-  engine  <-  model  <-  inference math  <-  application  <-  commands

So the math a reader studies never depends on the program around it, and
``import minivae`` or ``minivae --help`` loads no benchmark, plotting,
training or numba module: each command loads what it runs.
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each layer's modules, by dotted-name prefix; minivae.kernels and minivae.benchmarks are kernels/ and benchmarks/.
LAYERS = (
    ("kernels", ("minivae.errors", "minivae.kernels")),
    ("engine", ("minivae", "minivae.backend", "minivae.versions", "minivae.tensor", "minivae.ops", "minivae.kernel_ops",
                "minivae.gradcheck", "minivae.opcases", "minivae.tape")),
    ("model", ("minivae.nn", "minivae.distributions", "minivae.vae", "minivae.optim", "minivae.modelcases")),
    ("inference math", ("minivae.estimators", "minivae.likelihood")),
    ("application", ("minivae.app",)),
    ("commands", ("minivae.commands", "minivae.cli", "minivae.__main__", "minivae.benchmarks")),
)
SOURCES = {"minivae": ROOT / "minivae", "minivae.kernels": ROOT / "kernels", "minivae.benchmarks": ROOT / "benchmarks"}


def layer_of(module):
    """(index, name) of the layer whose longest prefix names ``module``."""
    matches = [(len(prefix), index, name) for index, (name, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    _, index, name = max(matches)
    return index, name


def package_modules():
    """{dotted module name: its file} for every module of the installed package, kernels and benchmarks included."""
    modules = {}
    for package, directory in SOURCES.items():
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            modules[".".join((package, *parts))] = path
    return modules


def imported_modules(path, modules):
    """Every minivae module ``path`` imports, at the top or inside a function: ``from minivae import ops`` is minivae.ops."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("minivae"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minivae"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in modules else node.module


def upward_imports(modules):
    """(importer's file, its layer, imported module's file, its layer) for each import from a higher layer."""
    for module, path in sorted(modules.items()):
        index, name = layer_of(module)
        for imported in imported_modules(path, modules):
            imported_index, imported_name = layer_of(imported)
            if imported_index > index:
                yield path, name, modules.get(imported, imported), imported_name


def test_every_import_points_down_a_layer_or_stays_in_its_own():
    wrong = [f"{path.relative_to(ROOT)} ({layer}) imports {Path(target).relative_to(ROOT)} ({target_layer})"
             for path, layer, target, target_layer in upward_imports(package_modules())]
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_every_module_has_a_layer():
    unplaced = [module for module in package_modules() if not any(
        module == prefix or module.startswith(prefix + ".") for _, prefixes in LAYERS for prefix in prefixes)]
    assert not unplaced


def test_an_upward_import_is_caught_naming_both_files(tmp_path):
    """The check itself fails on a math module that imports the application."""
    modules = package_modules()
    planted = tmp_path / "likelihood.py"
    planted.write_text(modules["minivae.likelihood"].read_text() + "\nfrom minivae.app.training import train\n")
    found = list(upward_imports({**modules, "minivae.likelihood": planted}))
    assert found == [(planted, "inference math", modules["minivae.app.training"], "application")]


HEAVY = ("minivae.benchmarks", "minivae.estimators", "minivae.likelihood", "minivae.app.plots",
         "minivae.app.training", "minivae.commands.train", "numba", "matplotlib")


@pytest.mark.parametrize("code", ["import minivae, minivae.cli",
                                  "from minivae import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"])
def test_the_package_and_its_help_load_no_command(code):
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    modules = json.loads(loaded.stdout.splitlines()[-1])
    assert [m for m in modules if m.startswith(HEAVY)] == []
