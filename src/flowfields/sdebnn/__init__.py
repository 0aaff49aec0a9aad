"""Infinitely deep Bayesian neural networks with SDEs (SDE-BNN, arXiv:2102.06559).

Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with Stochastic
Differential Equations" (AISTATS 2022). A continuous-depth network whose weights follow an
SDE over depth t in [0, 1]:

- :class:`OUPrior` ``dw = -theta w dt + sigma dB``; :class:`PosteriorDrift` ``NN_phi(t, w)``
  (zero-initialised last layer, so posterior = prior and KL = 0 at initialisation);
- :class:`AugmentedSDE` solves ``(h, w, KL)`` jointly with the estimators of
  :data:`ESTIMATORS` ("ckl", "fmc", "stl"), through :func:`flowfields.integrate.sdeint`;
- :class:`SDEBNN` (regression or classification) returns :class:`BNNOutput` with ``out``
  (n_samples, batch, out_dim) and ``kl`` (n_samples,); :func:`elbo_loss` trains it,
  :func:`bayes_model_average` and :func:`predictive_interval` summarise its predictions;
- baselines on the same architecture: :class:`ODENet` (sigma = 0), :class:`MeanFieldMLP`
  (mean-field VI), :class:`DeepEnsemble`.
"""

from flowfields.sdebnn.baselines import BayesLinear, DeepEnsemble, MeanFieldMLP
from flowfields.sdebnn.brownian import PaddedBrownian
from flowfields.sdebnn.field import WeightedMLP
from flowfields.sdebnn.loss import ELBO, elbo_loss, negative_log_likelihood
from flowfields.sdebnn.model import (
    IO_MODES,
    SDE_METHODS_ITO,
    SDE_METHODS_STRATONOVICH,
    SDEBNN,
    TASKS,
    BNNOutput,
    ODENet,
)
from flowfields.sdebnn.posterior import PosteriorDrift
from flowfields.sdebnn.predictive import (
    PredictiveInterval,
    bayes_model_average,
    predictive_interval,
)
from flowfields.sdebnn.prior import OUPrior
from flowfields.sdebnn.sde import ESTIMATORS, AugmentedSDE

__all__ = [
    "ELBO",
    "ESTIMATORS",
    "IO_MODES",
    "SDEBNN",
    "SDE_METHODS_ITO",
    "SDE_METHODS_STRATONOVICH",
    "TASKS",
    "AugmentedSDE",
    "BNNOutput",
    "BayesLinear",
    "DeepEnsemble",
    "MeanFieldMLP",
    "ODENet",
    "OUPrior",
    "PaddedBrownian",
    "PosteriorDrift",
    "PredictiveInterval",
    "WeightedMLP",
    "bayes_model_average",
    "elbo_loss",
    "negative_log_likelihood",
    "predictive_interval",
]
