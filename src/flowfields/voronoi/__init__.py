"""Semi-discrete normalizing flows through differentiable tessellation (arXiv:2203.06832).

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(NeurIPS 2022), re-derived from the maths:

- :class:`VoronoiTessellation`: K learnable anchors strictly inside a learnable box;
  :func:`nearest_anchor`, the closed-form ray cast :func:`ray_length` (``1 / cell_mu``), and
  the cell map :func:`cell_map` / :func:`cell_map_inverse` from R^D onto a cell with the
  closed-form log-determinant ``D theta - (D + 1) log(1 + t)``;
- dequantization of categorical data: :class:`VoronoiDequantizer` (learned cells, any D),
  the baselines :class:`ArgmaxDequantizer` (binary, ``D = ceil(log2 K)``) and
  :class:`UniformDequantizer`, and :class:`DequantizedFlow` (ELBO, IWAE, bits per variable)
  on a zuko flow ``p(z)`` (:func:`make_flow`);
- :class:`VoronoiMixture`: a disjoint mixture whose likelihood evaluates one component, and
  the standard K-component :class:`FlowMixture` it is compared against, and
  :class:`VoronoiMixtureFlow`, the mixture as a layer of a stack of flows on R^D;
- :func:`grid_pmf`: joint PMFs on a K x K grid with exact entropy; :func:`titanic_pmf` (the
  Titanic table) and :func:`digits_levels` (the 8x8 digits, 64 variables of 17 levels).
"""

from flowfields.voronoi.dequantization import (
    DEQUANTIZERS,
    ArgmaxDequantizer,
    DequantizedFlow,
    Dequantizer,
    UniformDequantizer,
    VoronoiDequantizer,
    make_dequantizer,
)
from flowfields.voronoi.flows import FLOW_KINDS, make_flow, sample_flow
from flowfields.voronoi.mixture import (
    MIXTURE_BASES,
    FlowMixture,
    VoronoiMixture,
    VoronoiMixtureFlow,
    check_student_base,
    multivariate_t_log_prob,
    polar_cell_nodes,
    polar_component_masses,
    sample_multivariate_t,
)
from flowfields.voronoi.pmf import (
    PMF_NAMES,
    TITANIC_LEVELS,
    digits_levels,
    entropy_bits,
    grid_pmf,
    sample_pmf,
    sample_table,
    titanic_pmf,
)
from flowfields.voronoi.tessellation import (
    VoronoiTessellation,
    cell_map,
    cell_map_inverse,
    cell_mu,
    nearest_anchor,
    ray_length,
)

__all__ = [
    "DEQUANTIZERS",
    "FLOW_KINDS",
    "MIXTURE_BASES",
    "PMF_NAMES",
    "TITANIC_LEVELS",
    "ArgmaxDequantizer",
    "DequantizedFlow",
    "Dequantizer",
    "FlowMixture",
    "UniformDequantizer",
    "VoronoiDequantizer",
    "VoronoiMixture",
    "VoronoiMixtureFlow",
    "VoronoiTessellation",
    "cell_map",
    "cell_map_inverse",
    "cell_mu",
    "check_student_base",
    "digits_levels",
    "entropy_bits",
    "grid_pmf",
    "make_dequantizer",
    "make_flow",
    "multivariate_t_log_prob",
    "nearest_anchor",
    "polar_cell_nodes",
    "polar_component_masses",
    "ray_length",
    "sample_flow",
    "sample_multivariate_t",
    "sample_pmf",
    "sample_table",
    "titanic_pmf",
]
