"""Voronoi mixtures: a disjoint mixture whose likelihood evaluates one component.

Chen, Amos, Nickel, "Semi-Discrete Normalizing Flows through Differentiable Tessellation"
(arXiv:2203.06832), section 5. Component k is supported on cell k of a tessellation of a
box, with density the push-forward of a flow ``p(x | k)`` on R^D through the cell map
``f_k`` (:func:`~flowfields.voronoi.cell_map`, per-cell log-scale ``theta_k``). The cells are
disjoint, so

    log p(y) = log pi_k + log p(f_k^{-1}(y) | k) + log |det d f_k^{-1} / dy|,  k = nearest(y),

exact and normalised over the box (zero outside), with one component evaluated per point:
the cost is the nearest-anchor search and the ray cast (O(K D)) plus one flow evaluation,
where a standard K-component mixture (:class:`FlowMixture`) evaluates K flows.

As a layer in a stack of flows, :meth:`VoronoiMixture.encode` returns ``(x, k, log_det)``:
``log p(y) = log_det + log p(x | k)``. :class:`VoronoiMixtureFlow` is such a stack on all of
R^D, as in the paper's toys: a flow, a sigmoid onto the box, the Voronoi mixture layer, and
the per-cell flow conditioned on k.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.density import check_points, check_sample_count, weights_dtype
from flowfields.errors import check
from flowfields.voronoi.flows import make_flow, sample_flow
from flowfields.voronoi.tessellation import (
    VoronoiTessellation,
    cell_map,
    cell_map_inverse,
    nearest_anchor,
    ray_length,
)

__all__ = [
    "MIXTURE_BASES",
    "FlowMixture",
    "VoronoiMixture",
    "VoronoiMixtureFlow",
    "check_student_base",
    "multivariate_t_log_prob",
    "polar_cell_nodes",
    "polar_component_masses",
    "register_log_df",
    "sample_multivariate_t",
]

#: Bases of the per-cell flow :class:`VoronoiMixture` offers.
MIXTURE_BASES = ("normal", "student")


def multivariate_t_log_prob(z: Tensor, df: Tensor | float) -> Tensor:
    """Log-density of the standard multivariate Student-t on R^D at ``z`` (..., D), (...):

        log Gamma((nu + D) / 2) - log Gamma(nu / 2) - (D / 2) log(nu pi)
            - ((nu + D) / 2) log(1 + |z|^2 / nu),

    radially symmetric (identity scale, zero location), ``df = nu > 0`` (a float or a tensor
    broadcastable to (...)). Its tail ``|z|^-(nu + D)`` is what keeps a cell's density
    positive at the faces (see :class:`VoronoiMixture`).
    """
    check(isinstance(z, Tensor) and z.ndim >= 1, "z", z, "a tensor of shape (..., D)")
    if not isinstance(df, Tensor):
        check(
            isinstance(df, (int, float)) and math.isfinite(df) and df > 0,
            "df",
            df,
            "a finite number > 0 (or a tensor of them)",
        )
    nu = torch.as_tensor(df, dtype=z.dtype, device=z.device)
    D = z.shape[-1]
    half = (nu + D) / 2
    norm = torch.lgamma(half) - torch.lgamma(nu / 2) - (D / 2) * torch.log(nu * math.pi)
    return norm - half * torch.log1p(z.square().sum(-1) / nu)


def check_student_base(
    base: str, df: Any, learn_df: Any, names: tuple[str, str, str] = ("base", "df", "learn_df")
) -> None:
    """Raise FlowfieldsError unless ``base`` is one of :data:`MIXTURE_BASES`, ``df`` a finite
    number > 0 and ``learn_df`` a bool that is False unless ``base == "student"`` (the checks
    of every Student-t option: :class:`VoronoiMixture`, the Voronoi dequantizer and their
    experiments' configs); ``names``: the three arguments' names in the error."""
    nb, nd, nl = names
    check(base in MIXTURE_BASES, nb, base, f"one of {MIXTURE_BASES}")
    check(
        isinstance(df, (int, float)) and not isinstance(df, bool) and math.isfinite(df) and df > 0,
        nd,
        df,
        "a finite number > 0 (the Student-t's degrees of freedom)",
    )
    check(isinstance(learn_df, bool), nl, learn_df, "a bool")
    check(not learn_df or base == "student", nl, learn_df, f"False unless {nb}='student'")


def register_log_df(module: nn.Module, df: float, learn_df: bool) -> None:
    """Give ``module`` its Student-t ``log_df``: a parameter if ``learn_df``, else a float64
    buffer (so that a float64 copy evaluates the exact df). Shared by :class:`VoronoiMixture`
    and the Voronoi dequantizer; read it back as ``module.log_df.exp()``."""
    if learn_df:
        module.log_df = nn.Parameter(torch.tensor(math.log(float(df))))
    else:
        module.register_buffer("log_df", torch.tensor(math.log(float(df)), dtype=torch.float64))


def sample_multivariate_t(
    shape: tuple[int, ...],
    dim: int,
    df: Tensor,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
) -> Tensor:
    """Draws (*shape, dim) of the standard multivariate Student-t on R^dim
    (:func:`multivariate_t_log_prob`): ``z = eps / sqrt(w)``, ``eps ~ N(0, I)``,
    ``w ~ Gamma(nu / 2, rate nu / 2)`` (one w per draw).

    ``eps`` comes from ``generator`` (on its device, the CPU without one); ``w`` from the CPU
    under a seed drawn from ``generator`` (torch's Gamma takes no generator), so a seeded
    generator makes the draws reproducible. ``w`` is a reparameterised Gamma draw: a ``df``
    that requires grad gets the pathwise gradient (pass ``df.detach()`` for none).
    """
    dev = generator.device if generator is not None else torch.device("cpu")
    eps = torch.randn((*shape, dim), generator=generator, dtype=dtype, device=dev)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev))
    nu = df.to("cpu", dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        w = torch.distributions.Gamma(nu / 2, nu / 2).rsample(shape)
    out = eps.to(w.device) / w.sqrt()[..., None]
    return out.to(device) if device is not None else out


def polar_cell_nodes(
    anchors: Tensor, lower: Tensor, upper: Tensor, k: int, n_phi: int, n_alpha: int
) -> tuple[Tensor, Tensor]:
    """Float64 polar quadrature of cell ``k`` of a 2-D tessellation (anchors (K, 2), box
    ``lower``, ``upper`` (2,)): points ``y`` (n_phi * n_alpha, 2) and weights (same length),
    so that ``sum_i w_i f(y_i)`` approximates ``int_cell f``.

    ``y = a_k + alpha lam*(phi) (cos phi, sin phi)``, ``dy = lam*^2 alpha dalpha dphi``:
    Gauss-Legendre in u with ``alpha = 1 - (1 - u)^4`` (nodes packed at the faces, where the
    pushed-forward densities have their sharp shells) and the midpoint rule in phi (the
    integrand has kinks at the cell's vertices).
    """
    import numpy as np

    f64 = torch.float64
    a, lo, hi = anchors.to(f64), lower.to(f64), upper.to(f64)
    u_np, w_np = np.polynomial.legendre.leggauss(n_alpha)
    u, w = torch.tensor((u_np + 1) / 2, dtype=f64), torch.tensor(w_np / 2, dtype=f64)
    alpha, dalpha = 1 - (1 - u) ** 4, 4 * (1 - u) ** 3 * w
    phi = (torch.arange(n_phi, dtype=f64) + 0.5) * 2 * math.pi / n_phi
    d = torch.stack([phi.cos(), phi.sin()], -1)
    lam = ray_length(d, torch.full((n_phi,), k), a, lo, hi)
    y = (a[k] + (alpha[None, :, None] * lam[:, None, None]) * d[:, None, :]).reshape(-1, 2)
    wts = lam[:, None] ** 2 * alpha[None] * dalpha[None] * (2 * math.pi / n_phi)
    return y, wts.reshape(-1)


def _draw_components(logits: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    probs = torch.softmax(logits.detach().double(), 0).cpu()
    return torch.multinomial(probs, n, replacement=True, generator=generator).to(logits.device)


class VoronoiMixture(nn.Module):
    """Disjoint mixture on a Voronoi tessellation of a box (a :class:`DensityModel`).

    Semi-Discrete Normalizing Flows through Differentiable Tessellation (arXiv:2203.06832).

    Args:
        tessellation: a :class:`~flowfields.voronoi.VoronoiTessellation` with anchors (K, D)
            (no groups); e.g. :meth:`VoronoiTessellation.from_points` (k-means anchors).
        context: size of the learned per-cell embedding conditioning the flow (0: one flow
            shared by all cells, differing only through ``theta_k``).
        flow: a zuko flow on R^D with that context size; default :func:`make_flow`
            ``(D, context)``.
        base: the base of the per-cell flow: ``"normal"`` (the flow's own standard normal;
            the default) or ``"student"``, the standard multivariate Student-t with ``df``
            degrees of freedom (:func:`multivariate_t_log_prob`) in place of the flow's normal.
            At relative distance ``g = 1 - alpha`` from a face the latent is ``|x| ~ 1 / g``
            and the inverse map's log-det is ``-(D + 1) log g``: a normal base gives a cell
            density ``~ exp(-c / g^2)``, so data with density at the faces have an infinite
            expected NLL; the Student-t's ``|x|^-(nu + D)`` tail gives ``~ g^(nu - 1)``
            (positive and finite at the faces for ``nu = 1``). The default stays ``"normal"``:
            on ``voronoi-mixture`` quick the t-base made the test NLL finite and stable in
            the test size, but the layer still lost to the flow alone (docs/voronoi.md).
        df: ``nu > 0`` of the Student-t base (its initial value when ``learn_df``).
        learn_df: learn ``log nu`` with the other parameters (``"student"`` only).
    """

    def __init__(
        self,
        tessellation: VoronoiTessellation,
        *,
        context: int = 4,
        flow: Any = None,
        base: str = "normal",
        df: float = 1.0,
        learn_df: bool = False,
    ) -> None:
        super().__init__()
        check_student_base(base, df, learn_df)
        check(
            isinstance(tessellation, VoronoiTessellation) and tessellation.raw.ndim == 2,
            "tessellation",
            tessellation,
            "a VoronoiTessellation with anchors of shape (K, D)",
        )
        K, D = tessellation.n_cells, tessellation.dim
        self.tess = tessellation
        self.flow = flow if flow is not None else make_flow(D, context)
        self.context = context
        self.logits = nn.Parameter(torch.zeros(K))
        self.theta = nn.Parameter(torch.zeros(K))
        if context:
            self.embedding = nn.Parameter(0.5 * torch.randn(K, context))
        self.event_shape = (D,)
        self.base = base
        self.log_df: Tensor  # set by register_log_df
        register_log_df(self, df, learn_df)

    @property
    def n_cells(self) -> int:
        return self.tess.n_cells

    @property
    def df(self) -> Tensor:
        """The Student-t base's degrees of freedom ``nu`` (a 0-d tensor; unused if normal)."""
        return self.log_df.exp()

    def _dist(self, k: Tensor) -> Any:
        return self.flow(self.embedding[k]) if self.context else self.flow()

    def cell_log_prob(self, x: Tensor, k: Tensor) -> Tensor:
        """``log p(x | k)`` of latents ``x`` (B, D) of cells ``k`` (B,): the per-cell flow with
        the chosen base (the normal: the zuko flow's own ``log_prob``)."""
        dist = self._dist(k)
        if self.base == "normal":
            return dist.log_prob(x)
        z, ladj = dist.transform.call_and_ladj(x)
        return multivariate_t_log_prob(z, self.df.to(z.dtype)) + ladj

    def _sample_latent(self, k: Tensor, generator: torch.Generator | None) -> Tensor:
        ctx = self.embedding[k] if self.context else None
        if self.base == "normal":
            return sample_flow(self.flow, k.shape[0], ctx, generator=generator)
        z = sample_multivariate_t(
            (k.shape[0],),
            self.event_shape[0],
            self.df.detach(),
            generator=generator,
            dtype=self.logits.dtype,
            device=self.logits.device,
        )
        dist = self._dist(k)
        return dist.transform.inv(z)

    def log_pi(self) -> Tensor:
        """Mixture weights ``log pi_k``, (K,)."""
        return torch.log_softmax(self.logits, 0)

    def encode(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``k = nearest(y)``, ``x = f_k^{-1}(y)`` and ``log pi_k + log |det dx/dy|``.

        ``y`` (B, D) inside the box; returns x (B, D), k (B,), log_det (B,).
        """
        t = self.tess
        lo, hi = t.lower, t.upper
        yc = torch.minimum(torch.maximum(y, lo), hi)  # off-box points: finite, masked later
        k = nearest_anchor(yc, t.anchors)
        x, ladj = cell_map_inverse(yc, k, t.anchors, lo, hi, self.theta[k])
        return x, k, self.log_pi()[k] + ladj

    def log_prob(self, y: Tensor) -> Tensor:
        """Exact log-density (nats) of ``y`` (B, D), (B,); ``-inf`` outside the box."""
        check_points(y, self.event_shape, "y", dtype=weights_dtype(self))
        x, k, log_det = self.encode(y)
        lp = log_det + self.cell_log_prob(x, k)
        return torch.where(self.tess.in_box(y), lp, torch.full_like(lp, -float("inf")))

    def component_log_prob(self, y: Tensor, k: int) -> Tensor:
        """``log p_k(y)`` of component k alone (without ``log pi_k``), ``-inf`` off cell k."""
        check_points(y, self.event_shape, "y", dtype=weights_dtype(self))
        check(isinstance(k, int) and 0 <= k < self.n_cells, "k", k, f"in 0..{self.n_cells - 1}")
        x, kk, log_det = self.encode(y)
        lp = log_det - self.log_pi()[kk] + self.cell_log_prob(x, kk)
        own = (kk == k) & self.tess.in_box(y)
        return torch.where(own, lp, torch.full_like(lp, -float("inf")))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, D): ``k ~ pi``, ``x ~ p(x | k)``, ``y = f_k(x)``."""
        check_sample_count(n)
        k = _draw_components(self.logits, n, generator)
        x = self._sample_latent(k, generator)
        t = self.tess
        y, _ = cell_map(x, k, t.anchors, t.lower, t.upper, self.theta[k])
        return y


def polar_component_masses(
    mixture: VoronoiMixture, n_phi: int = 2000, n_alpha: int = 300
) -> Tensor:
    """Mass of every component of a 2-D :class:`VoronoiMixture` over its own cell, (K,)
    float64 on the CPU (1 for an exact layer), by float64 polar quadrature about each anchor
    (:func:`polar_cell_nodes`: Gauss-Legendre in the radius with the nodes packed at the
    faces, the midpoint rule in the angle). A float64 copy of the mixture is evaluated; the
    mixture is not changed.
    """
    import copy

    check(isinstance(mixture, VoronoiMixture), "mixture", mixture, "a VoronoiMixture")
    check(mixture.tess.dim == 2, "mixture", mixture, "a mixture on R^2 (D = 2)")
    check(isinstance(n_phi, int) and n_phi >= 1, "n_phi", n_phi, "an integer >= 1")
    check(isinstance(n_alpha, int) and n_alpha >= 1, "n_alpha", n_alpha, "an integer >= 1")
    m = copy.deepcopy(mixture).to("cpu", torch.float64)
    t = m.tess
    out = []
    with torch.no_grad():
        a, lo, hi, theta = t.anchors, t.lower, t.upper, m.theta
        for k in range(t.n_cells):
            y, wts = polar_cell_nodes(a, lo, hi, k, n_phi, n_alpha)
            ks = torch.full((y.shape[0],), k)
            x, ld = cell_map_inverse(y, ks, a, lo, hi, theta[ks])
            dens = (m.cell_log_prob(x, ks) + ld).exp()
            out.append(float((dens * wts).sum()))
    return torch.tensor(out, dtype=torch.float64)


class VoronoiMixtureFlow(nn.Module):
    """A flow, a sigmoid onto the box, and a :class:`VoronoiMixture` (a density on R^D).

    Semi-Discrete Normalizing Flows through Differentiable Tessellation (arXiv:2203.06832):
    the Voronoi mixture as one layer of a stack. With ``u = T(y)`` the zuko flow ``pre``'s
    transform and ``b = lower + (upper - lower) sigmoid(u)`` inside the mixture's box,

        log p(y) = log |det dT/dy| + sum_d log((upper - lower) s(u_d) s(-u_d)) + log p_mix(b),

    exact and normalised over R^D; one component per likelihood.

    Args:
        mixture: the :class:`VoronoiMixture` (its box is the sigmoid's target).
        pre: an unconditional zuko flow on R^D whose transform maps data to ``u``, or None
            (identity).
    """

    def __init__(self, mixture: VoronoiMixture, pre: Any = None) -> None:
        super().__init__()
        check(isinstance(mixture, VoronoiMixture), "mixture", mixture, "a VoronoiMixture")
        self.mixture, self.pre = mixture, pre
        self.event_shape = mixture.event_shape

    def _to_box(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``b`` (B, D) in the box and ``log |det db/dy|`` (B,)."""
        ladj = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        u = y
        if self.pre is not None:
            u, ladj = self.pre().transform.call_and_ladj(y)
        lo, hi = self.mixture.tess.lower, self.mixture.tess.upper
        b = lo + (hi - lo) * torch.sigmoid(u)
        ls = torch.log(hi - lo) + F.logsigmoid(u) + F.logsigmoid(-u)
        return b, ladj + ls.sum(-1)

    def to_box(self, y: Tensor) -> Tensor:
        """The points ``b`` (B, D) the mixture layer sees for data ``y`` (B, D)."""
        return self._to_box(y)[0]

    def log_prob(self, y: Tensor) -> Tensor:
        """Exact log-density (nats) of ``y`` (B, D) on R^D, (B,)."""
        check_points(y, self.event_shape, "y", dtype=weights_dtype(self))
        b, ladj = self._to_box(y)
        mix = self.mixture
        x, k, log_det = mix.encode(b)
        return ladj + log_det + mix.cell_log_prob(x, k)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, D): ``b ~ p_mix``, ``u = logit`` of b in the box, ``y = T^-1(u)``."""
        b = self.mixture.sample(n, generator=generator)
        lo, hi = self.mixture.tess.lower, self.mixture.tess.upper
        eps = torch.finfo(b.dtype).eps
        v = ((b - lo) / (hi - lo)).clamp(eps, 1 - eps)
        u = torch.log(v) - torch.log1p(-v)
        return u if self.pre is None else self.pre().transform.inv(u)

    @torch.no_grad()
    def init_anchors(self, data: Tensor, *, generator: torch.Generator | None = None) -> None:
        """Anchors at the k-means centres (:func:`flowfields.linalg.kmeans`, k-means++) of the
        data's images ``b`` in the box under the current ``pre`` (the paper's lazy k-means
        initialisation); ``data`` (N, D) with N >= K points."""
        from flowfields.linalg import kmeans

        tess = self.mixture.tess
        check_points(data, self.event_shape, "data", dtype=weights_dtype(self))
        check(data.shape[0] >= tess.n_cells, "data", data, f"at least K = {tess.n_cells} points")
        b = self.to_box(data)
        centres = kmeans(b, tess.n_cells, generator=generator, init="k-means++").centres
        w = (1.0 - 2.0**-16) * tess.half_width
        u = ((centres - tess.centre) / w).clamp(-1 + 2.0**-20, 1 - 2.0**-20)
        tess.raw.copy_(torch.atanh(u))


class FlowMixture(nn.Module):
    """A standard K-component mixture of the same conditional flow (the cost baseline).

    ``p(y) = sum_k pi_k p(y | e_k)`` with one zuko flow conditioned on a learned embedding
    ``e_k`` per component: a likelihood evaluates all K components.

    Args:
        dim: D; n_components: K >= 2; context: the embedding size (>= 1); flow: optional zuko
            flow on R^D with that context.
    """

    def __init__(self, dim: int, n_components: int, *, context: int = 4, flow: Any = None):
        super().__init__()
        check(
            isinstance(n_components, int) and n_components >= 2,
            "n_components",
            n_components,
            "K >= 2",
        )
        check(isinstance(context, int) and context >= 1, "context", context, "an integer >= 1")
        self.flow = flow if flow is not None else make_flow(dim, context)
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.embedding = nn.Parameter(0.5 * torch.randn(n_components, context))
        self.event_shape = (dim,)

    def log_prob(self, y: Tensor) -> Tensor:
        """``log sum_k pi_k p(y | e_k)`` of ``y`` (B, D): (B,), K flow evaluations per point."""
        check_points(y, self.event_shape, "y", dtype=weights_dtype(self))
        B, K = y.shape[0], self.embedding.shape[0]
        yy = y.repeat_interleave(K, 0)
        ctx = self.embedding.repeat(B, 1)
        lp = self.flow(ctx).log_prob(yy).view(B, K)
        return torch.logsumexp(lp + torch.log_softmax(self.logits, 0), 1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, D)."""
        check_sample_count(n)
        k = _draw_components(self.logits, n, generator)
        return sample_flow(self.flow, n, self.embedding[k], generator=generator)
