"""The DAG environment every GFlowNet here samples on.

A GFlowNet (Bengio et al. 2021; Zhang, Chen, Malkin, Bengio, arXiv:2209.02606, sec. 2) builds
an object by a sequence of Markovian steps on a directed acyclic graph: from the initial state
``s0`` a forward action moves to a child, and the *exit* action (the last forward action,
index ``n_actions - 1``) ends the trajectory at the current state ``x``, which is then the
sampled object (``x -> s_f``). A backward action moves a state to one of its parents.

States are integer tensors of shape ``(B, state_dim)``. An environment supplies the masks of
allowed forward / backward actions, the transitions both ways, the terminal log-reward, the
network features and, when the DAG is small, an enumeration of its states in an order
compatible with the DAG (``levels``: every child has a larger level than its parent), which
:mod:`flowfields.gflownet.exact` uses for dynamic programming.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check, check_shape

__all__ = ["DAGEnv"]


class DAGEnv(ABC):
    """Abstract DAG environment.

    Attributes:
        state_dim: size of one state's integer vector.
        n_actions: forward actions, the exit action last.
        n_back_actions: backward actions.
        max_length: most actions in one trajectory, the exit included.
        feature_dim: size of :meth:`features`.
    """

    state_dim: int
    n_actions: int
    n_back_actions: int
    max_length: int
    feature_dim: int

    @property
    def exit_action(self) -> int:
        """Index of the exit (terminate) action: ``n_actions - 1``."""
        return self.n_actions - 1

    # ---------------------------------------------------------------- supplied by subclasses
    @abstractmethod
    def initial(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        """``batch`` copies of ``s0``, shape ``(batch, state_dim)``, long."""

    @abstractmethod
    def is_initial(self, states: Tensor) -> Tensor:
        """Which states are ``s0``: ``(B,)`` bool."""

    @abstractmethod
    def forward_mask(self, states: Tensor) -> Tensor:
        """Allowed forward actions, ``(B, n_actions)`` bool (the last column: exit)."""

    @abstractmethod
    def backward_mask(self, states: Tensor) -> Tensor:
        """Allowed backward actions, ``(B, n_back_actions)`` bool (all False at ``s0``)."""

    @abstractmethod
    def _step(self, states: Tensor, actions: Tensor) -> Tensor:
        """Children of ``states`` by non-exit ``actions`` (assumed allowed)."""

    @abstractmethod
    def _backward_step(self, states: Tensor, back_actions: Tensor) -> tuple[Tensor, Tensor]:
        """Parents by ``back_actions`` (assumed allowed) and the forward actions leading back."""

    @abstractmethod
    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        """The backward action undoing the forward non-exit ``actions`` taken at ``states``."""

    @abstractmethod
    def _log_reward(self, x: Tensor) -> Tensor:
        """``log R(x)`` for terminal states, ``(B,)`` float."""

    @abstractmethod
    def features(self, states: Tensor) -> Tensor:
        """Network input, ``(B, feature_dim)`` float32."""

    @abstractmethod
    def all_states(self) -> tuple[Tensor, Tensor]:
        """Every state ``(N, state_dim)`` (``s0`` first) and its level ``(N,)``, by level."""

    @abstractmethod
    def index(self, states: Tensor) -> Tensor:
        """Row of each state in :meth:`all_states`, ``(B,)`` long."""

    # ---------------------------------------------------------------- checked public versions
    def _check_states(self, states: Tensor, name: str = "states") -> None:
        check_shape(states, name, ndim=2, last=self.state_dim)
        check(not states.is_floating_point(), name, states, "an integer tensor of states")

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        """Children of ``states`` by forward ``actions`` (exit excluded), each checked
        against :meth:`forward_mask`.

        Shapes: states ``(B, state_dim)``, actions ``(B,)`` -> ``(B, state_dim)``.

        Raises:
            FlowfieldsError: an action outside the mask, or the exit action (no child).
        """
        self._check_states(states)
        check_shape(actions, "actions", ndim=1)
        check(actions.shape[0] == states.shape[0], "actions", actions, "one action per state")
        self._check_allowed(states, self.forward_mask(states), actions, "actions", self.exit_action)
        return self._step(states, actions)

    def backward_step(self, states: Tensor, back_actions: Tensor) -> tuple[Tensor, Tensor]:
        """Parents of ``states`` by ``back_actions`` (checked against :meth:`backward_mask`)
        and the forward actions that lead from each parent back to the state.

        Raises:
            FlowfieldsError: a backward action outside the mask (e.g. any at ``s0``).
        """
        self._check_states(states)
        check_shape(back_actions, "back_actions", ndim=1)
        check(
            back_actions.shape[0] == states.shape[0],
            "back_actions",
            back_actions,
            "one action per state",
        )
        self._check_allowed(states, self.backward_mask(states), back_actions, "back_actions", None)
        return self._backward_step(states, back_actions)

    def log_reward(self, x: Tensor) -> Tensor:
        """``log R(x)`` of terminal states ``x`` (states where exit is allowed), ``(B,)``.

        Raises:
            FlowfieldsError: a state that is not terminal.
        """
        self._check_states(x, "x")
        terminal = self.forward_mask(x)[:, self.exit_action]
        if not bool(terminal.all()):
            bad = x[~terminal][0].tolist()
            raise FlowfieldsError(
                f"x: got the non-terminal state {bad}, expected terminal states (exit allowed)."
            )
        return self._log_reward(x)

    def _check_allowed(
        self, states: Tensor, mask: Tensor, actions: Tensor, name: str, forbid: int | None
    ) -> None:
        n = mask.shape[1]
        inside = (actions >= 0) & (actions < n)
        check(bool(inside.all()), name, actions, f"action indices in [0, {n})")
        ok = mask.gather(1, actions[:, None].long())[:, 0]
        if forbid is not None:
            ok = ok & (actions != forbid)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            allowed = [a for a in mask[i].nonzero()[:, 0].tolist() if a != forbid]
            raise FlowfieldsError(
                f"{name}: got action {int(actions[i])} at state {states[i].tolist()} (row {i}), "
                f"expected one allowed by the mask there: {allowed}."
            )
