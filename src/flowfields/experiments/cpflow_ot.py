"""One convex potential block as the optimal transport map between Gaussians (``cpflow-ot``).

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942),
section 5.1 / figure 4. A single block (no ActNorm: the map is one gradient of a convex
function) is trained by maximum likelihood on ``N(m, C) -> N(0, I)`` for ``d = 2`` with the
paper's ``m = (1.5, 1)``, ``C = [[0.9, -0.75], [-0.75, 0.9]]`` and ``d = 8`` with a random
Wishart ``C`` (:func:`~flowfields.experiments.cpflow_toy.gaussian_problem`). Its transport cost
``E|x - f(x)|^2`` is compared with the closed form ``W_2^2 = |m|^2 + tr(C + I - 2 C^{1/2})``
and its map with the Brenier map ``C^{-1/2}(x - m)``; the baseline is the maximum-likelihood
autoregressive (lower-triangular) Gaussian flow, which reaches zero KL at a higher cost.
Also checked on the trained ``d = 2`` block: the CG log-det gradient surrogate averaged over
all ``2^d`` Rademacher probes equals the autograd gradient.

This is the OT half of ``cpflow-toy`` run on its own, with ``d = 8`` in both presets and a
claim for it; the training and evaluation code is shared (:class:`CPFlowToy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from flowfields.errors import check, check_positive_ints
from flowfields.experiments.cpflow_toy import PAPER, CPFlowToy
from flowfields.experiments.cpflow_toy import Config as ToyConfig
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "PAPER", "CPFlowOT", "Config"]

NAME = "cpflow-ot"


@dataclass
class Config(ToyConfig):
    """Settings of ``cpflow-ot``: those of ``cpflow-toy`` (its density fields are unused).

    Attributes:
        ot_dims, ot_hidden, ot_depth, ot_steps, ot_batch, ot_lr: the one-block trainings
            (Adam, cosine decay, fresh samples every step); ``ot_dims`` must contain 2 and 8.
        n_test, pot_n, seed, device: as in ``cpflow-toy``.
    """

    ot_dims: tuple[int, ...] = field(default_factory=lambda: (2, 8))

    @classmethod
    def quick(cls) -> Config:
        """d = 2 and d = 8, 500 steps each (batch 256, width 24): about 15 s of CPU on
        one thread (measured, with the closed-form Hessian; 46 s with nested autograd)."""
        return cls(ot_hidden=24, ot_steps=500, ot_batch=256, ot_lr=1e-2, n_test=5000, pot_n=1000)

    @classmethod
    def full(cls) -> Config:
        """d = 2 and d = 8, 2000 steps each (batch 512, width 32).

        Expected run time: about 2 min of CPU on one thread.
        """
        return cls()


class CPFlowOT(CPFlowToy, config=Config):
    """Gaussian-to-Gaussian optimal transport by one convex potential block (module docs)."""

    NAME = NAME
    VARIANTS = ("ot2", "ot8")

    def check_config(self) -> None:
        cfg = self.cfg
        check_positive_ints(cfg, "ot_steps", "ot_batch", "n_test", "pot_n")
        check(
            2 in cfg.ot_dims and 8 in cfg.ot_dims and all(d >= 2 for d in cfg.ot_dims),
            "ot_dims",
            cfg.ot_dims,
            "a tuple of integers >= 2 containing 2 and 8 (the claims)",
        )

    def train(self) -> dict[str, nn.Module]:
        return self._train_ot()

    def claims(self) -> list[Claim]:
        m = self.metrics
        r8 = m["ot8/cost_rel_err"]
        d8 = Claim(
            id="ot-cost-d8",
            statement="In d = 8 (random Wishart C) the trained block's transport cost is within "
            "5% of W2^2 and it stays close to the Brenier map, while the triangular flow pays "
            "more.",
            measured=f"cost {r8:+.2%} of W2^2 = {m['ot8/w2_closed_form']:.3f}; Brenier RMSE "
            f"{m['ot8/brenier_rmse']:.3f}; triangular cost "
            f"{m['ot8/triangular_cost'] / m['ot8/w2_closed_form'] - 1:+.1%}",
            threshold="|cost / W2^2 - 1| < 0.05",
            holds=bool(abs(r8) < 0.05),
            note=f"CP-Flow KL {m['ot8/cpflow_kl']:.4f}, triangular KL "
            f"{m['ot8/triangular_kl']:.4f}; the RMSE has no threshold in the paper for d = 8.",
        )
        return [*self._ot_claims(), d8]


EXPERIMENT = CPFlowOT
