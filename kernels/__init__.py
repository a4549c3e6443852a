"""Array-level kernels for minivae's hot paths, one module per target.

Installed as ``minivae.kernels``. ``reference`` is the NumPy statement of the
contract (its docstring lists every kernel); the other modules implement the
same names for their target. Nothing here imports the autodiff engine, and
nothing here imports numba or cupy until a target module is imported.
"""
