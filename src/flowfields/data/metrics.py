"""Sample-quality metrics between point clouds, and calibration of class probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_finite

__all__ = ["Calibration", "expected_calibration_error", "sliced_wasserstein", "wasserstein_1d"]


def _check_cloud(x: object, argument: str, shape: str) -> None:
    check(
        isinstance(x, Tensor) and x.ndim == 2 and x.shape[0] > 0 and x.shape[1] > 0,
        argument,
        x,
        f"a non-empty tensor {shape}",
    )
    assert isinstance(x, Tensor)
    check(x.is_floating_point(), argument, x, "a real floating-point tensor")
    check_finite(x, argument)


def wasserstein_1d(x: Tensor, y: Tensor, p: float = 2.0) -> Tensor:
    """Exact p-Wasserstein distance^p between 1-D empirical distributions, per column.

    ``W_p^p = int_0^1 |F^{-1}(u) - G^{-1}(u)|^p du`` with ``F, G`` the empirical CDFs of the
    columns of ``x`` (n, P) and ``y`` (m, P), each point weighted 1/n (1/m). Sizes may differ:
    the quantile functions are compared on the merged breakpoints, computed in exact integer
    arithmetic.

    Returns:
        ``W_p^p`` per column, shape (P,).

    Raises:
        FlowfieldsError: inputs that are not finite real (n, P) / (m, P) batches with n, m > 0,
            or a bad ``p``.
    """
    _check_cloud(x, "x", "(n, P)")
    _check_cloud(y, "y", "(m, P)")
    check(y.ndim == 2 and y.shape[1] == x.shape[1], "y", y, f"{x.shape[1]} columns like x")
    check(isinstance(p, (int, float)) and p >= 1, "p", p, "a number >= 1")
    y = y.to(dtype=x.dtype, device=x.device)
    n, m = x.shape[0], y.shape[0]
    # sort along the contiguous last dimension (about twice as fast as along dim 0)
    xs = torch.sort(x.T.contiguous(), dim=1).values
    ys = torch.sort(y.T.contiguous(), dim=1).values
    if n == m:
        return (xs - ys).abs().pow(p).mean(dim=1)
    dev = x.device
    # breakpoints k/n and l/m in units of 1/(n m): integers, so the merge is exact
    u = torch.unique(
        torch.cat([torch.arange(1, n + 1, device=dev) * m, torch.arange(1, m + 1, device=dev) * n])
    )
    width = torch.diff(u, prepend=u.new_zeros(1)).to(x.dtype) / (n * m)
    ix = (u + m - 1) // m - 1  # quantile index of x on (u_prev, u]
    iy = (u + n - 1) // n - 1
    return ((xs[:, ix] - ys[:, iy]).abs().pow(p) * width).sum(dim=1)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte Carlo sliced p-Wasserstein distance between two point clouds.

    ``SW_p(x, y) = (E_theta W_p^p(theta . x, theta . y))^(1/p)`` with ``theta`` uniform on the
    unit sphere, estimated with ``n_projections`` random directions (the same directions for
    both clouds) and exact 1-D distances (:func:`wasserstein_1d`). For ``y = x + s`` (a shift
    of the same points) every 1-D distance is exactly ``|theta . s|``, so ``SW_2 -> |s| /
    sqrt(d)`` as the number of projections grows.

    Args:
        x: samples, shape (n, d) (any trailing shape is flattened).
        y: samples, shape (m, d), with the same d; n and m may differ.
        n_projections: number of random directions.
        p: order, >= 1.
        generator: torch generator for the directions (reproducible metric).

    Returns:
        0-d tensor with ``x``'s dtype.

    Raises:
        FlowfieldsError: on mismatched dimensions, empty inputs, NaN/Inf or bad arguments.
    """
    check(isinstance(x, Tensor) and x.ndim >= 2 and x.shape[0] > 0, "x", x, "a tensor (n, d)")
    check(isinstance(y, Tensor) and y.ndim >= 2 and y.shape[0] > 0, "y", y, "a tensor (m, d)")
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    check(x.shape[1] > 0, "x", x, "points of dimension d >= 1")
    check(y.shape[1] == x.shape[1], "y", y, f"points of dimension {x.shape[1]} like x")
    for name, z in (("x", x), ("y", y)):
        check(not z.is_complex(), name, z, "real-valued points")
    check(
        isinstance(n_projections, int) and n_projections >= 1,
        "n_projections",
        n_projections,
        "an integer >= 1",
    )
    check(isinstance(p, (int, float)) and p >= 1, "p", p, "a number >= 1")
    check_finite(x, "x")
    check_finite(y, "y")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    x = x.to(dtype)
    y = y.to(dtype=dtype, device=x.device)
    dev = generator.device if generator is not None else x.device
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=dtype, device=dev)
    theta = (theta / torch.linalg.vector_norm(theta, dim=0, keepdim=True)).to(x.device)
    w = wasserstein_1d(x @ theta, y @ theta, p=p)
    return w.mean().pow(1.0 / p)


@dataclass
class Calibration:
    """Expected calibration error and the reliability diagram it is computed from.

    Attributes:
        ece: 0-d tensor, ``sum_b (n_b / N) |accuracy_b - confidence_b|``.
        edges: (bins + 1,) bin edges, equal width on [0, 1]; bin b is
            ``(edges[b], edges[b + 1]]`` (the first also holds 0).
        confidence: (bins,) mean max-probability of the points in each bin (0 where empty).
        accuracy: (bins,) fraction of those points whose arg-max class is the label.
        count: (bins,) number of points per bin (int64).
    """

    ece: Tensor
    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor


def _check_probabilities(probs: Tensor, labels: Tensor) -> None:
    check(
        isinstance(probs, Tensor) and probs.ndim == 2 and probs.shape[0] > 0,
        "probs",
        probs,
        "a tensor (N, C) of class probabilities",
    )
    check(probs.is_floating_point(), "probs", probs, "a floating-point tensor")
    check_finite(probs, "probs")
    # float32 rounding of a softmax (even after a cast to float64) stays far below these;
    # logits and log-probabilities are far above
    tol = 1e-4 if probs.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-6
    check(
        bool((probs >= 0).all()) and bool((probs.sum(-1) - 1).abs().max() <= tol * probs.shape[1]),
        "probs",
        probs,
        "probabilities: entries >= 0, rows summing to 1",
        hint="Calibration is measured on probabilities, never logits: apply softmax first.",
    )
    check(
        isinstance(labels, Tensor) and labels.ndim == 1 and labels.shape[0] == probs.shape[0],
        "labels",
        labels,
        f"integer labels of shape ({probs.shape[0]},)",
    )
    check(not labels.is_floating_point(), "labels", labels, "an integer tensor")
    in_range = bool(((labels >= 0) & (labels < probs.shape[1])).all())
    check(in_range, "labels", labels, f"labels in [0, {probs.shape[1]})")


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> Calibration:
    """Expected calibration error with equal-width confidence bins, and its reliability diagram.

    The confidence of a prediction is its largest class probability; points are grouped in
    ``bins`` equal-width bins of confidence, and the ECE is the bin-size-weighted mean gap
    between each bin's accuracy and its mean confidence (Guo et al., "On Calibration of
    Modern Neural Networks", arXiv:1706.04599). It is computed on probabilities: rows that
    do not sum to 1 (logits, log-probabilities) are refused, not silently normalised.

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) integer labels in [0, C).
        bins: number of bins (>= 1).

    Returns:
        :class:`Calibration` (``ece`` plus the per-bin confidence, accuracy and count to draw
        the reliability diagram).

    Raises:
        FlowfieldsError: shapes, non-probabilities, labels out of range, ``bins < 1``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
        >>> cal = expected_calibration_error(probs, torch.tensor([0, 1, 1]), bins=10)
        >>> round(float(cal.ece), 4)  # |1-.9|/3 + |0-.8|/3 + |1-.7|/3
        0.4
    """
    _check_probabilities(probs, labels)
    check(
        isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1,
        "bins",
        bins,
        "an integer >= 1",
    )
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels.to(pred.device)).to(probs.dtype)
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins)
    zeros = torch.zeros(bins, dtype=probs.dtype, device=probs.device)
    conf_sum = zeros.index_add(0, index, conf)
    acc_sum = zeros.index_add(0, index, correct)
    denom = count.clamp(min=1).to(probs.dtype)
    confidence, accuracy = conf_sum / denom, acc_sum / denom
    ece = ((acc_sum - conf_sum).abs()).sum() / probs.shape[0]
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype, device=probs.device)
    return Calibration(ece=ece, edges=edges, confidence=confidence, accuracy=accuracy, count=count)
