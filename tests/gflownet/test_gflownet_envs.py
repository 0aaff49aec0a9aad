"""Environments: exact log partitions, masks, transitions, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.gflownet import BitSequences, HyperGrid, LayeredDAG, Policy, dag_table


def _envs():
    return [
        HyperGrid(2, 4),
        HyperGrid(3, 3, r0=0.01),
        BitSequences(3, torch.randn(8, generator=torch.Generator().manual_seed(0))),
        LayeredDAG((2, 3, 4), torch.randn(4, generator=torch.Generator().manual_seed(1))),
    ]


@pytest.mark.parametrize(
    "ndim,height,r0",
    [(1, 5, 0.1), (2, 8, 0.1), (2, 8, 1e-3), (3, 6, 0.5), (4, 8, 0.1), (2, 11, 2.0)],
)
def test_hypergrid_log_partition_matches_enumeration(ndim, height, r0) -> None:
    env = HyperGrid(ndim, height, r0=r0)
    grid = torch.tensor(list(itertools.product(range(height), repeat=ndim)))
    brute = 0.0
    for x in grid.tolist():  # the reward written out, coordinate by coordinate
        a = [abs(c / (height - 1) - 0.5) for c in x]
        brute += r0 + 0.5 * all(0.25 < v <= 0.5 for v in a) + 2.0 * all(0.3 < v < 0.4 for v in a)
    assert env.log_partition() == pytest.approx(math.log(brute), abs=1e-12)
    assert float(env.reward(grid).sum()) == pytest.approx(brute, rel=1e-12)


def test_hypergrid_2d_h8_partition_value() -> None:
    # 64 * 0.1 + 16 * 0.5 + 4 * 2 (outer band j in {0,1,6,7}, ring j in {1,6})
    assert math.exp(HyperGrid(2, 8).log_partition()) == pytest.approx(22.4, abs=1e-12)


@pytest.mark.parametrize(
    "env",
    _envs(),
    ids=lambda e: type(e).__name__ + str(getattr(e, "n_states", "")),  # stable across xdist workers
)
def test_index_is_the_row_of_all_states(env) -> None:
    states, levels = env.all_states()
    assert torch.equal(env.index(states), torch.arange(states.shape[0]))
    assert bool(env.is_initial(states[:1]).all()) and not bool(env.is_initial(states[1:]).any())
    assert bool((levels[1:] >= levels[:-1]).all())


@pytest.mark.parametrize(
    "env",
    _envs(),
    ids=lambda e: type(e).__name__ + str(getattr(e, "n_states", "")),  # stable across xdist workers
)
def test_masks_allow_only_valid_moves(env) -> None:
    """Every allowed forward move lands on a state of the DAG, one level up, whose allowed
    backward action leads back; every allowed backward move is undone by a forward one."""
    table = dag_table(env)
    states, levels = table.states, table.levels
    n = states.shape[0]
    for a in range(env.n_actions - 1):
        rows = table.forward_mask[:, a].nonzero()[:, 0]
        acts = torch.full((rows.numel(),), a)
        children = env.step(states[rows], acts)
        c = env.index(children)
        assert bool(((c >= 0) & (c < n)).all()) and torch.equal(states[c], children)
        assert bool((levels[c] > levels[rows]).all())
        back = env.backward_action(states[rows], acts)
        assert bool(env.backward_mask(children).gather(1, back[:, None]).all())
        parents, fwd = env.backward_step(children, back)
        assert torch.equal(parents, states[rows]) and torch.equal(fwd, acts)
    bmask = env.backward_mask(states)
    assert not bool(bmask[0].any())  # s0 has no parent
    assert bool(bmask[1:].any(1).all())  # every other state has one
    k, b = bmask.nonzero(as_tuple=True)
    parents, fwd = env.backward_step(states[k], b)
    assert torch.equal(env.step(parents, fwd), states[k])


def test_bad_input_raises() -> None:
    with pytest.raises(FlowfieldsError, match="height"):
        HyperGrid(2, -3)
    with pytest.raises(FlowfieldsError, match="r0"):
        HyperGrid(2, 8, r0=0.0)  # R = 0 somewhere: log R undefined
    with pytest.raises(FlowfieldsError, match="r1"):
        HyperGrid(2, 8, r1=-1.0)
    with pytest.raises(FlowfieldsError, match="ndim"):
        HyperGrid(0, 8)
    env = HyperGrid(2, 4)
    with pytest.raises(FlowfieldsError, match="actions"):
        env.step(torch.tensor([[3, 0]]), torch.tensor([0]))  # coordinate 0 already at H - 1
    with pytest.raises(FlowfieldsError, match="actions"):
        env.step(torch.tensor([[0, 0]]), torch.tensor([2]))  # the exit has no child
    with pytest.raises(FlowfieldsError, match="actions"):
        env.step(torch.tensor([[0, 0]]), torch.tensor([7]))
    with pytest.raises(FlowfieldsError, match="back_actions"):
        env.backward_step(torch.tensor([[0, 2]]), torch.tensor([0]))
    with pytest.raises(FlowfieldsError, match="states"):
        env.step(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    bits = BitSequences(3, torch.zeros(8))
    with pytest.raises(FlowfieldsError, match="non-terminal"):
        bits.log_reward(torch.tensor([[1, 0, -1]]))
    with pytest.raises(FlowfieldsError, match="log_rewards"):
        BitSequences(3, torch.zeros(7))
    with pytest.raises(FlowfieldsError, match="log_rewards"):
        LayeredDAG((2, 3), torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(FlowfieldsError, match="sizes"):
        LayeredDAG((2, 0), torch.zeros(1))


def test_policy_base_is_abstract() -> None:
    """``Policy`` declares ``pf_logits`` / ``pb_logits`` / ``log_flow`` abstract: neither it nor
    a subclass missing one of them can be built."""
    env = HyperGrid(2, 4)
    with pytest.raises(TypeError, match="abstract"):
        Policy(env)  # type: ignore[abstract]

    class NoFlow(Policy):
        def pf_logits(self, states: torch.Tensor) -> torch.Tensor:
            return torch.zeros(states.shape[0], self.env.n_actions)

        def pb_logits(self, states: torch.Tensor) -> torch.Tensor:
            return torch.zeros(states.shape[0], self.env.n_back_actions)

    with pytest.raises(TypeError, match="log_flow"):
        NoFlow(env)  # type: ignore[abstract]
