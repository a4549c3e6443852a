"""minivae: a Variational Autoencoder built from scratch on a tiny autodiff engine.

The engine is ``Tensor`` (``minivae.tensor``) and its primitives
(``minivae.ops``); ``minivae.gradcheck.check_grads`` verifies any gradient it
computes against central differences in float64.
"""
from minivae import ops
from minivae.backend import get_backend, set_backend
from minivae.errors import MinivaeError
from minivae.tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["MinivaeError", "Tensor", "get_backend", "is_grad_enabled", "no_grad", "ops", "set_backend"]
__version__ = "0.1.0"
