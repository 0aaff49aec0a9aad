"""Result records shared by every experiment: claims checked and metrics measured."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Claim", "Result", "format_number"]


def format_number(value: Any) -> str:
    """A number as people read it: 4 significant digits (``0.128``, ``3.47e-05``, ``1.2e+04``),
    integers and strings unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


@dataclass
class Claim:
    """One claim of a paper, checked against a measurement.

    Attributes:
        id: short stable identifier, e.g. ``"ot-fewer-nfe"``.
        statement: the claim in words, as the paper makes it.
        measured: the number measured here (or a short string when it is a comparison).
        threshold: what ``measured`` had to reach for the claim to hold, in words or a number.
        holds: whether it held in this run. Never forced: a claim that fails is reported failing.
        note: why it may not hold at this scale, caveats, or how it was measured.
    """

    id: str
    statement: str
    measured: float | str
    threshold: float | str
    holds: bool
    note: str = ""

    def describe(self) -> str:
        """One line: ``[held] id: measured 0.128 (threshold 0.15)``."""
        mark = "held        " if self.holds else "did not hold"
        return (
            f"[{mark}] {self.id}: measured {format_number(self.measured)} "
            f"(threshold {format_number(self.threshold)})"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.measured, float) and not math.isfinite(self.measured):
            d["measured"] = str(self.measured)
        d["holds"] = bool(self.holds)
        return d


@dataclass
class Result:
    """What an experiment's ``run`` returns.

    Attributes:
        name: the experiment's CLI name, e.g. ``"flow-matching-2d"``.
        paper: title and arXiv id of the paper reproduced.
        config: the configuration used, as a plain dict.
        metrics: flat keys such as ``"condot/nll_nats"`` mapped to numbers (or short strings).
        claims: the paper's claims with what was measured here.
        figures: paths of PNG figures written into the run directory.
        tables: optional named tables (list of row dicts) for the report.
        wall_s: total wall-clock of the run in seconds.
    """

    name: str
    paper: str
    config: dict[str, Any]
    metrics: dict[str, float | int | str]
    claims: list[Claim] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    wall_s: float = 0.0
