"""Several seeds in one run of the Voronoi dequantization experiments.

``voronoi-discrete2d`` and ``voronoi-categorical`` take ``seeds`` (default 1). Seed index
``k`` of a run at ``--seed S`` is the single-seed run at ``--seed S + k``, exactly: its
models, data and evaluation draws come from :func:`seed_scope`, which sets ``cfg.seed`` to
``S + k`` while that seed trains and evaluates. Its models are saved as
``<variant>-seed<S + k>`` (the first seed's keep their plain names), its metrics under
``seed<S + k>/``. The claims are then decided on the means over the seeds, with their
standard errors and the per-seed verdicts in the claim's text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flowfields.errors import check
from flowfields.report.stats import mean_se

__all__ = [
    "evaluate_over_seeds",
    "fmt_mean",
    "lowest_on_mean",
    "seed_scope",
    "seed_suffix",
    "seed_summary",
    "seed_values",
    "seeds_text",
    "strip_seed",
]

_SUFFIX = re.compile(r"-seed\d+$")


def seed_suffix(base_seed: int, k: int) -> str:
    """The variant suffix of seed index ``k`` (0-based) of a run at seed ``base_seed``:
    ``""`` for the first, ``"-seed<base_seed + k>"`` after it."""
    check(k >= 0, "k", k, "a seed index >= 0")
    return "" if k == 0 else f"-seed{base_seed + k}"


def strip_seed(variant: str) -> str:
    """``variant`` without a trailing ``-seed<N>`` (:func:`seed_suffix`)."""
    return _SUFFIX.sub("", variant)


def seed_values(base_seed: int, n: int) -> list[int]:
    """The seeds ``base_seed, ..., base_seed + n - 1`` of a run with ``seeds = n``."""
    return [base_seed + k for k in range(n)]


@contextmanager
def seed_scope(exp: Any, k: int) -> Iterator[str]:
    """Within the block, ``exp.cfg`` is its config with ``seed + k`` and, for ``k > 0``,
    ``exp.metrics`` a fresh dict whose entries are stored afterwards under
    ``seed<seed + k>/``. Yields the variant suffix (:func:`seed_suffix`)."""
    base_cfg, base_metrics = exp.cfg, exp.metrics
    seed = int(base_cfg.seed) + k
    exp.cfg = dataclasses.replace(base_cfg, seed=seed)
    scoped: dict[str, Any] = base_metrics if k == 0 else {}
    exp.metrics = scoped
    try:
        yield seed_suffix(int(base_cfg.seed), k)
    finally:
        exp.cfg, exp.metrics = base_cfg, base_metrics
        if k:
            base_metrics.update({f"seed{seed}/{key}": v for key, v in scoped.items()})


def seed_summary(
    rows: Sequence[dict[str, Any]], group: str, field: str, kinds: Sequence[str]
) -> list[dict[str, Any]]:
    """Per value of ``row[group]`` (a PMF or data set), over the seeds' rows: the mean and
    standard error of ``row[f"{kind}_{field}"]`` for each kind, the paired differences
    ``kinds[0] - other`` (mean and standard error) and ``wins``, the number of seeds where
    ``kinds[0]`` is strictly lowest. With one seed the means are that seed's values."""
    first = kinds[0]
    out = []
    for name in dict.fromkeys(r[group] for r in rows):
        rs = [r for r in rows if r[group] == name]
        s: dict[str, Any] = {group: name, "seeds": len(rs)}
        for kind in kinds:
            s[f"{kind}_{field}"], s[f"{kind}_{field}_se"] = mean_se(
                [r[f"{kind}_{field}"] for r in rs]
            )
        for other in kinds[1:]:
            s[f"{first}_minus_{other}"], s[f"{first}_minus_{other}_se"] = mean_se(
                [r[f"{first}_{field}"] - r[f"{other}_{field}"] for r in rs]
            )
        s["wins"] = sum(
            r[f"{first}_{field}"] < min(r[f"{o}_{field}"] for o in kinds[1:]) for r in rs
        )
        out.append(s)
    return out


def evaluate_over_seeds(
    exp: Any,
    evaluate_seed: Callable[[str], list[dict[str, Any]]],
    table: str,
    group: str,
    field: str,
    kinds: Sequence[str],
) -> list[dict[str, Any]]:
    """Run ``evaluate_seed(suffix)`` inside :func:`seed_scope` for each of ``exp.cfg.seeds``
    seeds, store the per-seed rows in ``exp.tables[table]`` and return their
    :func:`seed_summary`. With more than one seed the summary is also stored, as the table
    ``f"{table}_mean"`` and as metrics ``mean/<group value>/<key>``."""
    rows: list[dict[str, Any]] = []
    for k in range(exp.cfg.seeds):
        with seed_scope(exp, k) as sfx:
            rows += evaluate_seed(sfx)
    exp.tables[table] = rows
    summary = seed_summary(rows, group, field, kinds)
    if exp.cfg.seeds > 1:  # the means the claim uses, beside the per-seed rows
        exp.tables[f"{table}_mean"] = summary
        for s in summary:
            for key, value in s.items():
                if key != group:
                    exp.metrics[f"mean/{s[group]}/{key}"] = value
    return summary


def lowest_on_mean(summary: dict[str, Any], field: str, kinds: Sequence[str]) -> bool:
    """Whether ``kinds[0]``'s mean ``field`` is strictly below every other kind's mean."""
    v = summary[f"{kinds[0]}_{field}"]
    return bool(v < min(summary[f"{k}_{field}"] for k in kinds[1:]))


def fmt_mean(mean: float, se: float, digits: int = 3) -> str:
    """``"m"`` for one seed (``se`` NaN), else ``"m +- se"``."""
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} +- {se:.{digits}f}"


def seeds_text(summaries: Sequence[dict[str, Any]], group: str, kinds: Sequence[str]) -> str:
    """For several seeds: the per-seed wins of ``kinds[0]`` and its paired differences to the
    others (mean +- standard error), one clause per group; ``""`` for one seed."""
    if not summaries or summaries[0]["seeds"] < 2:
        return ""
    first = kinds[0]
    parts = []
    for s in summaries:
        diffs = ", ".join(
            f"{first} - {o} {fmt_mean(s[f'{first}_minus_{o}'], s[f'{first}_minus_{o}_se'])}"
            for o in kinds[1:]
        )
        parts.append(f"{s[group]}: lowest in {s['wins']}/{s['seeds']} seeds, {diffs}")
    return "; ".join(parts)
