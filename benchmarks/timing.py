"""Interleaved timing of ours vs a peer in one process, reported as ratios with spread.

Every benchmark in this folder uses :func:`compare`: the candidates run in alternating order,
round after round, so that drift in the machine's speed (other processes, thermal state) hits
them alike; the ratio ours/peer is computed per round and summarised by its median and
interquartile range.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Comparison", "compare", "machine", "markdown_table", "write_result"]


@dataclass
class Comparison:
    """Timings of one benchmark row. Times in milliseconds (median over rounds)."""

    name: str
    ours_ms: float
    peer_ms: float
    ratio: float  # median over rounds of ours/peer: below 1 means we are faster
    ratio_q1: float
    ratio_q3: float
    rounds: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.ours_ms:.3f} | {self.peer_ms:.3f} | "
            f"{self.ratio:.2f} [{self.ratio_q1:.2f}, {self.ratio_q3:.2f}] |"
        )


def _time_once(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) * 1e3 / inner


def compare(
    name: str,
    ours: Callable[[], object],
    peer: Callable[[], object],
    *,
    rounds: int = 15,
    inner: int | None = None,
    warmup: int = 2,
) -> Comparison:
    """Time ``ours`` and ``peer`` interleaved (alternating which goes first) and compare.

    Args:
        name: row label.
        ours, peer: zero-argument callables doing the same work.
        rounds: number of interleaved rounds.
        inner: calls per timing; by default chosen so one timing takes about 20 ms.
        warmup: untimed calls of each before measuring.
    """
    for _ in range(warmup):
        ours()
        peer()
    if inner is None:
        one = max(_time_once(ours, 1), _time_once(peer, 1), 1e-3)
        inner = max(1, int(20.0 / one))
    t_ours, t_peer, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a = _time_once(ours, inner)
            b = _time_once(peer, inner)
        else:
            b = _time_once(peer, inner)
            a = _time_once(ours, inner)
        t_ours.append(a)
        t_peer.append(b)
        ratios.append(a / b)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return Comparison(
        name=name,
        ours_ms=statistics.median(t_ours),
        peer_ms=statistics.median(t_peer),
        ratio=statistics.median(ratios),
        ratio_q1=q[0],
        ratio_q3=q[2],
        rounds=rounds,
    )


def write_result(path: Path, text: str) -> int:
    """Write a benchmark's markdown result to ``path`` (creating its folder), print it, return 0.

    The last step of every ``bench_*.main``: ``return write_result(OUT, text)``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return 0


def machine() -> str:
    """One line describing where the numbers were taken."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"python {platform.python_version()}"
    )


def markdown_table(rows: list[Comparison], peer: str) -> str:
    """Markdown table of comparisons: ours ms, peer ms, ratio median [q1, q3]."""
    head = f"| case | ours (ms) | {peer} (ms) | ours/{peer} median [IQR] |\n|---|---:|---:|---:|"
    return "\n".join([head, *(r.row() for r in rows)])
