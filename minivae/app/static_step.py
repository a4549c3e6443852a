"""One whole training step on fixed buffers, so that it can be recorded once and replayed: CUDA graph or CPU twin.

A CUDA graph is a recording of the kernels a stream runs, with their
arguments (array addresses and numbers); ``Graph.launch`` replays all of them
at once, with no Python and no per-kernel launch cost in between. CuPy records
with ``Stream.begin_capture()`` ... ``Stream.end_capture()``: while capturing,
kernels are recorded, not run. A step can be replayed only if

- its shapes and buffers are static: every batch is copied into the same input
  array ``x``; the parameters, their gradients and Adam's moments already live
  in the optimizer's flat buffers (``optim.flatten_parameters``);
- every number that changes from step to step lives on the device: Adam's step
  count ``t`` and its learning rate, which the Adam kernel reads from device
  memory (``Adam.update``), and the KL weight ``beta`` (warm-up), each written
  there by the host before the step, outside the recording; and the random
  generator's state (the noise is drawn on the device, which advances the
  state in place);
- it never waits for the host: no ``.item()``, ``float()`` or ``bool()`` of a
  device array, no copy to the host. So the loss is not checked each step, as
  ``loop.train_step`` does by reading the step's sums: the step adds its terms
  into device sums, and ``take_sums`` reads them, and checks them and the
  parameters for NaN, when the epoch asks (at its end, and every ``--log-interval`` steps);
- the memory it allocates does not move: the graph holds the addresses of the
  step's intermediate arrays, so they come from a private memory pool that
  nothing else allocates from, kept as long as the graph;
- nothing is compiled or set up while capturing: the first step runs eagerly
  (it is a real step, the first batch's), compiling every kernel and filling
  the pool; the capture that follows reuses the same blocks.

On numba the same step is recorded by its CPU twin (``recording.py``): the
first step runs for real while every kernel call and every NumPy operation
between kernels is kept with its arrays, which stay allocated; each later
step replays that list of calls on the same buffers, with none of the
autodiff engine's Python (no tensors, no graph, no backward walk). The rules
above are what make that replay right, too. On every backend the same step
runs eagerly when ``capture`` is off, which is how the CPU tests check it
against ``loop.train_step``; on numba the replay equals it bit for bit.
"""
import contextlib

import numpy as np

from minivae.app.loop import EagerStep, objective_sums
from minivae.app.recording import record
from minivae.backend import get_backend
from minivae.errors import MinivaeError, one_line
from minivae.optim import Adam
from minivae.tensor import Tensor

CAPTURING_BACKENDS = ("cupy", "numba")


class CaptureFailed(MinivaeError):
    """CUDA (or a library inside the step) refused to capture the step; the message says why and how to go on."""

    def __init__(self, failure):
        super().__init__(f"--cuda-graph: the training step could not be captured as a CUDA graph "
                         f"({one_line(failure)}); train without capture: leave out --cuda-graph "
                         "(or pass --no-cuda-graph)")


def why_not_static(optimizer):
    """Why a static step cannot run ``optimizer``, in words, or None: it runs Adam only, whose step count and
    learning rate it keeps on the device (``Adam.update``)."""
    return None if isinstance(optimizer, Adam) else f"a static training step runs Adam, not {type(optimizer).__name__}"


class StaticStep:
    """One Adam step on -mean objective of a full batch copied into a fixed buffer; captured if asked.

    The step interface of ``loop.EagerStep``: ``step(x_batch, beta)`` copies a
    full batch, the KL weight beta and Adam's learning rate in and runs the
    step (replays the graph once captured), and returns True: nothing is read
    back. A shorter batch (an epoch's last) runs an ``EagerStep`` instead.
    ``take_sums()`` returns the summed (objective, elbo, reconstruction, kl)
    of the steps since the last call and whether they and the parameters are
    finite.
    """

    def __init__(self, run, capture=False):
        model, optimizer = run.model, run.optimizer
        if refusal := why_not_static(optimizer):
            raise MinivaeError(f"{refusal}; use --optimizer adam or --no-cuda-graph")
        self.model, self.optimizer, self.rng = model, optimizer, run.rngs["sample"]
        self.samples, self.objective = run.config.samples, run.config.objective
        self.eager = EagerStep(run)
        self.xp = get_backend().xp
        dtype = optimizer.flat.data.dtype
        self.x = self.xp.zeros((run.config.batch_size, model.config["encoder_sizes"][0]), dtype)
        self.sums = self.xp.zeros(4, np.float64)
        self.t = self.xp.zeros((), np.float64)  # Adam's step count, on the device
        self.lr = self.xp.zeros((), np.float64)  # Adam's learning rate and the KL weight: they change between
        self.beta = self.xp.zeros((), dtype)     # steps (schedule, warm-up), so they live on the device too
        self.capture = capture
        self.graph = self.stream = self.pool = None

    def __call__(self, x_batch, beta=1.0):
        """One step on ``x_batch``, replayed once captured; True (a short batch: the eager step's answer)."""
        if len(x_batch) != len(self.x):
            return self.eager(x_batch, beta)
        self.x[...] = self.xp.asarray(x_batch)
        self.t.fill(self.optimizer.step_count + 1)
        self.lr.fill(self.optimizer.lr)
        self.beta.fill(beta)
        if self.graph is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                self.graph.launch()  # on CuPy's current stream, after the copy above
        elif self.capture:
            self.graph = self._record()
        else:
            self.run()
        self.optimizer.step_count += 1
        return True

    def run(self):
        """The step itself: forward, backward, Adam, the terms added into ``sums``; no host sync."""
        self.optimizer.zero_grad()
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are found by take_sums
            maximized, terms = self.model.objective(Tensor(self.x), self.objective, self.samples, self.rng,
                                                    beta=Tensor(self.beta))
            (-maximized.mean()).backward()
            self.optimizer.update(self.t, self.lr)
            self.sums += objective_sums(maximized, terms)

    def take_sums(self):
        """(summed (objective, elbo, reconstruction, kl) as NumPy float64, all finite?) since the last call; resets them.

        The step's only host sync: it waits for every replayed step. ``loop.train_epoch`` calls it at the end
        of each epoch and every ``--log-interval`` steps, so a log interval adds a wait for the device each time.
        """
        backend = get_backend()
        sums = backend.asnumpy(self.sums) + self.eager.take_sums()[0]
        finite = bool(np.isfinite(sums).all()) and bool(self.xp.isfinite(self.optimizer.flat.data).all())
        self.sums[...] = 0
        return sums, finite

    def _record(self):
        """The step, run once and recorded for replay (``launch()``): a CUDA graph on cupy, its calls on numba
        (``CAPTURING_BACKENDS``, which ``training.make_step`` asks for capture on only)."""
        backend = get_backend()
        return self._warm_up_and_record() if backend.name == "cupy" else record(self.run, backend)

    def _warm_up_and_record(self):
        """Run the step once eagerly, then capture it as a CUDA graph (recorded, not run) on its own stream.

        Both run on a capture stream (CuPy cannot capture its default stream)
        with the private pool as allocator, so the capture reuses the blocks
        the eager step left in the pool; the graph then replays on any stream.
        """
        cupy = self.xp
        self.stream, self.pool = cupy.cuda.Stream(), cupy.cuda.MemoryPool()
        cupy.cuda.get_current_stream().synchronize()  # x and t are written before the capture stream reads them
        with self.stream, cupy.cuda.using_allocator(self.pool.malloc):
            self.run()
            graph = self._capture()
        self.stream.synchronize()
        return graph

    def _capture(self):
        """The step recorded (not run) as a CUDA graph; ``CaptureFailed`` naming the cause if it cannot be."""
        self.stream.begin_capture()
        try:
            self.run()
        except Exception as failure:
            with contextlib.suppress(Exception):
                self.stream.end_capture()  # close the broken capture; its own error would hide the cause
            raise CaptureFailed(failure) from None
        try:
            return self.stream.end_capture()
        except Exception as failure:
            raise CaptureFailed(failure) from None
