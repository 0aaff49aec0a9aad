"""Dequantization of categorical data: Voronoi (learned cells), argmax and uniform.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832), section 4. Data ``x`` are N categorical variables with K classes each,
shape (B, N) int64. A dequantizer draws ``z ~ q(z | x)`` in R^(N D) supported inside the
region of x (decoding is deterministic, ``x = decode(z)``), so for any density ``p(z)``

    log P(x) = log int_{region(x)} p(z) dz >= E_q[log p(z) - log q(z | x)]       (ELBO)

and the importance-weighted bound ``log (1/k) sum_i p(z_i) / q(z_i | x)`` (k samples) is
tighter, non-decreasing in k in expectation, and tends to log P(x).

- :class:`VoronoiDequantizer`: the region of class c of variable n is cell c of a learned
  tessellation of R^D (one per variable); ``q``: a Gaussian ``N(m(x), s(x)^2)`` in R^D (or a
  multivariate Student-t, ``base="student"``) pushed through the cell map ``f_c``
  (closed-form log-det). D is free of K.
- :class:`ArgmaxDequantizer` (binary argmax, Hoogeboom et al. 2021): class c's binary code
  ``b in {0, 1}^D``, ``D = ceil(log2 K)``, picks an orthant; ``z_d = (2 b_d - 1)
  softplus(eps_d)``. These orthants are the Voronoi cells of the fixed anchors ``{-1, 1}^D``.
- :class:`UniformDequantizer`: ordinal, ``z = 2 (x + u) / K - 1``, ``u ~ U[0, 1)^N`` (D = 1).

The conditional Gaussians of Voronoi and argmax come from the same MLP of the one-hot x
(:func:`flowfields.nn.mlp`). :class:`DequantizedFlow` pairs any of them with a zuko flow
``p(z)`` and gives the ELBO, the IWAE bound and bits per variable. Where the regions tile a
box (Voronoi: the tessellation's box; uniform: ``[-1, 1]^N``), the zuko flow models
``w = logit((z - lower) / (upper - lower))``, so that ``p(z)`` is a density on the box, as in
the paper: a flow on all of R^(N D) would waste the mass it puts outside the box, a loss in
the bound that argmax (whose orthants tile R^D) does not pay.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.voronoi.mixture import (
    check_student_base,
    multivariate_t_log_prob,
    register_log_df,
    sample_multivariate_t,
)
from flowfields.voronoi.tessellation import (
    VoronoiTessellation,
    _check_cells,
    cell_map,
    cell_map_inverse,
    nearest_anchor,
)

__all__ = [
    "DEQUANTIZERS",
    "ArgmaxDequantizer",
    "DequantizedFlow",
    "Dequantizer",
    "UniformDequantizer",
    "VoronoiDequantizer",
    "make_dequantizer",
]

_LOG_2PI = math.log(2 * math.pi)


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


class Dequantizer(nn.Module, abc.ABC):
    """Base: ``sample(x, n_samples) -> (z, log_q)``, ``decode(z) -> x``.

    Attributes:
        n_vars (N), n_classes (K), dim (D per variable); ``features = N * D``.
    """

    _dtype_probe: Tensor

    def __init__(self, n_vars: int, n_classes: int, dim: int) -> None:
        super().__init__()
        check(isinstance(n_vars, int) and n_vars >= 1, "n_vars", n_vars, "an integer >= 1")
        check(isinstance(n_classes, int) and n_classes >= 2, "n_classes", n_classes, "K >= 2")
        check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
        self.n_vars, self.n_classes, self.dim = n_vars, n_classes, dim
        self.register_buffer("_dtype_probe", torch.zeros(()))

    @property
    def features(self) -> int:
        return self.n_vars * self.dim

    def check_z(self, z: Tensor) -> None:
        """Raise FlowfieldsError unless ``z`` is a real tensor of shape (..., N * D)."""
        check(
            isinstance(z, Tensor) and z.ndim >= 1 and z.shape[-1] == self.features,
            "z",
            z,
            f"a tensor of shape (..., {self.features}) (n_vars * dim = {self.n_vars} * {self.dim})",
        )
        check(z.is_floating_point(), "z", z, "a real floating-point tensor")

    def check_x(self, x: Tensor) -> None:
        """Raise FlowfieldsError unless ``x`` is (B, N) integer classes in 0..K-1."""
        check(isinstance(x, Tensor), "x", x, f"an integer tensor of shape (B, {self.n_vars})")
        check(x.ndim == 2 and x.shape[1] == self.n_vars, "x", x, f"shape (B, {self.n_vars})")
        _check_cells(x, self.n_classes, "x")

    def sample(
        self, x: Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``z ~ q(. | x)``: (n_samples, B, N * D) and ``log q(z | x)``: (n_samples, B)."""
        self.check_x(x)
        check(isinstance(n_samples, int) and n_samples >= 1, "n_samples", n_samples, "an int >= 1")
        return self._sample(x, n_samples, generator)

    @abc.abstractmethod
    def _sample(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``(z, log q(z | x))`` for checked ``x``: see :meth:`sample`."""

    @abc.abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """The classes ``x`` (..., N) of ``z`` (..., N * D); -1 marks an invalid code (argmax:
        a code >= K; uniform: outside [-1, 1))."""

    def log_q(self, z: Tensor, x: Tensor) -> Tensor:
        """``log q(z | x)`` at given ``z`` (..., B, N * D) for ``x`` (B, N): (..., B);
        ``-inf`` where ``z`` lies outside the region of ``x``."""
        self.check_x(x)
        check(
            isinstance(z, Tensor) and z.ndim >= 2 and z.shape[-1] == self.features,
            "z",
            z,
            f"a tensor of shape (..., B, {self.features})",
        )
        lq = self._log_q(z, x)
        own = (self._region(z) == x).all(-1)
        return torch.where(own, lq, torch.full_like(lq, -float("inf")))

    @abc.abstractmethod
    def _log_q(self, z: Tensor, x: Tensor) -> Tensor:
        """``log q(z | x)`` for checked inputs, before the region mask: see :meth:`log_q`."""

    def _region(self, z: Tensor) -> Tensor:
        """The class of the region (the support of q) holding ``z``: decoding by default."""
        return self.decode(z)

    def support(self) -> tuple[Tensor, Tensor] | None:
        """The box ``(lower, upper)``, each (N * D,), that the regions of all classes tile, or
        None when they tile all of R^(N D) (argmax)."""
        return None

    def to_unbounded(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``w = logit((z - lower) / (upper - lower))`` per coordinate (identity when the
        regions tile R^(N D)) and ``log |det dw/dz|`` (...): the flow ``p`` is a density of
        ``w``, so ``p(z)`` lives on the union of the regions and no mass is lost outside it
        (Chen et al. put their flow on the box the same way). z (..., N * D)."""
        box = self.support()
        if box is None:
            return z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        lo, hi = box
        eps = torch.finfo(z.dtype).eps
        inside = ((z >= lo) & (z <= hi)).all(-1)
        u = ((z - lo) / (hi - lo)).clamp(eps, 1 - eps)
        w = torch.log(u) - torch.log1p(-u)
        ladj = -(torch.log(u) + torch.log1p(-u) + torch.log(hi - lo)).sum(-1)
        return w, torch.where(inside, ladj, torch.full_like(ladj, -float("inf")))


class _GaussianConditional(Dequantizer):
    """``eps = m(x) + s(x) t`` in R^(N, D), ``(m, log s) = MLP(one-hot x)``, with ``t`` the
    standard normal (``base="normal"``) or, per variable, the standard multivariate
    Student-t on R^D with ``nu = df`` (``base="student"``; :func:`~flowfields.voronoi.
    multivariate_t_log_prob`, :func:`~flowfields.voronoi.sample_multivariate_t`, the same
    machinery as :class:`~flowfields.voronoi.VoronoiMixture`'s base)."""

    def __init__(
        self,
        n_vars: int,
        n_classes: int,
        dim: int,
        hidden: int,
        depth: int,
        *,
        base: str = "normal",
        df: float = 1.0,
        learn_df: bool = False,
    ) -> None:
        super().__init__(n_vars, n_classes, dim)
        from flowfields.nn import mlp

        check_student_base(base, df, learn_df)
        self.net = mlp(n_vars * n_classes, 2 * n_vars * dim, hidden, depth)
        self.base = base
        self.log_df: Tensor  # set by register_log_df
        register_log_df(self, df, learn_df)

    @property
    def df(self) -> Tensor:
        """The Student-t's degrees of freedom ``nu`` (a 0-d tensor; unused if normal)."""
        return self.log_df.exp()

    def _gauss(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Location and log-scale of ``eps``, each (B, N, D)."""
        onehot = F.one_hot(x, self.n_classes).to(self._dtype_probe.dtype).flatten(1)
        m, log_s = self.net(onehot).view(x.shape[0], self.n_vars, self.dim, 2).unbind(-1)
        return m, log_s

    def _log_std(self, t: Tensor) -> Tensor:
        """Log-density of the standardised ``t`` (..., N, D), summed over (N, D): (...)."""
        if self.base == "normal":
            return (-0.5 * (t.square() + _LOG_2PI)).sum((-1, -2))
        return multivariate_t_log_prob(t, self.df.to(t.dtype)).sum(-1)

    def _log_normal(self, eps: Tensor, x: Tensor) -> Tensor:
        """``log q_eps(eps | x)`` summed over (N, D): eps (..., B, N, D) -> (..., B)."""
        m, log_s = self._gauss(x)
        return self._log_std((eps - m) / log_s.exp()) - log_s.sum((-1, -2))

    def _eps(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``eps`` (S, B, N, D) and ``log q_eps(eps | x)`` summed over (N, D): (S, B)."""
        m, log_s = self._gauss(x)
        if self.base == "normal":
            t = _randn((n_samples, *m.shape), m, generator)
        else:
            t = sample_multivariate_t(
                (n_samples, *m.shape[:-1]),
                self.dim,
                self.df,
                generator=generator,
                dtype=m.dtype,
                device=m.device,
            )
        eps = m + log_s.exp() * t
        return eps, self._log_std(t) - log_s.sum((-1, -2))


class VoronoiDequantizer(_GaussianConditional):
    """Voronoi dequantization: class c of variable n lives in cell c of tessellation n.

    Semi-Discrete Normalizing Flows through Differentiable Tessellation (arXiv:2203.06832).
    ``z_n = f_{x_n}(eps_n)`` (:func:`~flowfields.voronoi.cell_map`), ``log q = log N(eps) -
    log |det f'|``. Anchors start at the k-means centres of standard-normal points (the same
    for every variable), so that the flow's initial N(0, I) gives the classes similar masses,
    inside the learnable box ``[-box, box]^D`` (default 3: the box holds most of N(0, I)).

    Args:
        n_vars, n_classes, dim: N, K and the embedding dimension D (free of K).
        hidden, depth: the conditioning MLP.
        box: initial half-width of the box.
        base: the law of ``t = (eps - m) / s``: ``"normal"`` (the default, the paper's) or
            ``"student"``, the standard multivariate Student-t on R^D with ``df`` degrees of
            freedom per variable (the machinery of :class:`~flowfields.voronoi.VoronoiMixture`).
            At relative distance ``g`` from a face of the cell, q behaves like
            ``exp(-c / g^2)`` with the normal and like ``g^(df - 1)`` with the t, so the t lets
            q keep mass at the faces, where the box flow ``p(z)`` is smooth and positive.
        df: ``nu > 0`` (its initial value when ``learn_df``); learn_df: learn ``log nu``
            (pathwise gradient through the Gamma draw).
    """

    def __init__(
        self,
        n_vars: int,
        n_classes: int,
        dim: int = 2,
        *,
        hidden: int = 64,
        depth: int = 2,
        box: float = 3.0,
        base: str = "normal",
        df: float = 1.0,
        learn_df: bool = False,
    ) -> None:
        super().__init__(n_vars, n_classes, dim, hidden, depth, base=base, df=df, learn_df=learn_df)
        from flowfields.linalg import kmeans

        check(box > 0, "box", box, "a half-width > 0")
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        pts = torch.randn(max(64 * n_classes, 512), dim, generator=g).clamp(-0.9 * box, 0.9 * box)
        centres = kmeans(pts, n_classes, generator=g, init="k-means++").centres
        anchors = centres.expand(n_vars, n_classes, dim).clone()
        self.tess = VoronoiTessellation(anchors, -box, box)

    def _sample(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        eps, log_n = self._eps(x, n_samples, generator)
        t = self.tess
        k = x.expand(n_samples, *x.shape)
        z, logdet = cell_map(eps, k, t.anchors, t.lower, t.upper)
        return z.flatten(-2), log_n - logdet.sum(-1)

    def decode(self, z: Tensor) -> Tensor:
        self.check_z(z)
        zz = z.unflatten(-1, (self.n_vars, self.dim))
        return nearest_anchor(zz, self.tess.anchors)

    def _log_q(self, z: Tensor, x: Tensor) -> Tensor:
        t = self.tess
        zz = z.unflatten(-1, (self.n_vars, self.dim))
        zz = torch.minimum(torch.maximum(zz, t.lower), t.upper)
        eps, ld_inv = cell_map_inverse(zz, x.expand(zz.shape[:-1]), t.anchors, t.lower, t.upper)
        return self._log_normal(eps, x) + ld_inv.sum(-1)

    def _region(self, z: Tensor) -> Tensor:
        return self.decode_in_box(z)

    def support(self) -> tuple[Tensor, Tensor]:
        return self.tess.lower.flatten(), self.tess.upper.flatten()

    def decode_in_box(self, z: Tensor) -> Tensor:
        """Like :meth:`decode`, with -1 for variables whose point lies outside the box."""
        self.check_z(z)
        zz = z.unflatten(-1, (self.n_vars, self.dim))
        c = nearest_anchor(zz, self.tess.anchors)
        return torch.where(self.tess.in_box(zz), c, torch.full_like(c, -1))


class ArgmaxDequantizer(_GaussianConditional):
    """Binary argmax dequantization: ``D = ceil(log2 K)``, class c's bits pick an orthant.

    ``z_d = (2 b_d(c) - 1) softplus(eps_d)``, ``log q = log N(eps) - sum_d log sigmoid(eps_d)``
    (Hoogeboom, Cohen, Tomczak, "Learning Discrete Distributions by Dequantization", 2021, the
    binary variant; the baseline of arXiv:2203.06832). Codes >= K decode to -1.
    """

    powers: Tensor

    def __init__(self, n_vars: int, n_classes: int, *, hidden: int = 64, depth: int = 2) -> None:
        dim = max(1, math.ceil(math.log2(n_classes)))
        super().__init__(n_vars, n_classes, dim, hidden, depth)
        self.register_buffer("powers", 2 ** torch.arange(dim))

    def _sample(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        eps, log_n = self._eps(x, n_samples, generator)
        bits = (x.unsqueeze(-1) // self.powers) % 2  # (B, N, D)
        sign = (2 * bits - 1).to(eps.dtype)
        z = sign * F.softplus(eps)
        return z.flatten(-2), log_n - F.logsigmoid(eps).sum((-1, -2))

    def decode(self, z: Tensor) -> Tensor:
        self.check_z(z)
        bits = (z.unflatten(-1, (self.n_vars, self.dim)) > 0).long()
        code = (bits * self.powers).sum(-1)
        return torch.where(code < self.n_classes, code, torch.full_like(code, -1))

    def _log_q(self, z: Tensor, x: Tensor) -> Tensor:
        a = z.unflatten(-1, (self.n_vars, self.dim)).abs().clamp_min(torch.finfo(z.dtype).tiny)
        eps = a + torch.log(-torch.expm1(-a))  # softplus^{-1}(|z|)
        return self._log_normal(eps, x) - F.logsigmoid(eps).sum((-1, -2))


class UniformDequantizer(Dequantizer):
    """Uniform (ordinal) dequantization: ``z = 2 (x + u) / K - 1``, ``u ~ U[0, 1)^N``, D = 1.

    ``log q(z | x) = N log(K / 2)``; decoding is ``floor((z + 1) K / 2)``.
    """

    def __init__(self, n_vars: int, n_classes: int) -> None:
        super().__init__(n_vars, n_classes, 1)

    def _sample(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        probe = self._dtype_probe
        dev = generator.device if generator is not None else x.device
        u = torch.rand((n_samples, *x.shape), generator=generator, dtype=probe.dtype, device=dev)
        z = 2 * (x.to(probe.dtype) + u.to(x.device)) / self.n_classes - 1
        log_q = self.n_vars * math.log(self.n_classes / 2)
        return z, torch.full(z.shape[:2], log_q, dtype=z.dtype, device=z.device)

    def decode(self, z: Tensor) -> Tensor:
        self.check_z(z)
        c = torch.floor((z + 1) * self.n_classes / 2).long()
        return torch.where((c >= 0) & (c < self.n_classes), c, torch.full_like(c, -1))

    def _log_q(self, z: Tensor, x: Tensor) -> Tensor:
        log_q = self.n_vars * math.log(self.n_classes / 2)
        return torch.full(z.shape[:-1], log_q, dtype=z.dtype, device=z.device)

    def support(self) -> tuple[Tensor, Tensor]:
        one = torch.ones(
            self.n_vars, dtype=self._dtype_probe.dtype, device=self._dtype_probe.device
        )
        return -one, one


#: Dequantizers :func:`make_dequantizer` builds.
DEQUANTIZERS = ("voronoi", "argmax", "uniform")


def make_dequantizer(
    kind: str,
    n_vars: int,
    n_classes: int,
    *,
    dim: int = 2,
    hidden: int = 64,
    depth: int = 2,
    base: str = "normal",
    df: float = 1.0,
    learn_df: bool = False,
) -> Dequantizer:
    """One of :data:`DEQUANTIZERS` (``dim``, ``base``, ``df``, ``learn_df`` are used by
    ``"voronoi"`` only, and checked for every kind)."""
    check(kind in DEQUANTIZERS, "kind", kind, f"one of {DEQUANTIZERS}")
    check_student_base(base, df, learn_df)
    if kind == "voronoi":
        return VoronoiDequantizer(
            n_vars,
            n_classes,
            dim,
            hidden=hidden,
            depth=depth,
            base=base,
            df=df,
            learn_df=learn_df,
        )
    if kind == "argmax":
        return ArgmaxDequantizer(n_vars, n_classes, hidden=hidden, depth=depth)
    return UniformDequantizer(n_vars, n_classes)


class DequantizedFlow(nn.Module):
    """A flow ``p(z)`` on the dequantized space: bounds on ``log P(x)`` of categorical data.

    Semi-Discrete Normalizing Flows through Differentiable Tessellation (arXiv:2203.06832).

    Args:
        dequantizer: a :class:`Dequantizer`.
        flow: a zuko flow on R^(dequantizer.features) (unconditional), e.g.
            :func:`flowfields.voronoi.make_flow`.
    """

    def __init__(self, dequantizer: Dequantizer, flow: nn.Module) -> None:
        super().__init__()
        check(isinstance(dequantizer, Dequantizer), "dequantizer", dequantizer, "a Dequantizer")
        check(callable(flow), "flow", flow, "a zuko flow (flow() -> a distribution)")
        event = getattr(flow(), "event_shape", None)
        check(
            event is None or tuple(event) == (dequantizer.features,),
            "flow",
            f"a flow on event shape {tuple(event) if event is not None else None}",
            f"a flow on R^{dequantizer.features} (the dequantizer's n_vars * dim)",
        )
        self.dequantizer, self.flow = dequantizer, flow

    def log_weights(
        self, x: Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """``log p(z_i) - log q(z_i | x)`` for ``z_i ~ q(. | x)``: (n_samples, B)."""
        z, log_q = self.dequantizer.sample(x, n_samples, generator=generator)
        return self.log_prob_z(z) - log_q

    def log_prob_z(self, z: Tensor) -> Tensor:
        """``log p(z)`` of dequantized points ``z`` (..., N * D): the flow's density of
        ``w = dequantizer.to_unbounded(z)`` times ``|det dw/dz|``; (...)."""
        self.dequantizer.check_z(z)
        w, ladj = self.dequantizer.to_unbounded(z)
        return self.flow().log_prob(w) + ladj

    def elbo(
        self, x: Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Monte Carlo ELBO (nats) of every row of ``x`` (B, N): (B,)."""
        return self.log_weights(x, n_samples, generator=generator).mean(0)

    def iwae(self, x: Tensor, k: int = 16, *, generator: torch.Generator | None = None) -> Tensor:
        """The importance-weighted bound with ``k`` samples (nats): (B,)."""
        w = self.log_weights(x, k, generator=generator)
        return torch.logsumexp(w, 0) - math.log(k)

    def bits_per_var(self, x: Tensor, k: int = 64, *, batch: int = 512) -> float:
        """``-mean IWAE_k / (N log 2)`` over the rows of ``x``: an upper bound (in expectation)
        on the model's NLL in bits per variable."""
        with torch.no_grad():
            total = sum(float(self.iwae(xb, k).sum()) for xb in x.split(batch))
        return -total / (x.shape[0] * x.shape[1] * math.log(2))
