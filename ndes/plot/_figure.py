"""The one figure and save helper every `ndes.plot` function draws with: a
`matplotlib.figure.Figure` on an Agg canvas (no pyplot, so neither the user's backend nor
pyplot's global figure state changes; a notebook displays a returned figure)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["new_figure", "save"]


def new_figure(width: float, height: float, *, layout: str | None = "constrained"):
    """A `Figure` of `width` x `height` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | os.PathLike, title: str | None = None, dpi: int = 100) -> Path:
    """Give `fig` its `title` (if any) and write it to `path` (parent folders created)."""
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
