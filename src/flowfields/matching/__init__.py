"""Flow Matching and continuous normalizing flows.

"Flow Matching for Generative Modeling" (Lipman, Chen, Ben-Hamu, Nickel, Le, arXiv:2210.02747):
train a vector field by regressing it onto conditional targets (:func:`cfm_loss`), then use it
as a continuous normalizing flow (:class:`CNF`) with exact or Hutchinson likelihoods and
bits/dim for discrete data (:func:`bits_per_dim`). The maximum-likelihood CNF baseline
(FFJORD-style, :func:`mlcnf_loss`) trains the same model through the ODE solve.

Convention: t = 0 is noise, t = 1 is data; ``CNF.log_prob`` integrates from t = 1 back to 0.
"""

from flowfields.matching.baselines import FullCovarianceGaussian, IndependentPixelHistogram
from flowfields.matching.cnf import CNF, ESTIMATORS, CNFLogProb, CNFSample
from flowfields.matching.likelihood import BitsPerDim, bits_per_dim, dequantize
from flowfields.matching.loss import cfm_loss, resolve_path
from flowfields.matching.mlcnf import mlcnf_loss
from flowfields.matching.normal import IsotropicNormal, StandardNormal, base_for_path

__all__ = [
    "CNF",
    "ESTIMATORS",
    "BitsPerDim",
    "CNFLogProb",
    "CNFSample",
    "FullCovarianceGaussian",
    "IndependentPixelHistogram",
    "IsotropicNormal",
    "StandardNormal",
    "base_for_path",
    "bits_per_dim",
    "cfm_loss",
    "dequantize",
    "mlcnf_loss",
    "resolve_path",
]
