"""Predictions from weight samples: the Bayesian model average and predictive intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_finite

__all__ = ["PredictiveInterval", "bayes_model_average", "predictive_interval"]


def _check_samples(x: object, argument: str, shape: str) -> None:
    """``x`` must be a real floating tensor (S, B, K) with S >= 1 and K >= 1, finite."""
    check(
        isinstance(x, Tensor)
        and x.ndim == 3
        and x.is_floating_point()
        and x.shape[0] >= 1
        and x.shape[-1] >= 1,
        argument,
        x,
        f"a real floating tensor {shape} with at least one sample and one output",
    )
    check_finite(x, argument)


def bayes_model_average(logits: Tensor) -> Tensor:
    """The Bayesian model average ``p(y | x) = (1/S) sum_s softmax(logits_s)``.

    Averages probabilities, not logits: the mean of softmaxes is the Monte Carlo estimate of
    the posterior predictive, and is less confident than the softmax of the mean logit.

    Args:
        logits: (S, B, C) logits of S weight samples.

    Returns:
        (B, C) class probabilities (rows sum to 1).

    Example:
        >>> logits = torch.tensor([[[10.0, 0.0]], [[0.0, 10.0]]])
        >>> bayes_model_average(logits).round(decimals=3).tolist()
        [[0.5, 0.5]]
    """
    _check_samples(logits, "logits", "(S, B, C)")
    return torch.softmax(logits, dim=-1).mean(0)


@dataclass
class PredictiveInterval:
    """Posterior predictive summary for regression, per data point and output.

    Attributes:
        mean: (B, D) predictive mean ``E_s[out_s]``.
        std: (B, D) predictive standard deviation, ``sqrt(Var_s[out_s] + noise_std^2)``.
        epistemic_std: (B, D) the spread of the weight samples' means, ``sqrt(Var_s[out_s])``.
        lower, upper: (B, D) central ``level`` interval of the predictive mixture.
        level: the interval's probability mass.
    """

    mean: Tensor
    std: Tensor
    epistemic_std: Tensor
    lower: Tensor
    upper: Tensor
    level: float


def _mixture_quantile(out: Tensor, noise: Tensor, q: float, iters: int = 60) -> Tensor:
    """Quantile of the equal-weight mixture of N(out_s, noise^2), by bisection (per entry)."""
    lo = out.min(0).values - 10 * noise
    hi = out.max(0).values + 10 * noise
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        cdf = 0.5 * (1 + torch.erf((mid - out) / (noise * math.sqrt(2)))).mean(0)
        below = cdf < q
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def predictive_interval(
    out: Tensor, noise_std: float | Tensor = 0.0, level: float = 0.95
) -> PredictiveInterval:
    """Predictive mean, standard deviation and central interval from S weight samples.

    The predictive is the mixture ``(1/S) sum_s N(out_s, noise_std^2)``. Its interval is
    found exactly (bisection on the mixture's CDF, to 2^-60 of the bracket) rather than
    from a Gaussian approximation, so skewed or bimodal predictives keep their shape; with
    ``noise_std = 0`` it is the empirical quantile of the samples.

    Args:
        out: (S, B, D) predicted means of S weight samples.
        noise_std: likelihood standard deviation (>= 0), float or tensor broadcastable to D.
        level: interval mass, in (0, 1).

    Returns:
        :class:`PredictiveInterval`.

    Example:
        >>> iv = predictive_interval(torch.zeros(1, 1, 1), noise_std=1.0, level=0.95)
        >>> round(float(iv.upper), 3)
        1.96
    """
    _check_samples(out, "out", "(S, B, D)")
    check(
        isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1,
        "level",
        level,
        "a float in (0, 1)",
    )
    check(
        isinstance(noise_std, (int, float, Tensor)) and not isinstance(noise_std, bool),
        "noise_std",
        noise_std,
        "a float or tensor >= 0",
    )
    noise = torch.as_tensor(noise_std, dtype=out.dtype, device=out.device)
    check(
        bool(torch.isfinite(noise).all()) and (bool((noise > 0).all()) or bool((noise == 0).all())),
        "noise_std",
        noise_std,
        "values all > 0, or all 0 (no likelihood noise)",
    )
    mean = out.mean(0)
    var = out.var(0, unbiased=False)
    alpha = (1 - level) / 2
    if bool((noise == 0).all()):
        qs = torch.quantile(
            out, torch.tensor([alpha, 1 - alpha], dtype=out.dtype, device=out.device), dim=0
        )
        lower, upper = qs[0], qs[1]
    else:
        noise_b = noise.expand_as(mean)
        lower = _mixture_quantile(out, noise_b, alpha)
        upper = _mixture_quantile(out, noise_b, 1 - alpha)
    return PredictiveInterval(
        mean=mean,
        std=torch.sqrt(var + noise * noise),
        epistemic_std=var.sqrt(),
        lower=lower,
        upper=upper,
        level=float(level),
    )
