"""Bits per dimension of discrete data under a continuous density, with dequantization.

Discrete data ``x`` in {0, ..., L-1}^D is dequantized uniformly, ``y = (x + u) / L`` with
``u ~ U[0, 1)^D``, and optionally mapped affinely to the model's space ``z = scale * y +
shift``. For any continuous density ``p_Z`` the discrete model ``P(x) = int_{[0,1)^D}
p_V(x + u) du`` with ``p_V(v) = p_Z(scale v / L + shift) |scale|^D / L^D`` is a proper
probability mass function, and

- K = 1: ``log P(x) >= E_u[log p_V(x + u)]`` (the usual dequantization bound);
- K > 1: ``log P(x) >= E[log (1/K) sum_k p_V(x + u_k)]``, the importance-weighted bound of
  Lipman et al. (arXiv:2210.02747, Appendix) with the uniform proposal; it increases with K
  and equals ``log P(x)`` for every K when ``p_V`` is constant on each cell.

Bits per dimension are ``-log P(x) / (D ln 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowfields.data.images import check_levels
from flowfields.errors import check

__all__ = ["BitsPerDim", "bits_per_dim", "dequantize"]


@dataclass
class BitsPerDim:
    """Bits per dimension of a data set.

    Attributes:
        bpd: mean bits/dim over the examples (the number papers report); the
            importance-weighted bound when ``K > 1``.
        stderr: standard error of that mean over the examples.
        per_example: bits/dim of each example, shape (N,).
        K: number of dequantization samples per example (importance-weighted when > 1).
        bpd_k1: the K = 1 bound estimated from the same K draws (mean of their bounds);
            ``bpd <= bpd_k1`` for every example by Jensen's inequality. Equals ``bpd`` when
            ``K = 1``.
    """

    bpd: float
    stderr: float
    per_example: Tensor
    K: int
    bpd_k1: float = float("nan")


def dequantize(
    x_int: Tensor,
    levels: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform dequantization ``(x + u) / levels`` with ``u ~ U[0, 1)``: values in [0, 1).

    Args:
        x_int: integers in {0, ..., levels - 1}, shape (N, *dims) (any integer or float dtype).
        levels: number of discrete levels L.
        generator: torch generator for ``u``.
        dtype: floating dtype of the result.

    Thin wrapper over :func:`flowfields.data.uniform_dequantize` (which keeps values below
    1 under floating-point rounding).

    Returns:
        Tensor of shape (N, *dims); its log-density is that of the discrete data plus
        ``D log L`` (the Jacobian of dividing by L), D = number of dims per example.
    """
    from flowfields.data import uniform_dequantize

    check_levels(x_int, levels)
    return uniform_dequantize(x_int, levels, generator, dtype=dtype).x


def bits_per_dim(
    model: Any,
    x_int: Tensor,
    levels: int,
    K: int = 1,
    *,
    scale: float | Tensor = 1.0,
    shift: float | Tensor = 0.0,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    **log_prob_kwargs: Any,
) -> BitsPerDim:
    """Bits/dim of integer data under a continuous density model, dequantized uniformly.

    The model sees ``z = scale * (x + u) / levels + shift``; the Jacobians of both the
    division by ``levels`` and the affine map are accounted for.

    Args:
        model: density with ``log_prob(z, **log_prob_kwargs) -> (B,)`` (e.g. a :class:`CNF`).
        x_int: integers in {0, ..., levels - 1}, shape (N, *dims).
        levels: number of discrete levels L (256 for 8-bit images, 17 for sklearn digits).
        K: dequantization samples per example; K > 1 gives the importance-weighted bound
            (log-mean-exp over the K samples), never worse than K = 1 on average.
        scale, shift: the affine preprocessing the model was trained with (scalars or tensors
            broadcastable to one example's shape).
        batch_size: examples per call to ``model.log_prob``.
        generator: torch generator for the dequantization noise.
        dtype: floating dtype fed to the model (default: the dtype of the model's first
            parameter, else of its first floating buffer, else torch's default dtype).
        **log_prob_kwargs: passed to ``model.log_prob`` (e.g. ``estimator="hutchinson"``).

    Returns:
        A :class:`BitsPerDim` record.

    Raises:
        FlowfieldsError: non-integer or out-of-range data, bad ``levels``/``K``/``scale``.
    """
    check_levels(x_int, levels)
    check(x_int.shape[0] >= 1, "x_int", x_int, "a non-empty batch (B >= 1, *event)")
    check(isinstance(K, int) and not isinstance(K, bool) and K >= 1, "K", K, "an integer >= 1")
    check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "int >= 1")
    if dtype is None:
        ref: Tensor | None = None
        if isinstance(model, torch.nn.Module):
            ref = next(iter(model.parameters()), None)
            if ref is None:
                ref = next((b for b in model.buffers() if b.is_floating_point()), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    event = tuple(x_int.shape[1:])
    D = math.prod(event)
    scale_t = torch.as_tensor(scale, dtype=torch.float64)
    shift_t = torch.as_tensor(shift, dtype=torch.float64)
    try:
        log_abs_scale = torch.log(scale_t.abs()).expand(event).sum().item()
        shift_t.expand(event)
    except RuntimeError as err:
        check(False, "scale/shift", (scale_t, shift_t), f"broadcastable to {event}", str(err))
    check(math.isfinite(log_abs_scale), "scale", scale, "non-zero finite values")
    scale_m = scale_t.to(dtype=dtype, device=x_int.device)
    shift_m = shift_t.to(dtype=dtype, device=x_int.device)
    # log p_V(x + u) = log p_Z(z) + sum log|scale| - D log L
    const = log_abs_scale - D * math.log(levels)
    out, out_k1 = [], []
    for start in range(0, x_int.shape[0], batch_size):
        xb = x_int[start : start + batch_size]
        logs = []
        for _ in range(K):
            y = dequantize(xb, levels, generator=generator, dtype=dtype)
            z = y * scale_m + shift_m
            lp = model.log_prob(z, **log_prob_kwargs)
            logs.append(lp.detach().to(torch.float64) + const)
        stacked = torch.stack(logs, dim=0)
        log_P = torch.logsumexp(stacked, dim=0) - math.log(K)
        out.append(-log_P / (D * math.log(2.0)))
        out_k1.append(-stacked.mean(dim=0) / (D * math.log(2.0)))
    per_example = torch.cat(out)
    bpd_k1 = torch.cat(out_k1).mean().item()
    n = per_example.numel()
    stderr = per_example.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return BitsPerDim(
        bpd=per_example.mean().item(),
        stderr=stderr,
        per_example=per_example,
        K=K,
        bpd_k1=bpd_k1,
    )
