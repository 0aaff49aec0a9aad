"""Figures shared by the compression experiments (arXiv:2212.13659)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_rate_vs_frames"]


def plot_rate_vs_frames(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Payload bits of the learned discretization and of every-frame coding against T.

    Args:
        ax: a matplotlib axes.
        rows: one mapping per frame count with ``T``, ``bits`` and ``every_bits``.
    """
    ax.plot([r["T"] for r in rows], [r["bits"] for r in rows], "o-", label="learned")
    ax.plot([r["T"] for r in rows], [r["every_bits"] for r in rows], "^:", label="every frame")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames T (same content)")
    ax.set_ylabel("payload bits")
    ax.legend()
