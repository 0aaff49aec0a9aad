"""Measurements of the SMAC experiments that need no environment: the entropy estimator on a
latent Gaussian-mixture policy with its entropy by quadrature, and the cost of an update.

Zhang et al., "Latent State Marginalization as a Low-cost Approach for Improving Exploration"
(arXiv:2210.00999).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Any

import torch
from torch import Tensor

from flowfields.integrate import gauss_legendre

__all__ = ["MIXTURE", "estimator_check", "mixture_entropy", "update_cost"]

#: The 1-D latent policy: s ~ N(0, 1), a | s ~ N(SCALE tanh(SHARP s), SD^2): two modes at +-1.5.
MIXTURE = {"scale": 1.5, "sharp": 3.0, "sd": 0.3}


def _mean(s: Tensor) -> Tensor:
    return MIXTURE["scale"] * torch.tanh(MIXTURE["sharp"] * s)


def _log_normal(x: Tensor, mu: Tensor, sd: float) -> Tensor:
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def mixture_entropy(nodes: int = 400) -> float:
    """``H[a] = -∫ p log p`` of :data:`MIXTURE` by Gauss-Legendre quadrature (float64):
    ``p(a) = ∫ N(a; mu(s), sd^2) N(s; 0, 1) ds`` on ``s in [-9, 9]``, ``a in [-4, 4]``."""
    s, ws = gauss_legendre(nodes, -9.0, 9.0)
    a, wa = gauss_legendre(nodes, -4.0, 4.0)
    log_phi = _log_normal(s, torch.zeros_like(s), 1.0)
    log_p = torch.logsumexp(
        _log_normal(a[:, None], _mean(s)[None], MIXTURE["sd"]) + log_phi + ws.log(), dim=1
    )
    return float(-(wa * log_p.exp() * log_p).sum())


def estimator_check(n: int, ks: tuple[int, ...], seed: int, chunk: int = 2000) -> dict[str, Any]:
    """Mean and s.e. of ``H_K`` for each ``K`` (common random numbers: the K-particle estimate
    uses the first K extra latents of ``max(ks)``), and of the naive joint estimate.

    Returns:
        ``{"H": exact, "K": {K: (mean, se)}, "naive": (mean, se), "diff": {K: (mean, se)}}``
        with ``diff[K]`` the estimate at K minus the one at the previous K.
    """
    from flowfields.rl import joint_entropy_estimate, marginal_entropy_estimate

    g = torch.Generator().manual_seed(seed)
    k_max, sd = max(ks), MIXTURE["sd"]
    per_k: dict[int, list[Tensor]] = {k: [] for k in ks}
    naive: list[Tensor] = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        s = torch.randn(k_max + 1, m, generator=g, dtype=torch.float64)
        a = _mean(s[0]) + sd * torch.randn(m, generator=g, dtype=torch.float64)
        log_probs = _log_normal(a[None], _mean(s), sd)  # (K+1, m)
        for k in ks:
            per_k[k].append(marginal_entropy_estimate(log_probs[: k + 1]))
        log_q = _log_normal(s[0], torch.zeros_like(a), 1.0)
        naive.append(joint_entropy_estimate(log_probs[0], log_q))

    def stats(x: Tensor) -> tuple[float, float]:
        return float(x.mean()), float(x.std()) / math.sqrt(x.numel())

    est = {k: torch.cat(v) for k, v in per_k.items()}
    ordered = sorted(ks)
    diffs = {k: stats(est[k] - est[j]) for j, k in itertools.pairwise(ordered)}
    return {
        "H": mixture_entropy(),
        "K": {k: stats(est[k]) for k in ks},
        "naive": stats(torch.cat(naive)),
        "diff": diffs,
    }


def update_cost(
    ks: tuple[int, ...],
    hidden: int,
    batch_size: int,
    repeats: int,
    seed: int = 0,
    filter_window: int = 0,
    filter_aux: float = 0.0,
) -> dict[str, float]:
    """CPU process seconds per full update (temperature, critic, actor, target) of SAC and of
    SMAC at each K, on Pendulum-sized inputs, interleaved over ``repeats`` rounds (median).

    With ``filter_window = L > 0`` both agents read windows of L steps of velocity-free
    Pendulum (4 numbers a step) through the recurrent filter; ``filter_aux > 0`` adds the
    filter's next-observation prediction loss to both.

    Returns:
        ``{"sac": s, "smac_K8": s, ...}``.
    """
    from flowfields.rl import SAC, SMAC, AgentConfig, Batch

    torch.manual_seed(seed)
    obs_dim = 4 * filter_window if filter_window else 3
    cfg = AgentConfig(hidden=hidden, filter_window=filter_window, filter_aux=filter_aux)
    agents: dict[str, Any] = {"sac": SAC(obs_dim, 1, cfg)}
    for k in ks:
        agents[f"smac_K{k}"] = SMAC(obs_dim, 1, dataclasses.replace(cfg, n_particles=k))
    states = {name: ag.train_state() for name, ag in agents.items()}
    batch = Batch(
        obs=torch.randn(batch_size, obs_dim),
        action=torch.rand(batch_size, 1) * 2 - 1,
        reward=torch.randn(batch_size),
        next_obs=torch.randn(batch_size, obs_dim),
        terminated=torch.zeros(batch_size),
    )
    if filter_window:  # every step of every window valid
        for x in (batch.obs, batch.next_obs):
            x.view(batch_size, filter_window, 4)[..., -1] = 1.0
    times: dict[str, list[float]] = {name: [] for name in agents}
    for name, ag in agents.items():  # warm-up
        ag.update(states[name], batch)
    for r in range(repeats):
        order = list(agents) if r % 2 == 0 else list(reversed(agents))
        for name in order:
            t0 = time.process_time()
            for _ in range(5):
                agents[name].update(states[name], batch)
            times[name].append((time.process_time() - t0) / 5)
    return {name: sorted(v)[len(v) // 2] for name, v in times.items()}
