"""The memory a training run would allocate, counted from its options before anything is allocated.

A size typed one digit too long (``--latent-dim 1000000000``, ``--samples
100000000``) would otherwise end in a MemoryError deep inside NumPy, or in the
system killing the process. The count is a generous estimate, in float32
numbers, of what a run holds at once:

- the P parameters (``vae.parameter_count``), their gradients and the
  optimizer's buffers (one per parameter each), and the host copies of all of
  them a checkpoint is written from: (3 + 2 n) P for n buffers;
- one step's activations, their gradients and temporaries, three times the
  forward pass: the encoder's B (D + H + 2L) values and the decoder's
  K B (L + H + D), for batch B, K samples, D pixels, H hidden units in all and
  latent size L.

A run whose estimate exceeds the machine's memory is refused; one that fits
the machine but not what is free at the moment still runs (the count depends
on the options and the machine only, not on its load).
"""
import os

from minivae.app.runconfig import OPTIMIZERS
from minivae.errors import MinivaeError
from minivae.vae import parameter_count

FLOAT_BYTES = 4


def run_bytes(config, input_dim):
    """Bytes a run of ``config`` on images of ``input_dim`` pixels holds at once, estimated from above."""
    encoder_sizes, decoder_sizes = config.model_sizes(input_dim)
    parameters = parameter_count(list(encoder_sizes), config.latent_dim, list(decoder_sizes))
    buffers = len(OPTIMIZERS[config.optimizer].BUFFERS)
    hidden, latent, batch = sum(config.hidden), config.latent_dim, config.batch_size
    activations = batch * (input_dim + hidden + 2 * latent) + config.samples * batch * (latent + hidden + input_dim)
    return FLOAT_BYTES * ((3 + 2 * buffers) * parameters + 3 * activations)


def machine_bytes():
    """The machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_run_memory(config, input_dim):
    """Refuse a run whose weights, optimizer and one step cannot fit in the machine's memory."""
    needed, memory = run_bytes(config, input_dim), machine_bytes()
    if memory is not None and needed > memory:
        raise MinivaeError(f"this run needs about {needed / 2**30:,.1f} GiB for its weights, optimizer and one "
                           f"batch (--hidden {','.join(map(str, config.hidden))} --latent-dim {config.latent_dim} "
                           f"--samples {config.samples} --batch-size {config.batch_size} on {input_dim} pixels), "
                           f"but this machine has {memory / 2**30:,.1f} GiB; choose smaller sizes")
