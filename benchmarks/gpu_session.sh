#!/usr/bin/env bash
# A GPU session in one command (benchmarks/GPU-SESSION.md says when and how):
#
#   bash benchmarks/gpu_session.sh prepare   # here, with the network: fills .gpu/ (wheels and Fashion-MNIST)
#   bash benchmarks/gpu_session.sh           # there, on the GPU machine, from the repository root, .gpu/ carried
#
# The session installs the carried wheels (numpy < 2.5 for numba-cuda 0.30, nvmath-python for the cupy
# backend's cuBLAS) and minivae itself, records what is installed, then runs gpu_check, the step
# benchmark at batch 32, 128, 1024 and 8192 and the CPU-vs-GPU chart. Every command runs under
# `timeout -k 10` (TERM at its limit, KILL 10 s later); the limits add up to 420 s (SESSION_SECONDS),
# so a session and a rerun fit in the device tool's 15 minutes with a machine start. What comes back,
# in $OUT: session.log (everything printed), gpu_check.md, bench.json, bench.md, gpu_chart.png and
# gpu_chart.md.
set -u -o pipefail

CARRIED=${CARRIED:-.gpu}
OUT=${OUT:-results/gpu_session}
# Each command's time limit, in seconds:
WHEELS_SECONDS=${WHEELS_SECONDS:-30}      # pip install of the carried wheels
EDITABLE_SECONDS=${EDITABLE_SECONDS:-20}  # pip install -e . (minivae)
SMI_SECONDS=${SMI_SECONDS:-10}            # nvidia-smi
VERSIONS_SECONDS=${VERSIONS_SECONDS:-20}  # the versions and nvmath-python's requirements
BACKENDS_SECONDS=${BACKENDS_SECONDS:-60}  # minivae backends
CHECK_SECONDS=${CHECK_SECONDS:-130}       # gpu_check writes its report after each stage: a stop keeps what ran
BENCH_SECONDS=${BENCH_SECONDS:-150}       # the bench writes nothing until it finishes: the largest share
SESSION_SECONDS=$((WHEELS_SECONDS + EDITABLE_SECONDS + SMI_SECONDS + VERSIONS_SECONDS + BACKENDS_SECONDS
                   + CHECK_SECONDS + BENCH_SECONDS))
BATCH_SIZES=${BATCH_SIZES:-32,128,1024,8192}
WHEELS=("numpy==2.4.*" "nvmath-python==1.0.1")
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

stage() { echo; echo "== $* ($(date -u +%H:%M:%S) UTC)"; }
limit() { timeout -k 10 "$@"; }  # limit SECONDS COMMAND...: TERM at SECONDS, KILL 10 s later

prepare() {
    # The wheels for the GPU machine's Python 3.12 (cp312, x86_64), and Fashion-MNIST's IDX files from
    # Debian's dataset-fashion-mnist: about 53 MB, inside the 64 MiB a device call carries.
    mkdir -p "$CARRIED/wheels" "$CARRIED/fashion-mnist"  # .gitignore keeps /.gpu/ out of every commit
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]/#/--platform=}" -d "$CARRIED/wheels" "${WHEELS[@]}" || exit 1
    local deb
    deb=$(mktemp -d)
    (cd "$deb" && apt-get download dataset-fashion-mnist) || exit 1
    dpkg -x "$deb"/dataset-fashion-mnist_*.deb "$deb/root"
    cp "$deb"/root/usr/share/datasets/fashion-mnist/*.gz "$CARRIED/fashion-mnist/"
    rm -rf "$deb"
    du -sh "$CARRIED"/*
}

session() {
    local work
    work=$(mktemp -d)
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/session.log") 2>&1
    export PYTHONUNBUFFERED=1
    echo "time limits: $SESSION_SECONDS s in all (gpu_check $CHECK_SECONDS, bench $BENCH_SECONDS)"

    stage "the carried wheels, ahead of the machine's own packages"
    if compgen -G "$CARRIED/wheels/*.whl" > /dev/null; then
        limit "$WHEELS_SECONDS" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site "$CARRIED"/wheels/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "no wheels in $CARRIED/wheels: numba-cuda 0.30 fails on numpy 2.5, and the cupy backend needs nvmath-python"
    fi

    stage "minivae, editable, without the network"
    limit "$EDITABLE_SECONDS" python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1

    stage "the machine and what is installed"
    limit "$SMI_SECONDS" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    limit "$VERSIONS_SECONDS" python3 - <<'PY'
import importlib.metadata as metadata
import platform

print("Python", platform.python_version())
for name in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda", "llvmlite", "nvmath-python",
             "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "nvidia-cublas", "nvidia-nvvm",
             "nvidia-cuda-nvrtc", "torch", "jax"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
try:  # after the versions, so that they are printed without it
    from packaging.requirements import Requirement
except ImportError:
    print("packaging: not installed, so nvmath-python's requirements are not checked")
    raise SystemExit(0)
try:
    needs = metadata.requires("nvmath-python") or []
except metadata.PackageNotFoundError:
    print("nvmath-python: not installed")
    needs = []
for line in needs:  # its own dependencies: are they here, in a version it takes?
    requirement = Requirement(line)
    if requirement.marker is None or requirement.marker.evaluate():
        try:
            version = metadata.version(requirement.name)
            verdict = "ok" if requirement.specifier.contains(version, prereleases=True) else "NOT WITHIN"
        except metadata.PackageNotFoundError:
            version, verdict = "missing", "NOT INSTALLED"
        print(f"nvmath-python needs {requirement}: {version} ({verdict})")
PY

    stage "minivae backends (at most $BACKENDS_SECONDS s)"
    limit "$BACKENDS_SECONDS" python3 -m minivae backends
    echo "backends: exit status $? (124 or 137: stopped by the time limit)"

    stage "gpu_check (at most $CHECK_SECONDS s)"
    local data=()
    [ -d "$CARRIED/fashion-mnist" ] && data=(--data-dir "$CARRIED/fashion-mnist")
    limit "$CHECK_SECONDS" python3 -m minivae.benchmarks.gpu_check --out "$work/gpu_check" "${data[@]}"
    echo "gpu_check: exit status $? (124 or 137: stopped by the time limit)"
    cp "$work/gpu_check/gpu_check.md" "$OUT/"

    stage "minivae bench --quick --only step --batch-sizes $BATCH_SIZES (at most $BENCH_SECONDS s)"
    limit "$BENCH_SECONDS" python3 -m minivae bench --quick --only step --batch-sizes "$BATCH_SIZES" \
        --out "$work/bench"
    echo "bench: exit status $? (124 or 137: stopped by the time limit)"
    cp "$work/bench"/{bench.json,bench.md,gpu_chart.png,gpu_chart.md} "$OUT/"

    stage "done: in $OUT"
    ls -l "$OUT"
}

case "${1:-session}" in
    prepare) prepare ;;
    session) session ;;
    *) echo "usage: bash benchmarks/gpu_session.sh [prepare|session]" >&2; exit 2 ;;
esac
