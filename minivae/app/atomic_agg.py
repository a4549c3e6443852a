"""matplotlib's Agg backend, except that a PNG saved to a path is written with ``files.write_atomically``.

``plots.pyplot`` selects it (``matplotlib.use("module://minivae.app.atomic_agg")``),
so every figure drawn through pyplot, whichever function draws it, replaces
its file by a rename: a full disk leaves the previous PNG whole, and a symlink
planted at the file's name is replaced, not written through.
"""
import os

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from minivae.app.files import write_atomically


class FigureCanvasAtomicAgg(FigureCanvasAgg):
    """Agg; ``print_png`` to a path goes through a temporary file and a rename."""

    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, **_applied_by_print_figure):
        """Agg's print_png; print_figure also passes dpi, colours, orientation, already set on the figure."""
        draw_png = super().print_png
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return draw_png(filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs)
        write_atomically(filename_or_obj, lambda f: draw_png(f, metadata=metadata, pil_kwargs=pil_kwargs))


FigureCanvas = FigureCanvasAtomicAgg
FigureManager = FigureManagerBase
