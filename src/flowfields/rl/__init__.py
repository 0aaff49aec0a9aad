"""Maximum-entropy RL: soft actor-critic and Stochastic Marginal Actor-Critic.

Zhang, Courville, Bengio, Zheng, Zhang, Chen, "Latent State Marginalization as a Low-cost
Approach for Improving Exploration" (ICLR 2023, arXiv:2210.00999), on SAC (Haarnoja et al.,
arXiv:1812.05905). Needs the ``rl`` extra (gymnasium with MuJoCo) for environments.

Main entry points: :func:`build_run` (agent + environment + replay buffer in one
:class:`~flowfields.engine.TrainState`, trained by :func:`flowfields.engine.fit`), the agents
:class:`SAC` / :class:`SMAC`, the policies :class:`TanhGaussianPolicy` / :class:`LatentPolicy`,
and the estimator :func:`marginal_entropy_estimate`.
"""

from flowfields.rl.action_density import ActionDensity
from flowfields.rl.agents import SAC, SMAC, AgentConfig, LogAlpha
from flowfields.rl.belief import BeliefFilter, recurrent_trunk
from flowfields.rl.buffer import Batch, ReplayBuffer
from flowfields.rl.critics import TwinCritic, marginal_q, polyak_update
from flowfields.rl.entropy import (
    AGGREGATIONS,
    aggregate,
    joint_entropy_estimate,
    marginal_entropy_estimate,
)
from flowfields.rl.envs import VELOCITY_FREE, EnvCollector, evaluate_policy, make_env
from flowfields.rl.policies import (
    LOG_STD_RANGE,
    LatentPolicy,
    PolicySample,
    TanhGaussianPolicy,
    gaussian_log_prob,
    tanh_gaussian_log_prob,
    tanh_log_det,
)
from flowfields.rl.train import ALGORITHMS, RLRun, build_run, make_step_fn

__all__ = [
    "AGGREGATIONS",
    "ALGORITHMS",
    "LOG_STD_RANGE",
    "SAC",
    "SMAC",
    "VELOCITY_FREE",
    "ActionDensity",
    "AgentConfig",
    "Batch",
    "BeliefFilter",
    "EnvCollector",
    "LatentPolicy",
    "LogAlpha",
    "PolicySample",
    "RLRun",
    "ReplayBuffer",
    "TanhGaussianPolicy",
    "TwinCritic",
    "aggregate",
    "build_run",
    "evaluate_policy",
    "gaussian_log_prob",
    "joint_entropy_estimate",
    "make_env",
    "make_step_fn",
    "marginal_entropy_estimate",
    "marginal_q",
    "polyak_update",
    "recurrent_trunk",
    "tanh_gaussian_log_prob",
    "tanh_log_det",
]
