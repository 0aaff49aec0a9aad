"""SMAC vs SAC on Pendulum-v1 without velocity: a recurrent belief filter as SMAC's latent.

Zhang, Courville, Bengio, Zheng, Zhang, Chen, "Latent State Marginalization as a Low-cost
Approach for Improving Exploration" (ICLR 2023, arXiv:2210.00999): in a POMDP the policy's
latent is a belief over a recurrent state, and SMAC marginalizes over it. The observation is
``(cos theta, sin theta)`` only (the angular velocity removed; optional dropped frames and
noise). Two observation models, each trained for SAC and SMAC on the same seeds with the
machinery of :mod:`~flowfields.experiments.smac_pendulum`: memoryless agents on the partial
observation (``pomdp_*``), and agents whose actor reads the window of the last
``filter_window`` steps through the GRU :class:`~flowfields.rl.BeliefFilter` (``belief_*``;
SMAC's ``q(s | h)`` is the belief its K + 1 particles sample, SAC's tanh-Gaussian sits on the
same filter; the critics read the flattened window). Measured at any scale: the update cost of
SMAC relative to SAC with the filter. The return claims are full preset only. Models saved:
every run's actor (``pomdp_sac_seed0``, ``belief_smac_seed0``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from flowfields.errors import check
from flowfields.experiments.smac_pendulum import Config as PendulumConfig
from flowfields.experiments.smac_pendulum import ObsSetting, SMACPendulum
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "SMACPOMDP", "Config"]

NAME = "smac-pomdp"


@dataclass
class Config(PendulumConfig):
    """Settings of ``smac-pomdp`` (fields as :class:`smac_pendulum.Config`, plus the filter).

    Attributes:
        filter_window: steps of ``(o_t, a_{t-1}, valid)`` the recurrent filter reads.
        filter_hidden: size of its GRU state.
        filter_aux: weight of the filter's auxiliary next-observation prediction loss in the
            actor's loss (0: the filter is trained by the actor's loss alone).
    """

    pomdp: bool = True
    filter_window: int = 4
    filter_hidden: int = 64
    filter_aux: float = 0.0

    @classmethod
    def quick(cls) -> Config:
        """A smoke run: 2 seeds x 500 steps per agent and observation model, 64 units, batch 64
        (8 runs, about 40 s of CPU).

        The return claims are full preset only; the cost claim is measured in full.
        """
        return cls(
            seeds=2,
            steps=500,
            hidden=64,
            batch_size=64,
            eval_every=500,
            eval_episodes=2,
            cost_repeats=3,
            checkpoint_every=500,
        )

    @classmethod
    def full(cls) -> Config:
        """3 seeds x 20k steps, 256 units: 12 runs at 12-20 ms of CPU per step (the filter
        adds about a third, measured), about an hour and a half of CPU; not run here."""
        return cls()


class SMACPOMDP(SMACPendulum, config=Config):
    """SMAC with a recurrent belief vs SAC on velocity-free Pendulum (arXiv:2210.00999)."""

    NAME = NAME
    VARIANTS = ("belief_smac_seed0", "belief_sac_seed0")

    @classmethod
    def settings(cls, cfg: PendulumConfig) -> list[ObsSetting]:
        assert isinstance(cfg, Config)
        partial = (True, cfg.pomdp_flicker, cfg.pomdp_noise)
        return [
            ObsSetting("pomdp_", f"{cfg.env_id} without velocity, memoryless", *partial),
            ObsSetting(
                "belief_",
                f"{cfg.env_id} without velocity, recurrent filter (L = {cfg.filter_window})",
                *partial,
                filter_window=cfg.filter_window,
                filter_hidden=cfg.filter_hidden,
                filter_aux=cfg.filter_aux,
            ),
        ]

    def check_config(self) -> None:
        cfg = self.cfg
        check(
            isinstance(cfg.filter_window, int) and cfg.filter_window >= 1,
            "filter_window",
            cfg.filter_window,
            "a positive integer (steps the recurrent filter reads)",
        )
        super().check_config()

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        self._evaluate_returns()
        self._measure_cost(filter_window=self.cfg.filter_window, filter_aux=self.cfg.filter_aux)

    def _filter_claim(self) -> Claim:
        m = self.metrics
        with_f, without = m["belief_smac/return_mean"], m["pomdp_smac/return_mean"]
        se = math.hypot(m["belief_smac/return_se"], m["pomdp_smac/return_se"])
        return Claim(
            id="belief-filter-helps",
            statement="The recurrent belief recovers what the missing velocity hides: SMAC with "
            "the filter beats memoryless SMAC (a check of this implementation, not the paper's).",
            measured=f"with filter {with_f:.1f} vs memoryless {without:.1f} (s.e. of "
            f"difference {se:.1f})",
            threshold="with > memoryless + 2 s.e. of the difference",
            holds=bool(with_f > without + 2 * se) if math.isfinite(se) else with_f > without,
            note=f"{self._budget()}, window {self.cfg.filter_window}.",
        )

    def claims(self) -> list[Claim]:
        cost = self._cost_claim()
        cost.note += (
            f" Both agents with the recurrent filter (window {self.cfg.filter_window}"
            f", auxiliary loss weight {self.cfg.filter_aux})."
        )
        returns = [
            self._robust_claim("belief_", "both with the recurrent filter"),
            self._filter_claim(),
        ]
        return [cost, *self.full_only(returns)]


EXPERIMENT = SMACPOMDP
