"""The Ornstein–Uhlenbeck weight prior ``dw = -theta w dt + sigma dB``."""

from __future__ import annotations

import math

from torch import Tensor, nn

from flowfields.errors import check

__all__ = ["OUPrior"]


def _positive(value: float, name: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    check(ok and math.isfinite(value) and value > 0, name, value, "a finite float > 0")
    return float(value)


class OUPrior(nn.Module):
    """Ornstein–Uhlenbeck prior over the weight path: ``dw = -theta w dt + sigma dB``.

    The prior of Xu, Chen, Li, Duvenaud, "Infinitely Deep Bayesian Neural Networks with
    Stochastic Differential Equations" (arXiv:2102.06559), with ``theta = 1`` in the paper:
    it starts from the learned initial weights ``w_0`` (held by the model, not here) and
    shrinks them towards 0 over depth while diffusing with the same ``sigma`` the posterior
    uses (the KL between two SDEs with different diffusions is infinite). Its marginal at
    depth ``t`` is Gaussian with mean ``w_0 e^{-theta t}`` and variance
    ``sigma^2 (1 - e^{-2 theta t}) / (2 theta)``; those closed forms belong to
    ``flowfields.integrate`` and are only used by the tests here.

    Args:
        sigma: diffusion coefficient, > 0 (shared with the posterior).
        theta: mean-reversion rate, > 0.

    Shapes:
        drift(t, w): w (S, P) -> (S, P).

    Raises:
        FlowfieldsError: non-positive or non-finite ``sigma`` or ``theta``.

    Example:
        >>> import torch
        >>> prior = OUPrior(sigma=0.5)
        >>> prior.drift(0.0, torch.ones(2, 3)).tolist()[0]
        [-1.0, -1.0, -1.0]
    """

    def __init__(self, sigma: float, theta: float = 1.0) -> None:
        super().__init__()
        self.sigma = _positive(sigma, "sigma")
        self.theta = _positive(theta, "theta")

    def drift(self, t: Tensor | float, w: Tensor) -> Tensor:
        """Prior drift ``-theta w``, shape like ``w``."""
        return -self.theta * w

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, theta={self.theta}"
