"""benchmarks/gpu_session.sh, read without a GPU: valid bash, every command under a time limit, limits that add up
to what GPU-SESSION.md gives the device tool, and every module and option it calls present."""
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

from minivae import cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
GUIDE = REPO / "benchmarks" / "GPU-SESSION.md"


def script():
    return SCRIPT.read_text(encoding="utf-8")


def session_body():
    """The lines of the script's ``session()`` function, heredocs and all."""
    text = script()
    start = text.index("\nsession() {")
    return text[start:text.index("\n}\n", start)].splitlines()


def commands(body):
    """Each command line of ``body`` (continuations joined), without the Python heredoc's lines."""
    joined, in_heredoc = [], False
    for line in body:
        if in_heredoc:
            in_heredoc = line != "PY"
            continue
        in_heredoc = "<<'PY'" in line
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    return joined


def limits():
    """{NAME: default seconds} of the script's *_SECONDS settings."""
    return {name: int(seconds) for name, seconds in re.findall(r"^(\w+_SECONDS)=\$\{\1:-(\d+)\}", script(), re.M)}


def test_the_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_program_the_session_runs_is_under_a_time_limit_with_a_kill():
    assert re.search(r"^limit\(\) \{ timeout -k 10 \"\$@\"; \}", script(), re.M)
    programs = [line for line in commands(session_body()) if re.match(r"(python3|nvidia-smi|pip)\b", line)]
    assert programs == [] and sum(line.startswith("limit ") for line in commands(session_body())) == 7


def test_the_limits_add_up_to_420_s_inside_the_device_tools_timeout():
    seconds = limits()
    assert sum(seconds.values()) == 420 and seconds["BENCH_SECONDS"] >= 150 and seconds["BACKENDS_SECONDS"] == 60
    assert set(re.findall(r'limit "\$(\w+_SECONDS)"', script())) == set(seconds)  # each setting limits a command
    timeout_s = int(re.search(r"^timeout_s: +(\d+)$", GUIDE.read_text(encoding="utf-8"), re.M).group(1))
    assert sum(seconds.values()) + 10 <= timeout_s <= 600  # a run stopped at its limits still comes back


def test_the_modules_and_options_it_calls_exist():
    lines = commands(session_body())
    modules = {found for line in lines for found in re.findall(r"python3 -m ([\w.]+)", line)}
    assert modules == {"pip", "minivae", "minivae.benchmarks.gpu_check"}
    assert all(importlib.util.find_spec(module) for module in modules)
    assert (REPO / "pyproject.toml").is_file()  # pip install -e .
    batch_sizes = re.search(r"^BATCH_SIZES=\$\{BATCH_SIZES:-([\d,]+)\}", script(), re.M).group(1)
    assert batch_sizes == "32,128,1024,8192"
    for line in lines:
        if "-m minivae " in line:
            argv = shlex.split(line.split("-m minivae ", 1)[1].replace('"$BATCH_SIZES"', batch_sizes))
            argv = [arg.replace("$work", "/tmp/work") for arg in argv]
            cli.build_parser(argv[0]).parse_args(argv)  # an unknown command or option exits
    check_help = subprocess.run([sys.executable, "-m", "minivae.benchmarks.gpu_check", "--help"],
                                capture_output=True, text=True, check=True).stdout
    assert "--out" in check_help and "--data-dir" in check_help


def test_the_versions_are_printed_even_without_packaging():
    """The versions stage's Python, run here with ``packaging`` made unimportable: numpy's version still prints."""
    body = session_body()
    start = next(index for index, line in enumerate(body) if "<<'PY'" in line) + 1
    program = "\n".join(body[start:body.index("PY", start)])
    blocked = "import sys\nsys.modules['packaging'] = None\n" + program
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Python ") and any(line.startswith("numpy ") for line in lines)
    assert lines[-1] == "packaging: not installed, so nvmath-python's requirements are not checked"
