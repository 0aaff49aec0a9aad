"""SMAC's entropy estimate against closed forms; critic aggregation order."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.rl import aggregate, joint_entropy_estimate, marginal_entropy_estimate
from flowfields.rl.policies import gaussian_log_prob


def _gaussian_latent_case(n: int, K: int, sd_s: float, sd_a: float, seed: int = 0):
    """s ~ N(0, sd_s^2), a | s ~ N(s, sd_a^2): a ~ N(0, sd_s^2 + sd_a^2) in closed form."""
    g = torch.Generator().manual_seed(seed)
    s = sd_s * torch.randn(K + 1, n, 1, generator=g, dtype=torch.float64)
    a = s[0] + sd_a * torch.randn(n, 1, generator=g, dtype=torch.float64)
    log_sd = torch.full_like(s, math.log(sd_a))
    log_probs = gaussian_log_prob(a.expand_as(s), s, log_sd)  # (K+1, n)
    sd = math.sqrt(sd_s**2 + sd_a**2)
    exact_nll = -gaussian_log_prob(a, torch.zeros_like(a), torch.full_like(a, math.log(sd)))
    log_q = gaussian_log_prob(s[0], torch.zeros_like(a), torch.full_like(a, math.log(sd_s)))
    H = 0.5 * math.log(2 * math.pi * math.e * sd**2)
    return log_probs, exact_nll, log_probs[0], log_q, H


def test_estimate_is_a_lower_bound_non_decreasing_and_exact_in_the_limit() -> None:
    """Gaussian latent + Gaussian head: H = 0.5 log(2 pi e (sd_s^2 + sd_a^2)).

    Common random numbers (the K-particle estimate uses the first K of 1024 draws): each mean is
    <= H + 3 s.e.; consecutive means do not decrease by more than 3 s.e. of their difference;
    at K = 1024 the estimate is within 0.01 nats of -log p(a) on the same actions, whose mean is
    within 4 s.e. of H.
    """
    n, K_max = 4000, 1024
    log_probs, exact_nll, _, _, H = _gaussian_latent_case(n, K_max, sd_s=1.0, sd_a=0.3)
    prev = None
    for K in (0, 1, 4, 16, 64, 256):
        est = marginal_entropy_estimate(log_probs[: K + 1])
        assert est.shape == (n,)
        se = float(est.std()) / math.sqrt(n)
        assert float(est.mean()) <= H + 3 * se, (K, float(est.mean()), H)
        if prev is not None:
            diff = est - prev
            assert float(diff.mean()) >= -3 * float(diff.std()) / math.sqrt(n), K
        prev = est
    est = marginal_entropy_estimate(log_probs)
    assert abs(float((est - exact_nll).mean())) < 0.01
    assert abs(float(exact_nll.mean()) - H) < 4 * float(exact_nll.std()) / math.sqrt(n)
    # K = 0 is far below: it is E[H(a|s)] = 0.5 log(2 pi e sd_a^2) in expectation
    h0 = 0.5 * math.log(2 * math.pi * math.e * 0.09)
    e0 = marginal_entropy_estimate(log_probs[:1])
    assert abs(float(e0.mean()) - h0) < 4 * float(e0.std()) / math.sqrt(n)


def test_naive_joint_estimate_is_above_the_entropy() -> None:
    """E[-log pi(a|s) - log q(s)] = H[a|s] + H[s] = H[a] + H[s|a]; here H[s|a] = 0.17 nats, about
    11 s.e. of the mean: asserted above H by 3 s.e."""
    n = 4000
    _, _, lp0, log_q, H = _gaussian_latent_case(n, 0, sd_s=1.0, sd_a=0.3, seed=1)
    naive = joint_entropy_estimate(lp0, log_q)
    se = float(naive.std()) / math.sqrt(n)
    expected = 0.5 * math.log(2 * math.pi * math.e * 0.09) + 0.5 * math.log(2 * math.pi * math.e)
    assert abs(float(naive.mean()) - expected) < 4 * se
    assert float(naive.mean()) > H + 3 * se


def test_equal_rows_give_minus_the_log_prob() -> None:
    lp = torch.randn(1, 7, dtype=torch.float64)
    for K in (0, 3, 100):
        est = marginal_entropy_estimate(lp.expand(K + 1, 7))
        torch.testing.assert_close(est, -lp[0], rtol=0, atol=1e-12)


def test_aggregation_order() -> None:
    g = torch.Generator().manual_seed(0)
    q = 10 * torch.randn(9, 5, 3, generator=g, dtype=torch.float64)
    lo, mid, soft = (aggregate(q, h) for h in ("min", "mean", "logmeanexp"))
    hi = q.max(dim=0).values
    assert lo.shape == (5, 3)
    assert bool((lo <= mid).all() and (mid <= soft).all() and (soft <= hi).all())
    assert bool((soft < hi).any() and (lo < mid).any())
    const = torch.full((4, 6), 2.5, dtype=torch.float64)
    for how in ("min", "mean", "logmeanexp"):
        torch.testing.assert_close(aggregate(const, how), const[0], rtol=0, atol=1e-12)


def test_bad_input() -> None:
    with pytest.raises(FlowfieldsError, match="log_probs"):
        marginal_entropy_estimate(torch.zeros(5))
    with pytest.raises(FlowfieldsError, match="log_probs"):
        marginal_entropy_estimate(torch.zeros(0, 5))
    with pytest.raises(FlowfieldsError, match="how"):
        aggregate(torch.zeros(3, 2), "max")
    with pytest.raises(FlowfieldsError, match="log_q_s"):
        joint_entropy_estimate(torch.zeros(3), torch.zeros(4))
