"""A tanh-Gaussian policy at one observation as a :class:`~flowfields.density.DensityModel`.

So that SAC's policy density (Haarnoja et al., arXiv:1801.01290, Appendix C) passes the
library's density contract: it integrates to 1 over ``(-1, 1)^d``, its samples agree with
``log_prob``, gradients reach every parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.density import check_points, check_sample_count
from flowfields.errors import check
from flowfields.rl.policies import TanhGaussianPolicy, tanh_gaussian_log_prob

__all__ = ["ActionDensity"]


class ActionDensity(nn.Module):
    """``pi(. | obs)`` of a :class:`~flowfields.rl.TanhGaussianPolicy` on ``(-1, 1)^act_dim``.

    Args:
        policy: the policy. obs: (obs_dim,) the observation (kept as a buffer).

    Shapes:
        ``sample(n)``: (n, act_dim); ``log_prob(a)``: (B, act_dim) -> (B,), ``-inf`` outside
        ``(-1, 1)^act_dim``.
    """

    def __init__(self, policy: TanhGaussianPolicy, obs: Tensor) -> None:
        super().__init__()
        check(isinstance(policy, TanhGaussianPolicy), "policy", policy, "a TanhGaussianPolicy")
        check(
            isinstance(obs, Tensor) and obs.shape == (policy.obs_dim,),
            "obs",
            obs,
            f"a tensor of shape ({policy.obs_dim},)",
        )
        self.policy = policy
        self.register_buffer("obs", obs.detach().clone().float())
        self.event_shape = (policy.act_dim,)

    def _params(self) -> tuple[Tensor, Tensor]:
        obs: Tensor = self.obs  # type: ignore[assignment]
        mu, log_std = self.policy(obs[None])
        return mu[0], log_std[0]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` actions ``tanh(mu + sigma eps)``."""
        check_sample_count(n)
        mu, log_std = self._params()
        eps = torch.randn(
            (n, *self.event_shape), generator=generator, dtype=mu.dtype, device=mu.device
        )
        return torch.tanh(mu + log_std.exp() * eps)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log pi(x | obs)`` by the change of variables ``u = atanh(x)``."""
        mu, log_std = self._params()
        check_points(x, self.event_shape, dtype=mu.dtype)
        inside = (x.abs() < 1).all(-1)
        u = torch.atanh(torch.where(inside[:, None], x, torch.zeros_like(x)))
        lp = tanh_gaussian_log_prob(u, mu.expand_as(u), log_std.expand_as(u))
        return torch.where(inside, lp, torch.full_like(lp, float("-inf")))
