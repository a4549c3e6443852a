"""The primitives the backend's kernels compute: the matrix product and the VAE's fused hot paths.

Each forward, and right below it the backward it records, as in ``ops.py``;
both directions run a kernel of the active backend (``minivae.kernels``).
Each names its plain NumPy statement in ``kernels/reference.py``, the
specification every kernel set is tested against (and the kernels the numpy
backend runs): click through to read the math of a forward and its gradient.
Each fused primitive equals a composite of ``ops``' primitives; tests check
that it does. Call them as ``ops.bias_act`` and so on.
"""
from minivae.backend import get_backend
from minivae.kernels import reference
from minivae.ops import array_module, as_tensor, make_result, unbroadcast
from minivae.tensor import ShapeError


def _kernel(spec):
    """The active backend's kernel for ``spec``, a function of ``kernels/reference.py`` (its math, plainly)."""
    return getattr(get_backend().kernels, spec.__name__)


# ----- Matrix product (a backend kernel) -----

def matmul(a, b):
    """out = a @ b over the last two axes, batch axes broadcast;  da = g b^T, db = a^T g."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: {a.shape} @ {b.shape} (needs 2-D or batched operands with "
                         "a's last dimension equal to b's second-to-last)")
    if a.ndim == 2 and b.ndim == 2:
        return _matmul_2d(a, b)
    xp = array_module()
    try:
        out = xp.matmul(a.data, b.data)
    except ValueError:
        raise ShapeError(f"matmul: {a.shape} @ {b.shape} (batch dimensions do not broadcast)") from None

    def backward(g):
        return (unbroadcast(xp.matmul(g, xp.swapaxes(b.data, -1, -2)), a.shape) if a.requires_grad else None,
                unbroadcast(xp.matmul(xp.swapaxes(a.data, -1, -2), g), b.shape) if b.requires_grad else None)
    return make_result(out, (a, b), backward, "matmul")


def _matmul_2d(a, b):
    """The 2-D product by the backend's kernel (``reference.matmul``), transposes passed as flags."""
    matmul_kernel = _kernel(reference.matmul)

    def backward(g):  # da = g b^T, db = a^T g
        return (matmul_kernel(g, b.data, trans_b=True) if a.requires_grad else None,
                matmul_kernel(a.data, g, trans_a=True) if b.requires_grad else None)
    return make_result(matmul_kernel(a.data, b.data), (a, b), backward, "matmul")


# ----- Fused primitives for the VAE's hot paths -----

def _needed(inputs, grads):
    """``grads`` with None for each input that requires none (a kernel computes them together)."""
    return tuple(grad if t.requires_grad else None for t, grad in zip(inputs, grads))


def bias_act(x, bias, activation="identity"):
    """out = act(x + bias) for x (B, D), bias (D,), act in identity|relu|tanh|sigmoid (``reference.bias_act``)."""
    x, bias = as_tensor(x), as_tensor(bias)
    if x.ndim != 2 or bias.shape != (x.shape[1],):
        raise ShapeError(f"bias_act: x {x.shape} + bias {bias.shape} (needs x (B, D) and bias (D,))")
    out = _kernel(reference.bias_act)(x.data, bias.data, activation)

    def backward(g):  # dx = g act'(x + bias), written with out (e.g. tanh: 1 - out^2); dbias = sum_i dx[i]
        return _needed((x, bias), _kernel(reference.bias_act_backward)(g, out, activation))
    return make_result(out, (x, bias), backward, f"bias_act[{activation}]")


def reparameterize(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps (Kingma & Welling, eq. 10), eps (K, B, D) fixed for the backward.

    eps is recorded as an input, the noise leaf of the tape, and gets no gradient.
    """
    mu, logvar, eps = as_tensor(mu), as_tensor(logvar), as_tensor(eps)
    if mu.shape != logvar.shape or eps.shape[1:] != mu.shape:
        raise ShapeError(f"reparameterize: mu {mu.shape}, logvar {logvar.shape}, eps {eps.shape} "
                         "(needs mu and logvar (B, D) and eps (K, B, D))")

    def backward(g):  # dz/dmu = 1, dz/dlogvar = eps exp(logvar / 2) / 2, each summed over the K samples
        return (*_needed((mu, logvar), _kernel(reference.reparameterize_backward)(g, logvar.data, eps.data)), None)
    return make_result(_kernel(reference.reparameterize)(mu.data, logvar.data, eps.data), (mu, logvar, eps),
                       backward, "reparameterize")


def kl_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per row = -1/2 sum(1 + logvar - mu^2 - exp(logvar)) (K&W, App. B)."""
    mu, logvar = as_tensor(mu), as_tensor(logvar)
    if mu.shape != logvar.shape:
        raise ShapeError(f"kl_normal: mu {mu.shape} and logvar {logvar.shape} differ")

    def backward(g):  # d/dmu = mu, d/dlogvar = (exp(logvar) - 1) / 2, each times its row's g
        return _needed((mu, logvar), _kernel(reference.kl_normal_backward)(g, mu.data, logvar.data))
    return make_result(_kernel(reference.kl_normal)(mu.data, logvar.data), (mu, logvar), backward, "kl_normal")


def bernoulli_log_prob(x, logits):
    """log Bernoulli(x | sigmoid(l)) summed over the last axis = sum(x l - softplus(l)).

    x is data (recorded as an input, no gradient); logits may carry extra leading axes (K samples)
    that x broadcasts over.
    """
    x, logits = as_tensor(x), as_tensor(logits)
    _check_data_shape("bernoulli_log_prob", x, logits)

    def backward(g):  # d/dl = x - sigmoid(l), times its row's g
        return None, _kernel(reference.bernoulli_log_prob_backward)(g, x.data, logits.data)
    return make_result(_kernel(reference.bernoulli_log_prob)(x.data, logits.data), (x, logits), backward,
                       "bernoulli_log_prob")


def gaussian_log_prob(x, mean, sigma):
    """log N(x | mean, sigma^2 I) summed over the last axis, sigma a fixed number; x is data, as above."""
    x, mean = as_tensor(x), as_tensor(mean)
    _check_data_shape("gaussian_log_prob", x, mean)

    def backward(g):  # d/dmean = (x - mean) / sigma^2, times its row's g
        return None, _kernel(reference.gaussian_log_prob_backward)(g, x.data, mean.data, sigma)
    return make_result(_kernel(reference.gaussian_log_prob)(x.data, mean.data, sigma), (x, mean), backward,
                       "gaussian_log_prob")


def _check_data_shape(op, x, params):
    if x.shape != params.shape[params.ndim - x.ndim:]:
        raise ShapeError(f"{op}: data {x.shape} does not match parameters {params.shape} "
                         "(the data's shape must end the parameters' shape)")
