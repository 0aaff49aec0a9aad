"""Summary statistics shared by the experiments' reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from flowfields.errors import check

__all__ = ["mean_se"]


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)) of ``values``
    (shape (n,), n >= 1), e.g. a metric over seeds; the standard error of one value is NaN
    (undefined)."""
    check(len(values) >= 1, "values", list(values), "at least one value")
    vals = [float(v) for v in values]
    if len(vals) == 1:
        return vals[0], math.nan
    return statistics.fmean(vals), statistics.stdev(vals) / math.sqrt(len(vals))
