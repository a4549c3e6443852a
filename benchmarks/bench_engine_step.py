"""minivae's own training step, timed side by side with the GEMM floor and the peer frameworks.

    python -m benchmarks.bench_engine_step [--batch-size 128] [--rounds 15] [--backends numpy numba]

``make_step(batch_size, seed, backend="numpy")`` builds the 784-400-20
Bernoulli VAE (``VAE((784, 400), 20, (400, 784))``, float32, PyTorch's
initialisation) with Adam (lr 1e-3) on the fixed random binary batch the
peers use (``benchmarks.peers.binary_batch``), and returns a zero-argument
callable doing one full step: zero_grad, ``elbo(samples=1)``, backward of the
negative mean ELBO, Adam. It is the step ``minivae train`` runs on that
backend: on numba (``RECORDED``) the first call records it and every later
call replays the recording (``app/static_step.StaticStep``, which also copies
the batch into its buffer and adds up the ELBO's terms); elsewhere the eager
step. ``benchmarks.bench_step`` registers it::

    register("minivae numpy", functools.partial(make_step, backend="numpy"), numpy_buffers=True)

The backend is process-wide state, so each step switches to its own backend
first (a no-op when it is already active): steps of different backends can
then be interleaved in one ``harness.compare``.

``main`` times minivae's backends, the GEMM floor (``benchmarks.gemm_floor``)
and every peer that can run here, interleaved, and prints milliseconds per
step and multiples of the floor, with the load average before and after
(the machine may be shared: ratios measured side by side are the numbers to
trust, not absolute times).
"""
import argparse
import os

import numpy as np

from . import confinement, gemm_floor, harness, peers

FLOOR = "GEMM floor"
LATENT, HIDDEN = 20, 400
RECORDED = ("numba",)  # backends whose training step is recorded once and replayed (on cupy: gpu_step)


def make_step(batch_size, seed, backend="numpy"):
    """One minivae training step per call, on ``backend``, as ``minivae train`` runs it there (recorded and
    replayed on numba, else eager); ``harness.Unavailable`` if it cannot run here."""
    if backend in RECORDED:
        activate(backend)
        return make_static_step(batch_size, seed, capture=True)
    return make_eager_step(batch_size, seed, backend)


def make_eager_step(batch_size, seed, backend="numpy"):
    """One eager training step per call (the engine's tensors, graph and backward walk), on ``backend``."""
    import minivae
    from minivae.optim import Adam
    from minivae.tensor import Tensor
    from minivae.vae import VAE

    kernels = activate(backend).kernels
    model = VAE((gemm_floor.X, HIDDEN), LATENT, (HIDDEN, gemm_floor.X), rng=np.random.default_rng(seed))
    optimizer = Adam(model.parameters(), lr=peers.LEARNING_RATE)
    x = Tensor(peers.binary_batch(batch_size, seed))
    rng = kernels.make_rng(seed)

    def step():
        if minivae.get_backend().name != backend:
            minivae.set_backend(backend)
        optimizer.zero_grad()
        loss = -model.elbo(x, samples=1, rng=rng).elbo.mean()
        loss.backward()
        optimizer.step()
    return step


def activate(backend):
    """``set_backend(backend)``, or ``harness.Unavailable`` saying why it cannot run here."""
    from minivae.backend import BackendUnavailable, set_backend
    try:
        return set_backend(backend)
    except BackendUnavailable as why:
        raise harness.Unavailable(str(why)) from None


def make_static_step(batch_size, seed, capture):
    """``static_step.StaticStep`` of the same model and batch on the active backend (recorded if ``capture``)."""
    from minivae.app.runconfig import Run, TrainConfig, build_model, build_optimizer
    from minivae.app.static_step import StaticStep
    from minivae.backend import get_backend, set_backend

    backend = get_backend()
    config = TrainConfig(hidden=(HIDDEN,), latent_dim=LATENT, batch_size=batch_size, lr=peers.LEARNING_RATE,
                         seed=seed)
    model = build_model(config, gemm_floor.X)
    run = Run(config, None, model, build_optimizer(config, model), {"sample": backend.kernels.make_rng(seed)})
    step, x = StaticStep(run, capture=capture), peers.binary_batch(batch_size, seed)

    def static_step():
        if get_backend().name != backend.name:
            set_backend(backend.name)
        step(x)
    return static_step


def build_steps(batch_size, seed, backends, with_peers=True):
    """({name: step}, {name: why it cannot run}): the floor, minivae's backends, the peers."""
    steps, skipped = {FLOOR: gemm_floor.make_floor(batch_size, seed)}, {}
    makers = {f"minivae {b}": (lambda b=b: make_step(batch_size, seed, b)) for b in backends}
    if with_peers:
        makers |= {name: (lambda name=name: peers.make_step(name, batch_size, seed)) for name in peers.PEERS}
    for name, make in makers.items():
        try:
            steps[name] = make()
        except harness.Unavailable as why:
            skipped[name] = str(why)
    return steps, skipped


def format_table(stats, skipped, batch_size, load_before, load_after, confined):
    floor = stats[FLOOR].median
    lines = [f"one training step, 784-400-20 Bernoulli VAE, batch {batch_size}",
             f"{'implementation':<16}{'median ms':>10}{'IQR ms':>9}{'x floor':>9}"]
    for name, s in sorted(stats.items(), key=lambda item: item[1].median):
        lines.append(f"{name:<16}{s.median * 1e3:10.3f}{s.iqr * 1e3:9.3f}{s.median / floor:9.2f}")
    lines += [f"{name:<16}  skipped: {why}" for name, why in skipped.items()]
    lines.append(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} "
                 f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
                 f"{os.cpu_count()} cores")
    lines.append(f"confinement: {confinement.describe(confined)}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--backends", nargs="+", default=["numpy", "numba"])
    parser.add_argument("--no-peers", action="store_true", help="time minivae and the floor only")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per sample (default 0.05)")
    parser.add_argument("--threads", type=int, default=None, help="run on N cores: cap the pools, pin every thread")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cores = confinement.confine(args.threads) if args.threads else None
    load_before = os.getloadavg()
    steps, skipped = build_steps(args.batch_size, args.seed, args.backends, not args.no_peers)
    stats = harness.compare(steps, rounds=args.rounds, warmup=args.warmup, min_time=args.min_time,
                            seed=args.seed)
    print(format_table(stats, skipped, args.batch_size, load_before, os.getloadavg(), confinement.check(cores)))


if __name__ == "__main__":
    main()
