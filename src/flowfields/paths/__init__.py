"""Probability paths for Flow Matching (Lipman et al., arXiv:2210.02747, Secs. 3-4).

:class:`ProbPath` is the contract every path meets: ``sample(x_0, x_1, t) -> PathSample(t,
x_t, u_t, x_0, x_1)`` and ``sample_t(n)``. The Gaussian conditional paths
``p_t(x | x_1) = N(alpha_t x_1, sigma_t^2 I)`` with t = 0 noise and t = 1 data are
:class:`CondOTPath`, :class:`VPPath`, :class:`VEPath` (all :class:`GaussianPath`), built by
name with :func:`get_path`; they add ``mean_std(t, x_1)``, ``schedule(t)`` and the
conditional vector field of Theorem 3. :class:`GeodesicPath` (Riemannian flow matching) runs
along geodesics of a :class:`~flowfields.manifolds.Manifold`.
"""

from flowfields.paths.base import PathSample, ProbPath, check_path_inputs, check_times
from flowfields.paths.gaussian import (
    PATHS,
    CondOTPath,
    GaussianPath,
    Schedule,
    VEPath,
    VPPath,
    get_path,
)
from flowfields.paths.geodesic import GeodesicPath

__all__ = [
    "PATHS",
    "CondOTPath",
    "GaussianPath",
    "GeodesicPath",
    "PathSample",
    "ProbPath",
    "Schedule",
    "VEPath",
    "VPPath",
    "check_path_inputs",
    "check_times",
    "get_path",
]
