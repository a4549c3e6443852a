"""minivae: a Variational Autoencoder built from scratch on a tiny autodiff engine.

The engine is ``Tensor`` (``minivae.tensor``) and its primitives
(``minivae.ops``); ``minivae.gradcheck.check_grads`` verifies any gradient it
computes against central differences in float64.

The names below are imported when first used (PEP 562), so importing a
submodule such as ``minivae.__main__`` costs nothing until it asks for NumPy.
"""
import importlib

_EXPORTS = {"MinivaeError": "minivae.errors", "Tensor": "minivae.tensor", "get_backend": "minivae.backend",
            "is_grad_enabled": "minivae.tensor", "no_grad": "minivae.tensor", "ops": None,
            "set_backend": "minivae.backend"}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minivae' has no attribute {name!r}")
    module = _EXPORTS[name]
    return importlib.import_module(f"minivae.{name}") if module is None else getattr(importlib.import_module(module), name)
