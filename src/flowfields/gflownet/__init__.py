"""GFlowNets and the unification of generative models (Zhang, Chen, Malkin, Bengio,
"Unifying Generative Models with GFlowNets and Beyond", arXiv:2209.02606).

- environments on DAGs: :class:`DAGEnv`, :class:`HyperGrid`, :class:`BitSequences` (a tree:
  autoregressive models), :class:`LayeredDAG` (a discrete hierarchical VAE);
- policies: :class:`MLPPolicy`, :class:`TabularPolicy` (``P_F``, ``P_B``, ``F``, ``log Z``);
- trajectories: :func:`sample_forward` (tempered / epsilon exploration, untempered
  log-probabilities), :func:`sample_backward` (data mode), :func:`evaluate`;
- objectives through one residual: :func:`tb_loss`, :func:`db_loss`, :func:`subtb_loss`,
  :func:`zvar_loss`, and :func:`fm_loss`; :func:`gfn_loss` by name;
- continuous: :class:`DiffusionGFlowNet` (Gaussian steps, fixed Brownian-bridge ``P_B``);
- data mode: :func:`data_bounds` (ELBO, importance-weighted bound, TBC), :func:`mle_gfn_loss`;
- exact answers on enumerable DAGs: :func:`exact_terminal_distribution`, :func:`optimal_policy`,
  :func:`all_trajectories`, :func:`target_distribution`, :func:`l1_error`,
  :func:`posterior_log_pb` (the exact posterior ``P_F(tau | x)`` as a backward policy),
  :func:`exact_data_bounds`.
"""

from flowfields.gflownet.data_mode import DataBounds, data_bounds, log_weights, mle_gfn_loss
from flowfields.gflownet.diffusion import DiffusionGFlowNet
from flowfields.gflownet.env import DAGEnv
from flowfields.gflownet.exact import (
    DAGTable,
    all_trajectories,
    dag_table,
    exact_data_bounds,
    exact_terminal_distribution,
    l1_error,
    optimal_policy,
    posterior_log_pb,
    target_distribution,
    terminal_distribution_from_log_pf,
)
from flowfields.gflownet.hypergrid import HyperGrid
from flowfields.gflownet.losses import (
    LOSSES,
    balance_residual,
    cumulative,
    db_loss,
    fm_loss,
    gfn_loss,
    subtb_loss,
    tb_loss,
    zvar_loss,
)
from flowfields.gflownet.policy import MLPPolicy, Policy, TabularPolicy, masked_log_softmax
from flowfields.gflownet.sequences import BitSequences, LayeredDAG
from flowfields.gflownet.trajectories import (
    Trajectories,
    TrajectoryTerms,
    evaluate,
    sample_backward,
    sample_forward,
)

__all__ = [
    "LOSSES",
    "BitSequences",
    "DAGEnv",
    "DAGTable",
    "DataBounds",
    "DiffusionGFlowNet",
    "HyperGrid",
    "LayeredDAG",
    "MLPPolicy",
    "Policy",
    "TabularPolicy",
    "Trajectories",
    "TrajectoryTerms",
    "all_trajectories",
    "balance_residual",
    "cumulative",
    "dag_table",
    "data_bounds",
    "db_loss",
    "evaluate",
    "exact_data_bounds",
    "exact_terminal_distribution",
    "fm_loss",
    "gfn_loss",
    "l1_error",
    "log_weights",
    "masked_log_softmax",
    "mle_gfn_loss",
    "optimal_policy",
    "posterior_log_pb",
    "sample_backward",
    "sample_forward",
    "subtb_loss",
    "target_distribution",
    "tb_loss",
    "terminal_distribution_from_log_pf",
    "zvar_loss",
]
