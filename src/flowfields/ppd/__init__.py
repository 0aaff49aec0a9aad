"""Probability path divergence (PPD) on manifolds.

Ben-Hamu, Cohen, Bose, Amos, Grover, Nickel, Chen, Lipman, "Matching Normalizing Flows and
Probability Paths on Manifolds" (ICML 2022, arXiv:2207.04711): train a manifold CNF's tangent
field ``v_t`` so that it generates a prescribed path ``p_t`` (uniform at t = 0, a kernel
density estimate of the data at t = 1) by minimising the logarithmic mass conservation
residual ``r_t = d_t log p_t + div_g v_t + <grad_g log p_t, v_t>_g``: no ODE solve per
iteration.

- Target paths: :class:`VMFMixturePath` (S^n), :class:`VonMisesMixturePath` (T^d), with a
  :class:`KappaSchedule` (``kappa_0 = 0`` exactly).
- :func:`lmc_residual`, :func:`ppd_loss` (l = 1, 2; full data or minibatch centers),
  :func:`rfm_loss` (Riemannian flow matching on the geodesic path, the baseline).
- :class:`ManifoldField` (the network); densities with exact log-densities and samplers
  (:class:`VMFMixture`, :class:`RingAndBlobs` on S^2, :class:`VonMisesMixture`,
  :class:`WrappedNormalMixture` on T^d) and the EM baselines (:func:`fit_vmf_mixture`,
  :func:`fit_von_mises_mixture`); :func:`minibatch_bias`, :func:`tv_bound`.
- The CNF itself is :class:`flowfields.matching.CNF` with ``manifold=``.
"""

from flowfields.ppd.data import airports_s2, lat_lon_to_s2
from flowfields.ppd.diagnostics import (
    BiasRow,
    TVBound,
    mean_offset,
    minibatch_bias,
    minibatch_gradient_bias,
    tv_bound,
)
from flowfields.ppd.field import ManifoldField
from flowfields.ppd.kernels import (
    log_i0,
    log_vmf_normalizer,
    sample_vmf,
    sample_vmf_s2,
    sample_von_mises,
)
from flowfields.ppd.loss import ppd_loss, rfm_loss
from flowfields.ppd.mixture import (
    RingAndBlobs,
    VMFMixture,
    fit_vmf_mixture,
    random_vmf_mixture,
    ring_and_blobs,
)
from flowfields.ppd.paths import (
    KappaSchedule,
    KernelPath,
    PathMarginal,
    VMFMixturePath,
    VonMisesMixturePath,
)
from flowfields.ppd.residual import DIVERGENCES, LMCTerms, lmc_residual, tangent_field
from flowfields.ppd.torus_mixture import (
    VonMisesMixture,
    WrappedNormalMixture,
    fit_von_mises_mixture,
    random_von_mises_mixture,
    random_wrapped_normal_mixture,
)

__all__ = [
    "DIVERGENCES",
    "BiasRow",
    "KappaSchedule",
    "KernelPath",
    "LMCTerms",
    "ManifoldField",
    "PathMarginal",
    "RingAndBlobs",
    "TVBound",
    "VMFMixture",
    "VMFMixturePath",
    "VonMisesMixture",
    "VonMisesMixturePath",
    "WrappedNormalMixture",
    "airports_s2",
    "fit_vmf_mixture",
    "fit_von_mises_mixture",
    "lat_lon_to_s2",
    "lmc_residual",
    "log_i0",
    "log_vmf_normalizer",
    "mean_offset",
    "minibatch_bias",
    "minibatch_gradient_bias",
    "ppd_loss",
    "random_vmf_mixture",
    "random_von_mises_mixture",
    "random_wrapped_normal_mixture",
    "rfm_loss",
    "ring_and_blobs",
    "sample_vmf",
    "sample_vmf_s2",
    "sample_von_mises",
    "tangent_field",
    "tv_bound",
]
