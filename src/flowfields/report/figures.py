"""Saving matplotlib figures as PNG files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowfields.errors import check

__all__ = ["DPI", "save_figure"]

#: Resolution of saved figures (dots per inch).
DPI = 110


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` (directories created) and close it.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: destination; a missing ``.png`` suffix is added.
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        FlowfieldsError: if ``fig`` is not a matplotlib figure.
    """
    from matplotlib.figure import Figure

    check(isinstance(fig, Figure), "fig", fig, "a matplotlib.figure.Figure")
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
