"""Data mode: ELBO gap = KL, the importance-weighted bound, TBC, the tree case, the sampler."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowfields.gflownet import (
    BitSequences,
    HyperGrid,
    LayeredDAG,
    TabularPolicy,
    all_trajectories,
    data_bounds,
    evaluate,
    exact_data_bounds,
    exact_terminal_distribution,
    mle_gfn_loss,
    posterior_log_pb,
    sample_backward,
)


def _random(env, seed: int) -> TabularPolicy:
    g = torch.Generator().manual_seed(seed)
    pol = TabularPolicy(env)
    for p in (pol.pf_table, pol.pb_table):
        p.data = 1.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)
    return pol


def _hvae() -> LayeredDAG:
    return LayeredDAG((3, 4, 5), torch.randn(5, generator=torch.Generator().manual_seed(0)))


def _exact_bounds(env, pol, x_row: int) -> tuple[float, float, float]:
    """(log P_T(x), ELBO(x), KL(P_B(tau|x) || P_F(tau|x))) by enumerating trajectories to x."""
    traj = all_trajectories(env, x_row)
    with torch.no_grad():
        terms = evaluate(pol, traj)
    log_pf, log_pb = terms.log_pf_total(), terms.log_pb_total()
    log_pt = float(torch.logsumexp(log_pf, 0))
    q = log_pb.exp()
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)  # P_B(. | x) is a distribution
    elbo = float((q * (log_pf - log_pb)).sum())
    kl = float((q * (log_pb - (log_pf - log_pt))).sum())
    return log_pt, elbo, kl


@pytest.mark.parametrize("env", [_hvae(), HyperGrid(2, 4)], ids=["hvae", "hypergrid"])
def test_elbo_gap_is_kl(env) -> None:
    pol = _random(env, 1)
    pt = exact_terminal_distribution(env, pol)
    rows = pt.nonzero()[:, 0].tolist()
    for row in rows[-6:]:  # states with several trajectories
        log_pt, elbo, kl = _exact_bounds(env, pol, row)
        assert log_pt == pytest.approx(math.log(float(pt[row])), abs=1e-9)  # DP == enumeration
        assert log_pt - elbo == pytest.approx(kl, abs=1e-6)
        assert kl > 1e-3  # a random encoder is not the posterior


def test_monte_carlo_elbo_and_iw_bound_increase_with_k() -> None:
    """Seeded: 20,000 draws per K; E[IW_K] increases with K toward log P_T(x) (4 SE)."""
    env = _hvae()
    pol = _random(env, 2)
    row = int(exact_terminal_distribution(env, pol).nonzero()[-1, 0])
    log_pt, elbo, _ = _exact_bounds(env, pol, row)
    x = env.all_states()[0][row : row + 1]
    g = torch.Generator().manual_seed(0)
    means = []
    for k in (1, 4, 16):
        n = 20_000 // k
        with torch.no_grad():
            b = data_bounds(env, pol, x.repeat(n, 1), k, generator=g)
        iw = b.iw_bound
        means.append((float(iw.mean()), float(iw.std()) / math.sqrt(n)))
        if k == 1:
            assert float(b.elbo.mean()) == pytest.approx(elbo, abs=4 * means[0][1])
    for (m1, s1), (m2, s2) in itertools.pairwise(means):
        assert m2 > m1 + 2 * math.hypot(s1, s2)
    assert means[-1][0] < log_pt + 4 * means[-1][1]
    assert log_pt - means[-1][0] < 0.5 * (log_pt - elbo)


def test_tree_case_elbo_is_log_likelihood_and_tbc_vanishes() -> None:
    env = BitSequences(4, torch.randn(16, generator=torch.Generator().manual_seed(0)))
    pol = _random(env, 3)  # P_B == 1 on a tree whatever the table says
    pt = exact_terminal_distribution(env, pol)
    rows = pt.nonzero()[:, 0]
    x = env.all_states()[0][rows]
    b = data_bounds(env, pol, x, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(b.elbo, pt[rows].log(), atol=1e-12)
    assert torch.allclose(b.iw_bound, pt[rows].log(), atol=1e-12)
    assert float(b.tbc.abs().max()) < 1e-20


def _posterior_pb(env: LayeredDAG, pol: TabularPolicy) -> TabularPolicy:
    """P_B(s | s') = p(s) P_F(s' | s) / p(s'): the true posterior of ``pol``'s P_F."""
    states, _ = env.all_states()
    with torch.no_grad():
        log_pf = pol.log_pf(states)
    n = states.shape[0]
    log_p = torch.full((n,), -math.inf, dtype=torch.float64)
    log_p[0] = 0.0
    out = TabularPolicy(env)
    out.pf_table.data = pol.pf_table.data.clone()
    table = torch.full((n, env.n_back_actions), -1e30, dtype=torch.float64)
    for layer in range(env.layers):
        rows = (states[:, 0] == layer).nonzero()[:, 0]
        for a in range(env.sizes[layer]):
            child = env.index(env._step(states[rows], torch.full((rows.numel(),), a)))
            joint = log_p[rows] + log_pf[rows, a]
            log_p[child[0]] = torch.logsumexp(joint, 0)
            back = env.backward_action(states[rows], torch.full((rows.numel(),), a))
            table[child[0], back] = joint - log_p[child[0]]
    out.pb_table.data = table
    return out


def test_tbc_zero_exactly_at_the_posterior() -> None:
    env = _hvae()
    pol = _random(env, 4)
    post = _posterior_pb(env, pol)
    pt = exact_terminal_distribution(env, pol)
    rows = pt.nonzero()[:, 0]
    x = env.all_states()[0][rows]
    g = torch.Generator().manual_seed(2)
    b = data_bounds(env, post, x, 6, generator=g)
    assert float(b.tbc.max()) < 1e-20
    assert torch.allclose(b.elbo, pt[rows].log(), atol=1e-10)
    b_rand = data_bounds(env, pol, x, 6, generator=g)
    assert float(b_rand.tbc.mean()) > 1e-2
    loss = mle_gfn_loss(b_rand, tbc_weight=1.0)
    loss.backward()
    assert pol.pb_table.grad is not None and float(pol.pb_table.grad.abs().sum()) > 0


def test_backward_sampler_frequencies_match_pb() -> None:
    """Seeded: 30,000 backward trajectories from one x; each path's frequency within 4.5 SE
    of P_B(tau | x), and every trajectory is a valid forward path from s0 to x."""
    env = HyperGrid(2, 3)
    pol = _random(env, 5)
    x = torch.tensor([[2, 1]])
    n = 30_000
    traj = sample_backward(env, pol, x.repeat(n, 1), generator=torch.Generator().manual_seed(0))
    assert bool(env.is_initial(traj.states[0]).all())
    assert bool((traj.x == x).all())
    for t in range(traj.actions.shape[0]):
        moving = (traj.actions[t] >= 0) & (traj.actions[t] != env.exit_action)
        nxt = env.step(traj.states[t][moving], traj.actions[t][moving])
        assert torch.equal(nxt, traj.states[t + 1][moving])
    assert bool((traj.actions[traj.lengths - 1, torch.arange(n)] == env.exit_action).all())
    paths = all_trajectories(env, int(env.index(x)))
    with torch.no_grad():
        q = evaluate(pol, paths).log_pb_total().exp()
    keys = {tuple(paths.actions[:, k].tolist()): k for k in range(paths.batch)}
    counts = torch.zeros(paths.batch, dtype=torch.float64)
    for col in traj.actions.T.tolist():
        counts[keys[tuple(col)]] += 1
    se = (q * (1 - q) / n).sqrt()
    assert float(((counts / n - q).abs() / se).max()) < 4.5


@pytest.mark.parametrize("env", [_hvae(), HyperGrid(2, 4)], ids=["hvae", "hypergrid"])
def test_posterior_log_pb_is_the_posterior(env) -> None:
    """Each row of ``posterior_log_pb`` is a distribution over the allowed parents, and along
    every enumerated trajectory its product is ``P_F(tau) / P_T(x)``; with it as ``P_B`` the
    ELBO is tight, the KL zero and TBC zero."""
    pol = _random(env, 6)
    post = posterior_log_pb(env, pol)
    states = env.all_states()[0]
    mask = env.backward_mask(states)
    assert bool(torch.isneginf(post[~mask]).all())
    inner = mask.any(1)
    assert torch.allclose(post[inner].logsumexp(1), torch.zeros(int(inner.sum()), dtype=post.dtype))
    exact = TabularPolicy(env)
    exact.pf_table.data = pol.pf_table.data.clone()
    exact.pb_table.data = post.clamp(min=-1e30)
    traj = all_trajectories(env)
    with torch.no_grad():
        terms, terms_post = evaluate(pol, traj), evaluate(exact, traj)
    pt = exact_terminal_distribution(env, pol)
    log_pt_x = pt.log()[env.index(traj.x)]
    expected = terms.log_pf_total() - log_pt_x
    assert torch.allclose(terms_post.log_pb_total(), expected, atol=1e-12)
    log_pt, elbo, kl = exact_data_bounds(env, exact, traj)
    rows = pt.nonzero()[:, 0]
    assert torch.allclose(elbo[rows], log_pt[rows], atol=1e-12)
    assert float(kl[rows].abs().max()) < 1e-12
    if isinstance(env, LayeredDAG):  # the layered case by a separate construction
        ref = _posterior_pb(env, pol).pb_table.data
        assert torch.allclose(post.clamp(min=-1e30)[inner], ref[inner], atol=1e-12)


def test_exact_data_bounds_pieces_are_independent() -> None:
    """``exact_data_bounds`` takes ``log P_T`` from the DP and the KL from the posterior chain:
    the identity ``log P_T - ELBO = KL`` fails if the enumeration misses trajectories (the
    enumerated ``P_F(tau)`` then no longer sums to the DP's ``P_T``)."""
    env = _hvae()
    pol = _random(env, 7)
    traj = all_trajectories(env)
    log_pt, elbo, kl = exact_data_bounds(env, pol, traj)
    rows = exact_terminal_distribution(env, pol).nonzero()[:, 0]
    assert float((log_pt - elbo - kl)[rows].abs().max()) < 1e-12
    x_row = int(rows[-1])
    keep = (env.index(traj.x) != x_row) | (torch.arange(traj.batch) % 2 == 0)
    cut = type(traj)(
        traj.states[:, keep],
        traj.actions[:, keep],
        traj.lengths[keep],
        traj.x[keep],
        traj.log_reward[keep],
    )
    log_pt2, elbo2, kl2 = exact_data_bounds(env, pol, cut)
    assert float((log_pt2 - elbo2 - kl2)[x_row].abs()) > 1e-3
