"""Differentiable Voronoi tessellation of a box and the cell maps onto its cells.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(NeurIPS 2022, arXiv:2203.06832). Derived here from the maths (section 3 of the paper).

K anchors ``a_1..a_K`` in R^D lie strictly inside a box ``[lower, upper]``. Cell k is
``{y in box : |y - a_k| <= |y - a_j| for all j}``, a convex polytope: the half-spaces
``2 y.(a_j - a_k) <= |a_j|^2 - |a_k|^2`` and the box faces.

**Ray cast.** For the ray ``y = a_k + lam * x`` (x any non-zero vector) the half-space of j
reads ``lam * x.(a_j - a_k) <= |a_j - a_k|^2 / 2`` and the box faces
``lam * x_d <= upper_d - a_kd`` (x_d > 0), ``lam * (-x_d) <= a_kd - lower_d`` (x_d < 0). The
distance to the boundary along x is ``lam*(x) = 1 / mu(x)`` with

    mu(x) = max( max_j 2 x.(a_j - a_k) / |a_j - a_k|^2,  max_d x_d / (upper_d - a_kd),
                 max_d -x_d / (a_kd - lower_d),  0 ),

a maximum over the constraints: O(K D), no LP solver. ``mu`` is positively homogeneous of
degree 1 (``mu(c x) = c mu(x)``, c > 0) and ``mu(x) > 0`` for ``x != 0`` (the box is bounded).

**Cell map** ``f_k: R^D -> cell k``: with ``r = |x|`` and the unit direction ``delta = x / r``,
``t = e^theta r / lam*(delta) = e^theta mu(x)``, ``alpha = t / (1 + t)`` and

    f_k(x) = a_k + alpha lam*(delta) delta = a_k + e^theta x / (1 + t),

a bijection from R^D onto the interior of the cell (``alpha in [0, 1)``) that keeps rays from
the anchor. Its log-determinant, in polar form ``(D - 1) log(alpha lam* / r) + theta -
2 log(1 + t)``, simplifies (``alpha lam* / r = e^theta / (1 + t)``) to

    log |det df_k/dx| = D theta - (D + 1) log(1 + t),

which needs no division by r (finite at x = 0). **Inverse**: for ``v = y - a_k``,
``mu(v) = alpha`` (homogeneity), so ``x = e^-theta v / (1 - alpha)``.

Shapes: anchors ``(..., K, D)`` (a leading group shape, e.g. one tessellation per
categorical variable), points ``(..., D)`` and cell indices ``(...)`` broadcast against the
group shape; the box is ``(..., D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_finite

__all__ = [
    "VoronoiTessellation",
    "cell_map",
    "cell_map_inverse",
    "cell_mu",
    "nearest_anchor",
    "ray_length",
]


def _check_cells(k: Tensor, n_cells: int, argument: str = "k") -> None:
    check(isinstance(k, Tensor), argument, k, "a tensor of cell indices (integer dtype)")
    check(
        not k.is_floating_point() and not k.is_complex() and k.dtype != torch.bool,
        argument,
        k,
        "an integer tensor of cell indices",
    )
    if k.numel():
        lo, hi = int(k.min()), int(k.max())
        check(
            lo >= 0 and hi < n_cells, argument, f"indices in [{lo}, {hi}]", f"in 0..{n_cells - 1}"
        )


def _check_points(x: Tensor, dim: int, argument: str) -> None:
    check(isinstance(x, Tensor), argument, x, f"a tensor of shape (..., {dim})")
    check(x.ndim >= 1 and x.shape[-1] == dim, argument, x, f"a tensor of shape (..., {dim})")
    check(x.is_floating_point(), argument, x, "a real floating-point tensor")
    check_finite(x, argument)


def _batch_shape(x: Tensor, k: Tensor, anchors: Tensor, argument: str = "x") -> torch.Size:
    """Check the arguments of the public cell-map functions (points ``x`` (..., D) against
    ``anchors`` (..., K, D), integer ``k`` in 0..K-1) and return their broadcast batch shape."""
    check(isinstance(anchors, Tensor) and anchors.ndim >= 2, "anchors", anchors, "(..., K, D)")
    D = anchors.shape[-1]
    check(
        isinstance(x, Tensor) and x.ndim >= 1 and x.shape[-1] == D,
        argument,
        x,
        f"a tensor of shape (..., {D}) (the anchors' D)",
    )
    _check_cells(k, anchors.shape[-2])
    try:
        return torch.broadcast_shapes(x.shape[:-1], k.shape, anchors.shape[:-2])
    except RuntimeError:
        check(
            False,
            "k",
            k,
            f"cell indices broadcastable with the points' batch shape {tuple(x.shape[:-1])} "
            f"and the anchors' groups {tuple(anchors.shape[:-2])}",
        )
        raise  # unreachable: check raised


def _rows(anchors: Tensor, k: Tensor, batch: torch.Size) -> Tensor:
    """Flat row index ``g K + k`` of every point's own anchor in ``anchors.reshape(-1, D)``,
    shape ``batch`` (plain indexing: its backward scatters into (G K, ...), never into a
    tensor of the batch's size times K)."""
    groups, K = anchors.shape[:-2], anchors.shape[-2]
    g = torch.arange(groups.numel(), device=k.device).reshape(groups)
    return (g * K + k).expand(batch)


def _own_anchor(anchors: Tensor, k: Tensor, batch: torch.Size) -> Tensor:
    """``a_k`` for every point: anchors (..., K, D), k (...) -> (..., D)."""
    return anchors.reshape(-1, anchors.shape[-1])[_rows(anchors, k, batch)]


#: Above this many entries of the (groups, K, K, D) difference tensor, the squared anchor
#: distances |a_j - a_k|^2 come from the Gram expansion instead (faster, less exact for
#: nearly coinciding anchors).
_EXACT_PAIRWISE_MAX = 2**25


def _pairwise_sq(anchors: Tensor) -> Tensor:
    """``|a_j - a_k|^2`` for all pairs, (..., K, K); exact differences when affordable."""
    K, D = anchors.shape[-2:]
    if anchors[..., 0, 0].numel() * K * K * D <= _EXACT_PAIRWISE_MAX:
        return (anchors.unsqueeze(-2) - anchors.unsqueeze(-3)).square().sum(-1)
    sq = anchors.square().sum(-1)
    gram = anchors @ anchors.transpose(-1, -2)
    return (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * gram).clamp_min(0.0)


def cell_mu(x: Tensor, k: Tensor, anchors: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """``mu(x) = 1 / lam*(x)`` of cell k along x (see the module docstring), shape (...).

    Cost per point O(K D): ``x.(a_j - a_k) = x.a_j - x.a_k`` is one matrix product, and the
    squared anchor distances ``|a_j - a_k|^2`` (K x K, shared by the batch) are gathered by
    row; batches with fewer points than anchors form the differences per point instead.
    Coinciding anchors (``|a_j - a_k| = 0``) contribute no face (their term is 0): the
    anchors share the cell and no NaN arises.

    Args:
        x: directions, shape (..., D) (any length; ``mu`` scales with it).
        k: cell indices, integer, broadcastable to ``x.shape[:-1]``.
        anchors: (..., K, D); lower, upper: the box, (..., D), strictly around the anchors.
    """
    batch = torch.broadcast_shapes(x.shape[:-1], k.shape, anchors.shape[:-2], lower.shape[:-1])
    K = anchors.shape[-2]
    a_k = _own_anchor(anchors, k, batch)
    kk = k.expand(batch)
    n_groups = anchors[..., 0, 0].numel()
    if torch.Size(batch).numel() < K * n_groups:  # fewer points than anchors: per-point diffs
        diff = anchors - a_k.unsqueeze(-2)  # (..., K, D)
        den = diff.square().sum(-1)
        num = (x.unsqueeze(-2) * diff).sum(-1)
    else:
        den = _pairwise_sq(anchors).reshape(-1, K)[_rows(anchors, k, batch)]
        num = torch.einsum("...d,...kd->...k", x, anchors) - (x * a_k).sum(-1, True)
    tiny = torch.finfo(x.dtype).tiny
    own = torch.arange(K, device=k.device) == kk.unsqueeze(-1)
    valid = (den > 0) & ~own
    faces = torch.where(valid, 2.0 * num / den.clamp_min(tiny), torch.zeros_like(num))
    up = x / (upper - a_k)
    down = -x / (a_k - lower)
    box = torch.maximum(up, down).amax(-1)
    return torch.maximum(faces.amax(-1), box).clamp_min(0.0)


def ray_length(
    direction: Tensor, k: Tensor, anchors: Tensor, lower: Tensor, upper: Tensor
) -> Tensor:
    """Distance ``lam*`` from ``a_k`` to the boundary of cell k along the unit ``direction``.

    ``direction`` (..., D) is normalised here; returns (...).
    """
    _batch_shape(direction, k, anchors, "direction")
    unit = direction / direction.norm(dim=-1, keepdim=True)
    return 1.0 / cell_mu(unit, k, anchors, lower, upper)


def cell_map(
    x: Tensor,
    k: Tensor,
    anchors: Tensor,
    lower: Tensor,
    upper: Tensor,
    theta: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """``y = f_k(x) = a_k + e^theta x / (1 + e^theta mu(x))`` and ``log |det df_k/dx|``.

    Args:
        x: points of R^D, (..., D). k: cell indices (...). theta: the log-scale of the radial
            squash, a float or a tensor broadcastable to (...).
        anchors, lower, upper: as in :func:`cell_mu`.

    Returns:
        ``y`` (..., D) inside cell k, and the log-determinant (...), in closed form
        ``D theta - (D + 1) log(1 + t)``.
    """
    batch = _batch_shape(x, k, anchors, "x")
    theta_t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    a_k = _own_anchor(anchors, k, batch)
    scale = theta_t.exp()
    t = scale * cell_mu(x, k, anchors, lower, upper)
    y = a_k + (scale / (1.0 + t)).unsqueeze(-1) * x
    D = x.shape[-1]
    return y, D * theta_t - (D + 1) * torch.log1p(t)


def cell_map_inverse(
    y: Tensor,
    k: Tensor,
    anchors: Tensor,
    lower: Tensor,
    upper: Tensor,
    theta: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """``x = f_k^{-1}(y) = e^-theta (y - a_k) / (1 - alpha)`` with ``alpha = mu(y - a_k)``.

    ``y`` must lie in cell k (for the nearest anchor's cell, use
    :meth:`VoronoiTessellation.inverse` without ``k``): ``alpha`` is clamped below ``1 - eps``
    of the dtype, so points on the boundary map to a large but finite x, and a point outside
    cell k to a large x that is not its preimage (no error is raised: checking would cost a
    nearest-anchor search). Returns ``x`` (..., D) and ``log |det dx/dy|`` (...), the negative
    of :func:`cell_map`'s at x.
    """
    batch = _batch_shape(y, k, anchors, "y")
    theta_t = torch.as_tensor(theta, dtype=y.dtype, device=y.device)
    v = y - _own_anchor(anchors, k, batch)
    eps = torch.finfo(y.dtype).eps
    alpha = cell_mu(v, k, anchors, lower, upper).clamp(max=1.0 - eps)
    x = ((-theta_t).exp() / (1.0 - alpha)).unsqueeze(-1) * v
    D = y.shape[-1]
    # 1 + t = 1 / (1 - alpha)
    return x, -D * theta_t - (D + 1) * torch.log1p(-alpha)


def _use_tree(y: Tensor, anchors: Tensor) -> bool:
    """Whether :func:`nearest_anchor` queries a k-d tree: one tessellation (anchors (K, D)) on
    the CPU with many anchors in few dimensions. Measured (one thread, 1024 points, float64;
    benchmarks/results/voronoi.md, interleaved medians): scipy's cKDTree, built and queried
    per call, beats the batched brute force from K = 256 at D = 2 (5.6x), and at K = 1024 by
    16x (D = 2), 12x (D = 4) and 1.5-3x (D = 8; one best-of-7 run had them even); 9x at
    K = 4096, D = 8. It is also exact where the brute force's ``|a|^2 - 2 y.a`` cancels
    (float32: 0.2% of the points differed at K = 1024, D = 2)."""
    if anchors.ndim != 2 or anchors.device.type != "cpu" or y.device.type != "cpu":
        return False
    K, D = anchors.shape
    return (D <= 4 and K >= 256) or (D <= 8 and K >= 1024)


def nearest_anchor(y: Tensor, anchors: Tensor) -> Tensor:
    """Index of the nearest anchor of every point, shape (...).

    Brute force ``argmin_j |a_j|^2 - 2 y.a_j`` (one matrix product; |y|^2 is common to all
    j; ties: the lowest index), or, for many anchors in few dimensions on the CPU, a
    ``scipy.spatial.cKDTree`` built on the anchors (see :func:`_use_tree`: measurably faster
    there; ties broken by the tree; no gradient flows through an index either way).

    Args:
        y: (..., D); anchors: (..., K, D) broadcastable.
    """
    check(isinstance(anchors, Tensor) and anchors.ndim >= 2, "anchors", anchors, "(..., K, D)")
    D = anchors.shape[-1]
    check(
        isinstance(y, Tensor) and y.ndim >= 1 and y.shape[-1] == D,
        "y",
        y,
        f"a tensor of shape (..., {D}) (the anchors' D)",
    )
    if _use_tree(y, anchors):
        from scipy.spatial import cKDTree

        pts = y.detach().reshape(-1, y.shape[-1]).double().numpy()
        _, idx = cKDTree(anchors.detach().double().numpy()).query(pts)
        return torch.as_tensor(idx, dtype=torch.long).reshape(y.shape[:-1])
    sq = anchors.square().sum(-1)
    dist = sq - 2 * torch.einsum("...d,...kd->...k", y, anchors)
    return dist.argmin(-1)


#: anchors = centre + half_width * _SHRINK * tanh(raw): strictly inside the box even when
#: tanh(raw) rounds to +-1 (|raw| > ~19 in float64, > ~9 in float32).
_SHRINK = 1.0 - 2.0**-16


def _atanh(u: Tensor) -> Tensor:
    u = u.clamp(-1 + 2.0**-20, 1 - 2.0**-20)
    return 0.5 * (torch.log1p(u) - torch.log1p(-u))


class VoronoiTessellation(nn.Module):
    """K learnable anchors strictly inside a learnable box, and the cell maps onto their cells.

    Semi-Discrete Normalizing Flows through Differentiable Tessellation (Chen, Amos, Nickel,
    arXiv:2203.06832). Parametrisation: the box is ``centre +- exp(log_half_width)`` and the
    anchors are ``centre + (1 - 2^-16) exp(log_half_width) tanh(raw)``, so they stay
    strictly inside the box whatever the optimiser does. A leading ``groups`` shape gives
    independent tessellations (one per categorical variable, say).

    Args:
        anchors: initial anchors, (*groups, K, D), strictly inside the box; K >= 2.
        lower, upper: the box, broadcastable to (*groups, D); ``lower < anchors < upper``.
        learn_box: whether the box is a parameter (else a buffer).

    Example:
        >>> import torch
        >>> tess = VoronoiTessellation(torch.tensor([[-0.5, 0.0], [0.5, 0.0]]), -1.0, 1.0)
        >>> y, logdet = tess.forward(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> tess.nearest(y).tolist()
        [0, 1, 0, 1]
    """

    def __init__(
        self,
        anchors: Tensor,
        lower: Tensor | float = -1.0,
        upper: Tensor | float = 1.0,
        *,
        learn_box: bool = True,
    ) -> None:
        super().__init__()
        check(isinstance(anchors, Tensor) and anchors.ndim >= 2, "anchors", anchors, "(..., K, D)")
        check(anchors.is_floating_point(), "anchors", anchors, "a floating-point tensor")
        check_finite(anchors, "anchors")
        K, D = anchors.shape[-2:]
        check(K >= 2, "anchors", anchors, "K >= 2 anchors (shape (..., K, D))")
        check(D >= 1, "anchors", anchors, "D >= 1")
        lo = torch.as_tensor(lower, dtype=anchors.dtype).expand(*anchors.shape[:-2], D)
        hi = torch.as_tensor(upper, dtype=anchors.dtype).expand(*anchors.shape[:-2], D)
        check(bool((hi > lo).all()), "upper", hi, f"> lower ({lo.tolist()})")
        inside = (anchors > lo.unsqueeze(-2)) & (anchors < hi.unsqueeze(-2))
        if not bool(inside.all()):
            n_out = int((~inside.all(-1)).sum())
            box = (
                f"[{lo.min().item():g}, {hi.max().item():g}]"
                if lo.numel() > 8
                else (f"lower {lo.tolist()}, upper {hi.tolist()}")
            )
            check(
                False,
                "anchors",
                anchors,
                f"points strictly inside the box ({box}; default [-1, 1]); {n_out} of "
                f"{anchors.shape[:-1].numel()} anchors are not",
                "pass lower= and upper= around them, or use VoronoiTessellation.from_points",
            )
        centre, half = (hi + lo) / 2, (hi - lo) / 2
        raw = _atanh((anchors - centre.unsqueeze(-2)) / (_SHRINK * half.unsqueeze(-2)))
        self.raw = nn.Parameter(raw.clone())
        if learn_box:
            self.centre = nn.Parameter(centre.clone())
            self.log_half_width = nn.Parameter(half.log().clone())
        else:
            self.register_buffer("centre", centre.clone())
            self.register_buffer("log_half_width", half.log().clone())
        self.n_cells, self.dim = int(K), int(D)

    @classmethod
    def from_points(
        cls,
        points: Tensor,
        n_cells: int,
        *,
        margin: float = 0.1,
        generator: torch.Generator | None = None,
        learn_box: bool = True,
    ) -> VoronoiTessellation:
        """Anchors at the k-means centres of ``points`` (N, D) (:func:`flowfields.linalg.kmeans`,
        k-means++), the box the points' range widened by ``margin`` times its width."""
        from flowfields.linalg import kmeans

        check(isinstance(n_cells, int) and n_cells >= 2, "n_cells", n_cells, "an integer K >= 2")
        check(isinstance(points, Tensor) and points.ndim == 2, "points", points, "(N, D)")
        res = kmeans(points, n_cells, generator=generator, init="k-means++")
        lo, hi = points.amin(0), points.amax(0)
        pad = margin * (hi - lo).clamp_min(1e-6) + 1e-6
        return cls(res.centres, lo - pad, hi + pad, learn_box=learn_box)

    @property
    def half_width(self) -> Tensor:
        return self.log_half_width.exp()

    @property
    def lower(self) -> Tensor:
        """The box's lower corner, (*groups, D)."""
        return self.centre - self.half_width

    @property
    def upper(self) -> Tensor:
        """The box's upper corner, (*groups, D)."""
        return self.centre + self.half_width

    @property
    def anchors(self) -> Tensor:
        """The anchors, (*groups, K, D), strictly inside the box."""
        w = _SHRINK * self.half_width.unsqueeze(-2)
        return self.centre.unsqueeze(-2) + w * torch.tanh(self.raw)

    def _box(self) -> tuple[Tensor, Tensor, Tensor]:
        a, lo, hi = self.anchors, self.lower, self.upper
        return a, lo, hi

    def nearest(self, y: Tensor) -> Tensor:
        """Index of the cell holding each point ``y`` (..., D) (nearest anchor), shape (...)."""
        _check_points(y, self.dim, "y")
        return nearest_anchor(y, self.anchors)

    def in_box(self, y: Tensor) -> Tensor:
        """Whether each point ``y`` (..., D) lies inside the box (closed), shape (...)."""
        return ((y >= self.lower) & (y <= self.upper)).all(-1)

    def ray_length(self, direction: Tensor, k: Tensor) -> Tensor:
        """``lam*``: distance from anchor k to its cell's boundary along ``direction``."""
        _check_points(direction, self.dim, "direction")
        check(bool((direction.norm(dim=-1) > 0).all()), "direction", direction, "non-zero vectors")
        return ray_length(direction, k, *self._box())  # checks k

    def forward(self, x: Tensor, k: Tensor, theta: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """The cell map ``f_k(x)`` and its log-determinant (see :func:`cell_map`)."""
        _check_points(x, self.dim, "x")
        return cell_map(x, k, *self._box(), theta)  # checks k

    def inverse(
        self, y: Tensor, k: Tensor | None = None, theta: Tensor | float = 0.0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``f_k^{-1}(y)``, its log-determinant and ``k`` (the nearest anchor when None)."""
        _check_points(y, self.dim, "y")
        if k is None:
            k = nearest_anchor(y, self.anchors)
        x, logdet = cell_map_inverse(y, k, *self._box(), theta)  # checks k
        return x, logdet, k

    def box_volume(self) -> Tensor:
        """Volume of the box, (*groups,)."""
        return (2 * self.half_width).prod(-1)

    def extra_repr(self) -> str:
        groups = tuple(self.raw.shape[:-2])
        return f"n_cells={self.n_cells}, dim={self.dim}, groups={groups}"
