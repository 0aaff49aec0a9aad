"""The evidence lower bound of a Bayesian network's output, for regression and classification."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flowfields.errors import check, check_finite

__all__ = ["ELBO", "elbo_loss", "negative_log_likelihood"]


@dataclass
class ELBO:
    """The terms of the negative ELBO per data point.

    Attributes:
        loss: ``nll + kl_weight * kl / n_data``, the 0-d tensor to minimise.
        nll: mean over weight samples and the batch of ``-log p(y | x, w)``.
        kl: mean over weight samples of the KL estimate.
    """

    loss: Tensor
    nll: Tensor
    kl: Tensor


def negative_log_likelihood(
    out: Tensor, y: Tensor, task: str, noise_std: float | Tensor | None = None
) -> Tensor:
    """``-log p(y | x, w)`` for every weight sample and data point.

    Args:
        out: (S, B, D) Gaussian means (regression) or logits (classification).
        y: (B, D) targets (regression) or (B,) integer labels in [0, D) (classification).
        task: ``"regression"`` or ``"classification"``.
        noise_std: the Gaussian likelihood's standard deviation (regression only, > 0):
            a float or a tensor broadcastable to (D,) (e.g. a learned one).

    Returns:
        (S, B) negative log-likelihoods.

    Raises:
        FlowfieldsError: wrong shapes, labels out of range, non-finite targets.
    """
    check(
        isinstance(out, Tensor) and out.ndim == 3 and out.is_floating_point(),
        "out",
        out,
        "a floating tensor (S, B, D)",
    )
    check_finite(out, "out")
    if task == "classification":
        check(
            isinstance(y, Tensor) and y.ndim == 1 and y.shape[0] == out.shape[1],
            "y",
            y,
            f"integer labels of shape ({out.shape[1]},)",
        )
        check(not y.is_floating_point(), "y", y, "integer class labels (int64)")
        check(bool(((y >= 0) & (y < out.shape[2])).all()), "y", y, f"labels in [0, {out.shape[2]})")
        logits = out.reshape(-1, out.shape[2])
        labels = y.expand(out.shape[0], -1).reshape(-1)
        return F.cross_entropy(logits, labels, reduction="none").reshape(out.shape[:2])
    check(task == "regression", "task", task, "'regression' or 'classification'")
    check(
        isinstance(y, Tensor) and tuple(y.shape) == tuple(out.shape[1:]),
        "y",
        y,
        f"targets of shape {tuple(out.shape[1:])}",
    )
    check_finite(y, "y")
    check(noise_std is not None, "noise_std", noise_std, "a positive float for regression")
    std = torch.as_tensor(noise_std, dtype=out.dtype, device=out.device)
    check(bool((std > 0).all() and torch.isfinite(std).all()), "noise_std", noise_std, "values > 0")
    z = (y - out) / std
    return (0.5 * z * z + torch.log(std) + 0.5 * math.log(2 * math.pi)).sum(-1)


def elbo_loss(
    out: Tensor,
    kl: Tensor,
    y: Tensor,
    *,
    task: str,
    n_data: int,
    noise_std: float | Tensor | None = None,
    kl_weight: float = 1.0,
) -> ELBO:
    """The negative ELBO per data point, ``E_q[-log p(y | x, w)] + kl_weight KL / n_data``.

    Dividing the KL by the data-set size ``n_data`` makes a mini-batch loss an unbiased
    estimate of the full negative ELBO divided by ``n_data``; ``kl_weight < 1`` is the usual
    KL annealing / tempering.

    Args:
        out: (S, B, D) outputs of the weight samples; kl: (S,) their KL estimates.
        y, task, noise_std: as for :func:`negative_log_likelihood`.
        n_data: the number of training points (>= 1).
        kl_weight: weight of the KL term (>= 0).

    Example:
        >>> out, kl = torch.zeros(4, 3, 1), torch.zeros(4)
        >>> e = elbo_loss(out, kl, torch.zeros(3, 1), task="regression", n_data=10, noise_std=1.0)
        >>> round(float(e.loss), 4)  # 0.5 log(2 pi)
        0.9189
    """
    check(
        isinstance(n_data, int) and not isinstance(n_data, bool) and n_data >= 1,
        "n_data",
        n_data,
        "an integer >= 1",
    )
    check(
        isinstance(kl_weight, (int, float)) and math.isfinite(kl_weight) and kl_weight >= 0,
        "kl_weight",
        kl_weight,
        "a float >= 0",
    )
    nll = negative_log_likelihood(out, y, task, noise_std).mean()
    check(
        isinstance(kl, Tensor) and tuple(kl.shape) == (out.shape[0],),
        "kl",
        kl,
        f"a tensor of shape ({out.shape[0]},)",
    )
    check_finite(kl, "kl")
    kl_mean = kl.mean()
    return ELBO(loss=nll + kl_weight * kl_mean / n_data, nll=nll, kl=kl_mean)
