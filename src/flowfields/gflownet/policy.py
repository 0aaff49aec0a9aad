"""Policies: forward ``P_F``, backward ``P_B``, state flows ``F`` and total flow ``Z``.

A policy maps states to unnormalised forward logits, backward logits (or a uniform ``P_B``)
and log state flows, and holds ``log Z``; the masks of the environment turn logits into
log-probabilities (:meth:`Policy.log_pf`, :meth:`Policy.log_pb`). For flow matching the
forward logits are read as log *edge* flows ``log F(s -> s')`` (their softmax is the policy
those flows induce). Zhang et al., arXiv:2209.02606, sec. 2.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.gflownet.env import DAGEnv
from flowfields.nn import mlp

__all__ = ["MLPPolicy", "Policy", "TabularPolicy", "masked_log_softmax"]


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """``log_softmax`` over the allowed entries; ``-inf`` elsewhere. Shapes ``(B, A)``."""
    return logits.masked_fill(~mask, float("-inf")).log_softmax(-1)


class Policy(nn.Module, ABC):
    """Abstract base: subclasses supply :meth:`pf_logits`, :meth:`pb_logits` and :meth:`log_flow`.

    Args:
        env: the environment.
        learn_pb: a learned backward policy; ``False``: uniform over the allowed parents.
        log_z: initial ``log Z`` (a parameter; give it its own learning rate, see
            :meth:`param_groups`).
    """

    def __init__(self, env: DAGEnv, *, learn_pb: bool = True, log_z: float = 0.0) -> None:
        super().__init__()
        check(isinstance(env, DAGEnv), "env", env, "a DAGEnv")
        self.env = env
        self.learn_pb = bool(learn_pb)
        self.log_z = nn.Parameter(torch.tensor(float(log_z)))

    @abstractmethod
    def pf_logits(self, states: Tensor) -> Tensor:
        """Unnormalised forward logits (log edge flows), ``(B, n_actions)``."""

    @abstractmethod
    def pb_logits(self, states: Tensor) -> Tensor:
        """Unnormalised backward logits, ``(B, n_back_actions)`` (zeros if ``P_B`` is uniform)."""

    @abstractmethod
    def log_flow(self, states: Tensor) -> Tensor:
        """``log F(s)``, ``(B,)``."""

    def log_pf(self, states: Tensor) -> Tensor:
        """``log P_F(. | s)`` over forward actions, ``-inf`` where masked, ``(B, n_actions)``."""
        return masked_log_softmax(self.pf_logits(states), self.env.forward_mask(states))

    def log_pb(self, states: Tensor) -> Tensor:
        """``log P_B(. | s)`` over backward actions (states other than ``s0``)."""
        mask = self.env.backward_mask(states)
        if not self.learn_pb:
            zeros = torch.zeros(mask.shape, dtype=self.log_z.dtype, device=states.device)
            return masked_log_softmax(zeros, mask)
        return masked_log_softmax(self.pb_logits(states), mask)

    def param_groups(self, lr: float, lr_log_z: float) -> list[dict]:
        """Adam parameter groups: ``log Z`` at ``lr_log_z``, everything else at ``lr``."""
        rest = [p for n, p in self.named_parameters() if n != "log_z"]
        return [{"params": rest, "lr": lr}, {"params": [self.log_z], "lr": lr_log_z}]


def _mlp(n_in: int, n_out: int | None, hidden: int, depth: int, activation: str) -> nn.Sequential:
    """:func:`flowfields.nn.mlp`, or the same layout with ReLU (torchgfn's default; the shared
    builder offers smooth activations only, which CNFs need and GFlowNets do not)."""
    if activation != "relu":
        return mlp(n_in, n_out, hidden, depth, activation)
    net = mlp(n_in, n_out, hidden, depth, "tanh")
    return nn.Sequential(*[nn.ReLU() if isinstance(m, nn.Tanh) else m for m in net])


class MLPPolicy(Policy):
    """MLPs on the environment's features: ``P_F`` logits, ``P_B`` logits, ``log F``.

    Args:
        env: the environment.
        hidden, depth, activation: each network is ``flowfields.nn.mlp(feature_dim, out,
            hidden, depth, activation)`` (torchgfn's HyperGrid default: 256, 2, relu).
        learn_pb: learn ``P_B`` (else uniform).
        flow: build the state-flow network (needed by DB and SubTB).
        shared_trunk: one trunk for the three heads instead of three networks.
        log_z: initial ``log Z``.
    """

    def __init__(
        self,
        env: DAGEnv,
        hidden: int = 256,
        depth: int = 2,
        *,
        activation: str = "relu",
        learn_pb: bool = True,
        flow: bool = False,
        shared_trunk: bool = False,
        log_z: float = 0.0,
    ) -> None:
        super().__init__(env, learn_pb=learn_pb, log_z=log_z)
        n_in, outs = env.feature_dim, {"pf": env.n_actions}
        if learn_pb:
            outs["pb"] = env.n_back_actions
        if flow:
            outs["flow"] = 1
        self.shared_trunk = bool(shared_trunk)
        if self.shared_trunk:
            self.trunk = _mlp(n_in, None, hidden, depth, activation)
            self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in outs.items()})
        else:
            self.heads = nn.ModuleDict(
                {k: _mlp(n_in, n, hidden, depth, activation) for k, n in outs.items()}
            )

    def _head(self, name: str, states: Tensor) -> Tensor:
        check(name in self.heads, "policy", self, f"a policy built with a {name!r} head")
        h = self.env.features(states).to(self.log_z)  # the policy's device and dtype
        if self.shared_trunk:
            h = self.trunk(h)
        return self.heads[name](h)

    def pf_logits(self, states: Tensor) -> Tensor:
        return self._head("pf", states)

    def pb_logits(self, states: Tensor) -> Tensor:
        return self._head("pb", states)

    def log_flow(self, states: Tensor) -> Tensor:
        return self._head("flow", states)[:, 0]


class TabularPolicy(Policy):
    """One parameter per state and action (small DAGs): logits ``(N, A)``, ``(N, A_b)``, flows.

    Rows follow :meth:`DAGEnv.all_states`; :func:`~flowfields.gflownet.exact.optimal_policy`
    fills them with an exact solution.
    """

    def __init__(self, env: DAGEnv, *, learn_pb: bool = True, log_z: float = 0.0) -> None:
        super().__init__(env, learn_pb=learn_pb, log_z=log_z)
        n = env.all_states()[0].shape[0]
        self.pf_table = nn.Parameter(torch.zeros(n, env.n_actions, dtype=torch.float64))
        self.pb_table = nn.Parameter(torch.zeros(n, env.n_back_actions, dtype=torch.float64))
        self.flow_table = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.log_z.data = self.log_z.data.double()

    def pf_logits(self, states: Tensor) -> Tensor:
        return self.pf_table[self.env.index(states)]

    def pb_logits(self, states: Tensor) -> Tensor:
        return self.pb_table[self.env.index(states)]

    def log_flow(self, states: Tensor) -> Tensor:
        return self.flow_table[self.env.index(states)]
