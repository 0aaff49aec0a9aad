"""Probability paths for Flow Matching (Lipman et al., arXiv:2210.02747, Sec. 4).

Gaussian conditional paths ``p_t(x | x_1) = N(alpha_t x_1, sigma_t^2 I)`` with t = 0 noise and
t = 1 data: :class:`CondOTPath`, :class:`VPPath`, :class:`VEPath`, built by name with
:func:`get_path`. Each gives ``sample(x_0, x_1, t) -> PathSample(t, x_t, u_t)``,
``mean_std(t, x_1)``, ``sample_t(n)`` and the conditional vector field of Theorem 3.
"""

from flowfields.paths.gaussian import (
    PATHS,
    CondOTPath,
    GaussianPath,
    PathSample,
    Schedule,
    VEPath,
    VPPath,
    get_path,
)

__all__ = [
    "PATHS",
    "CondOTPath",
    "GaussianPath",
    "PathSample",
    "Schedule",
    "VEPath",
    "VPPath",
    "get_path",
]
