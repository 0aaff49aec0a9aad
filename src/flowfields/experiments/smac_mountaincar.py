"""SMAC vs SAC on MountainCarContinuous-v0: does marginalizing a latent policy explore better?

Zhang et al., "Latent State Marginalization as a Low-cost Approach for Improving Exploration"
(ICLR 2023, arXiv:2210.00999). MountainCarContinuous is the known exploration failure of SAC
with default hyper-parameters: the reward penalises effort, and a policy that never reaches the
flag learns to stand still. SAC and SMAC (stable-baselines3's SAC defaults for both; SMAC with
K = 8) are trained on the same seeds as in :mod:`flowfields.experiments.smac_pendulum`; a seed
reaches the goal when its final deterministic evaluation returns more than 90. Models saved:
every run's actor (``sac_seed0``, ``smac_seed0``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from flowfields.experiments.smac_pendulum import Config as PendulumConfig
from flowfields.experiments.smac_pendulum import SMACPendulum
from flowfields.report.result import Claim

__all__ = ["EXPERIMENT", "GOAL_RETURN", "NAME", "Config", "SMACMountainCar"]

NAME = "smac-mountaincar"
#: A return above this means the car reached the flag (the +100 bonus minus the effort).
GOAL_RETURN = 90.0


@dataclass
class Config(PendulumConfig):
    """Settings of ``smac-mountaincar`` (fields as :class:`smac_pendulum.Config`).

    Defaults: 5 seeds x 50k steps, stable-baselines3's SAC defaults (lr 3e-4, batch 256,
    256-256), no POMDP variant.
    """

    env_id: str = "MountainCarContinuous-v0"
    seeds: int = 5
    steps: int = 50_000
    lr: float = 3e-4
    pomdp: bool = False
    eval_every: int = 5000
    eval_episodes: int = 5
    claim_steps: int = 20_000

    @classmethod
    def quick(cls) -> Config:
        """A smoke run: 2 seeds x 1,000 steps, 64 units, batch 64, one final
        evaluation (about 25 s of CPU).

        The goal is not reached in 1,000 steps by either: the claim is full preset only.
        """
        return cls(
            seeds=2,
            steps=1000,
            hidden=64,
            batch_size=64,
            eval_every=1000,
            eval_episodes=2,
            checkpoint_every=500,
        )

    @classmethod
    def full(cls) -> Config:
        """5 seeds x 50k steps, 256 units: 500k updates, about 1.8 h of CPU (11-14 ms per
        step, measured: 83 min wall with ``jobs=2`` on 2 cores, partly shared).
        ``benchmarks/device_smac_full.sh`` runs it on the 16-core GPU machine with ``jobs=10``."""
        return cls()


class SMACMountainCar(SMACPendulum, config=Config):
    """SMAC vs SAC exploration on MountainCarContinuous-v0 (arXiv:2210.00999)."""

    NAME = NAME

    def evaluate(self, models: dict) -> None:
        self._evaluate_returns()
        m, seeds = self.metrics, self.cfg.seeds
        for algo in ("sac", "smac"):
            reached = [m[f"{algo}_seed{k}/final_return"] > GOAL_RETURN for k in range(seeds)]
            m[f"{algo}/goal_fraction"] = sum(reached) / seeds

    def claims(self) -> list[Claim]:
        cfg, m = self.cfg, self.metrics
        sac, smac = m["sac/goal_fraction"], m["smac/goal_fraction"]
        return self.full_only(
            [
                Claim(
                    id="smac-explores-mountaincar",
                    statement="SMAC explores better than SAC: on MountainCarContinuous-v0 with "
                    "default hyper-parameters more seeds reach the goal.",
                    measured=f"SMAC {smac:.2f} vs SAC {sac:.2f} of {cfg.seeds} seeds "
                    f"(mean returns {m['smac/return_mean']:.4g} vs {m['sac/return_mean']:.4g})",
                    threshold=f"fraction of seeds with return > {GOAL_RETURN:.0f}: SMAC > SAC",
                    holds=bool(smac > sac),
                    note=f"{cfg.seeds} seeds x {cfg.steps} steps, {cfg.hidden} units, K = "
                    f"{cfg.n_particles}; deterministic evaluation, {cfg.eval_episodes} episodes.",
                )
            ]
        )


EXPERIMENT = SMACMountainCar
