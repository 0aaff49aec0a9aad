"""Lloyd's k-means clustering on torch tensors (any device, differentiable-free).

Shared by the semi-discrete (Voronoi) flows, whose cells are the k-means partition, and by the
neural-conservation-law mixtures (:class:`flowfields.conservation.PositiveDensityFlux` starts
its component means at k-means centres). Reference: S. Lloyd, "Least squares quantization in
PCM" (1982); k-means++ seeding: Arthur & Vassilvitskii, "k-means++: the advantages of careful
seeding" (SODA 2007).

Example:
    >>> import torch
    >>> from flowfields.linalg import kmeans
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(50, 2, generator=g) - 5, torch.randn(50, 2, generator=g) + 5])
    >>> km = kmeans(x, 2, generator=g, init="k-means++")
    >>> sorted(km.counts.tolist())
    [50, 50]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_finite, check_shape

__all__ = ["KMEANS_INITS", "KMeansResult", "kmeans"]

#: Seedings :func:`kmeans` offers.
KMEANS_INITS = ("random", "k-means++")


@dataclass
class KMeansResult:
    """The outcome of :func:`kmeans`.

    Attributes:
        centres: the cluster centres, shape (k, d).
        labels: index of the nearest centre of every point, shape (N,) int64 (computed with
            the final ``centres``).
        counts: points per cluster, shape (k,) int64.
        inertia: sum of squared distances of the points to their centres (a float).
        iters: Lloyd iterations run (fewer than ``iters`` when the assignment stopped changing).
    """

    centres: Tensor
    labels: Tensor
    counts: Tensor
    inertia: float
    iters: int


def _seed_centres(x: Tensor, k: int, init: str, generator: torch.Generator | None) -> Tensor:
    """``k`` distinct data points (``"random"``) or k-means++ seeds (D^2 sampling)."""
    if init == "random":
        return x[torch.randperm(x.shape[0], generator=generator, device="cpu")[:k]].clone()
    rows = [int(torch.randint(x.shape[0], (1,), generator=generator, device="cpu"))]
    d2 = torch.cdist(x, x[rows[0]].unsqueeze(0)).squeeze(1).square()
    for _ in range(1, k):
        weights = d2.double().cpu()
        if float(weights.sum()) <= 0:  # fewer distinct points than k: any unused row
            weights = torch.ones_like(weights)
            weights[rows] = 0
        rows.append(int(torch.multinomial(weights, 1, generator=generator)))
        d2 = torch.minimum(d2, torch.cdist(x, x[rows[-1]].unsqueeze(0)).squeeze(1).square())
    return x[rows].clone()


def kmeans(
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    iters: int = 20,
    init: str = "random",
) -> KMeansResult:
    """Lloyd's k-means: alternate nearest-centre assignment and centre = mean of its points.

    A centre whose cluster empties keeps its previous position. Iteration stops after
    ``iters`` updates or as soon as the assignment no longer changes (the centres would not
    change either, so the result is the same as running all ``iters``).

    Args:
        x: points, shape (N, d), floating point, finite, ``N >= k``.
        k: number of clusters, >= 1.
        generator: CPU torch generator for the seeding.
        iters: maximum number of Lloyd updates, >= 0.
        init: ``"random"`` (k distinct data points, uniformly) or ``"k-means++"``.

    Returns:
        :class:`KMeansResult`.

    Raises:
        FlowfieldsError: bad shapes, non-finite points, ``k`` outside ``1..N``, bad ``iters`` or
            ``init``.
    """
    check_shape(x, "x", ndim=2)
    check(x.is_floating_point(), "x", x, "a floating-point tensor of shape (N, d)")
    check_finite(x, "x")
    check(isinstance(k, int) and not isinstance(k, bool), "k", k, "an integer")
    check(1 <= k <= x.shape[0], "k", k, f"an integer in 1..{x.shape[0]} (the number of points)")
    check(isinstance(iters, int) and iters >= 0, "iters", iters, "an integer >= 0")
    check(init in KMEANS_INITS, "init", init, f"one of {KMEANS_INITS}")
    centres = _seed_centres(x, k, init, generator)
    label = torch.cdist(x, centres).argmin(1)
    done = 0
    while done < iters:
        done += 1
        for j in range(k):
            members = x[label == j]
            if members.shape[0] > 0:
                centres[j] = members.mean(0)
        new_label = torch.cdist(x, centres).argmin(1)
        if torch.equal(new_label, label):
            break
        label = new_label
    label = torch.cdist(x, centres).argmin(1)
    inertia = float((x - centres[label]).square().sum())
    counts = torch.bincount(label, minlength=k)
    return KMeansResult(centres=centres, labels=label, counts=counts, inertia=inertia, iters=done)
