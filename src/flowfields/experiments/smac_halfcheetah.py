"""SMAC vs SAC on HalfCheetah-v5 at 100k steps (MuJoCo): a full-preset-only experiment.

Zhang et al., "Latent State Marginalization as a Low-cost Approach for Improving Exploration"
(ICLR 2023, arXiv:2210.00999). The machinery of :mod:`~flowfields.experiments.smac_pendulum`
(same seeds for SAC and SMAC, deterministic evaluation on a separate seeded environment,
learning curves with mean +- s.e. over seeds) on HalfCheetah-v5 with stable-baselines3's SAC
settings for MuJoCo (rl-baselines3-zoo: lr 3e-4, batch 256, 256-256, 10k random warm-up
steps). The only claim is the return comparison, made by the full preset alone: the quick
preset is a smoke run that checks the MuJoCo pipeline end to end. Models saved: every run's
actor (``sac_seed0``, ``smac_seed0``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from flowfields.experiments.smac_pendulum import Config as PendulumConfig
from flowfields.experiments.smac_pendulum import SMACPendulum
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "NAME", "Config", "SMACHalfCheetah"]

NAME = "smac-halfcheetah"


@dataclass
class Config(PendulumConfig):
    """Settings of ``smac-halfcheetah`` (fields as :class:`smac_pendulum.Config`).

    Defaults: 3 seeds x 100k steps, SB3's MuJoCo SAC settings, no POMDP variant, evaluation
    every 10k steps (10 episodes of 1,000 steps).
    """

    env_id: str = "HalfCheetah-v5"
    steps: int = 100_000
    lr: float = 3e-4
    learning_starts: int = 10_000
    pomdp: bool = False
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 10_000
    claim_steps: int = 100_000

    @classmethod
    def quick(cls) -> Config:
        """A smoke run of the MuJoCo pipeline: 1 seed x 300 steps (200 random), 32 units,
        one evaluation episode; no claim is made (full preset only)."""
        return cls(
            seeds=1,
            steps=300,
            hidden=32,
            head_hidden=16,
            batch_size=32,
            learning_starts=200,
            eval_every=300,
            eval_episodes=1,
            checkpoint_every=300,
        )

    @classmethod
    def full(cls) -> Config:
        """3 seeds x 100k steps, 256 units: 600k updates; measured on the 2-core CPU (one
        thread a run) 951-956 s a SAC run and 1,152-1,177 s a SMAC run, evaluations
        included: about 1.75 h of CPU, 1 h wall with ``jobs=2`` (docs/rl.md has the results).
        ``benchmarks/device_smac_full.sh`` runs it on the GPU machine with ``jobs=6``."""
        return cls()


class SMACHalfCheetah(SMACPendulum, config=Config):
    """SMAC vs SAC returns on HalfCheetah-v5 at 100k steps (arXiv:2210.00999)."""

    NAME = NAME

    def evaluate(self, models: dict[str, nn.Module]) -> None:
        self._evaluate_returns()

    def claims(self) -> list[Claim]:
        m = self.metrics
        sac, smac = m["sac/return_mean"], m["smac/return_mean"]
        se = math.hypot(m["sac/return_se"], m["smac/return_se"])
        claim = Claim(
            id="smac-at-least-sac-halfcheetah",
            statement="SMAC is at least as good as SAC on HalfCheetah-v5 at 100k steps.",
            measured=f"SMAC {smac:.1f} vs SAC {sac:.1f} (s.e. of difference {se:.1f})",
            threshold="SMAC mean >= SAC mean - 2 s.e. of the difference",
            holds=bool(smac >= sac - 2 * se) if math.isfinite(se) else smac >= sac,
            note=f"{self._budget()}; deterministic evaluation, {self.cfg.eval_episodes} episodes.",
        )
        return self.full_only([claim])


EXPERIMENT = SMACHalfCheetah
