"""Space-time density/flux pairs that satisfy the continuity equation exactly.

From "Neural Conservation Laws: A Divergence-Free Perspective" (Richter-Powell, Lipman, Chen,
arXiv:2210.01741). A divergence-free field ``u`` on space-time ``R^(1+d)`` (coordinate 0 is t)
gives a density ``ρ = u_0`` and a flux ``j = u_(1:)`` with ``∂_t ρ + div_x j = 0`` identically;
the velocity is ``v = j / ρ``.

- :class:`SpaceTimeDivFree`: the general model, any divergence-free network on ``(t, x)``.
  ``ρ`` can take either sign, and total mass is conserved only if the flux decays at infinity
  (or the domain is periodic: ``periodic=True`` makes space the flat torus ``[0, 2π)^d``).
- :class:`PositiveDensityFlux`: the paper's positivity remedy. The time component of the
  space-time vector potential is a mixture of Gaussian Newtonian potentials,
  ``b_0 = sum_k w_k Φ_{σ_k(t)}(x - μ_k(t))`` (subharmonic), and the spatial part contributes no
  ``∂_t div_x`` term, so ``ρ = Δ_x b_0 = sum_k w_k N(x; μ_k(t), σ_k(t)² I) >= 0``. The flux is
  ``-∂_t ∇_x b_0`` plus divergence-free (in x) terms, which do not change ``div_x j``.

Time convention: t in [0, 1]; for transport problems the source is at t = 0, the target at t = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from flowfields.conservation.potentials import gaussian_log_density, gaussian_newtonian_grad
from flowfields.density import check_points, check_sample_count, weights_dtype
from flowfields.errors import check, check_finite, check_shape
from flowfields.integrate.quadrature import gauss_legendre
from flowfields.linalg.kmeans import kmeans
from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField
from flowfields.nn.layers import mlp
from flowfields.nn.time import broadcast_time

__all__ = [
    "MixtureMarginal",
    "PositiveDensityFlux",
    "SpaceTimeDivFree",
    "continuity_residual",
    "kinetic_energy",
]

RhoFlux = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _time_vector(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a finite (B,) tensor matching x's batch, dtype and device."""
    t = broadcast_time(t, x)
    _check_finite_plain(t, "t")
    return t


def _check_finite_plain(value: Tensor, name: str) -> None:
    """check_finite, skipped under torch.func transforms (no data-dependent checks there)."""
    if not torch._C._functorch.is_functorch_wrapped_tensor(value):
        check_finite(value, name)


def _check_points(x: Tensor, dim: int, module: nn.Module | None = None) -> None:
    check_points(x, (dim,), dtype=weights_dtype(module), finite=False)
    _check_finite_plain(x, "x")


class SpaceTimeDivFree(nn.Module):
    """Density and flux from a divergence-free network on space-time: ``(ρ, j) = u(t, x)``.

    Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741).
    ``u`` is a :class:`~flowfields.nn.DivFreeMatrixField` (or ``DivFreeVectorField``) of
    dimension ``1 + d`` on ``z = (t, x)``, so ``∂_t ρ + div_x j = div_z u = 0`` exactly. ``ρ`` is
    not constrained to be positive (see :class:`PositiveDensityFlux`).

    Args:
        dim: d, the spatial dimension.
        construction: ``"matrix"`` or ``"vector"``.
        hidden, depth, activation, n_frequencies, engine: passed to the divergence-free network.
        periodic: make space the flat torus ``[0, 2π)^d`` (time stays non-periodic); then
            ``∫ ρ(t, x) dx`` over the torus is constant in t.

    Shapes:
        ``forward(t, x)`` = ``rho_flux(t, x)``: t scalar or (B,), x (B, d) -> ρ (B,), j (B, d).
    """

    def __init__(
        self,
        dim: int,
        construction: str = "matrix",
        hidden: int = 128,
        depth: int = 3,
        activation: str = "silu",
        periodic: bool = False,
        n_frequencies: int = 2,
        engine: str = "jet",
    ) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
        check(construction in ("matrix", "vector"), "construction", construction, "matrix|vector")
        cls = DivFreeMatrixField if construction == "matrix" else DivFreeVectorField
        self.dim = dim
        self.construction = construction
        self.field = cls(
            dim + 1,
            hidden=hidden,
            depth=depth,
            activation=activation,
            periodic=[False] + [bool(periodic)] * dim,
            n_frequencies=n_frequencies,
            engine=engine,
        )

    def rho_flux(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``ρ`` (B,) and flux ``j`` (B, d) at times t and points x."""
        _check_points(x, self.dim)
        z = torch.cat([_time_vector(t, x).unsqueeze(-1), x], dim=-1)
        u = self.field(z)
        return u[:, 0], u[:, 1:]

    def forward(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.rho_flux(t, x)

    def velocity(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``v = j / ρ`` (B, d); only meaningful where ``ρ > 0``."""
        rho, j = self.rho_flux(t, x)
        return j / rho.unsqueeze(-1)


class PositiveDensityFlux(nn.Module):
    """Positive density/flux pair with exact continuity: a Gaussian-potential NCL.

    Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741),
    the positivity construction. With weights ``w_k`` (softmax, constant in t, so the total
    mass is exactly 1), means ``μ_k(t)`` and scales ``σ_k(t)`` from a small network of t,

    - ``b_0(t, x) = sum_k w_k Φ_{σ_k}(x - μ_k)`` with ``ΔΦ_σ = N(0, σ² I)`` (subharmonic), so
      ``ρ = Δ_x b_0 = sum_k w_k N(x; μ_k, σ_k² I) >= 0``;
    - ``j = -∂_t ∇_x b_0 + c(t, x) + div_x(ρ A(t, x))``: ``c`` is the closed-form
      divergence-free field that makes component k move with the affine velocity
      ``μ_k' + (σ_k'/σ_k)(x - μ_k)`` (so ``-∂_t ∇b_0 + c = sum_k w_k N_k (μ_k' + ...)``, finite
      kinetic energy and a Gaussian-decaying flux), and ``A`` is the antisymmetric matrix of a
      time-dependent :class:`~flowfields.nn.DivFreeMatrixField` (``correction=True``): the
      row-wise divergence of the antisymmetric ``ρA`` is divergence-free, decays with ``ρ``, and
      adds ``div A + A ∇log ρ`` to the velocity.

    Caveats: mass is conserved because the weights are constant (time-varying weights add a
    ``-w_k' ∇Φ_k`` flux that decays only like ``|x|^(1-d)``: infinite kinetic energy); ``ρ`` is
    a Gaussian mixture at every t, so fine structure needs many components.

    Args:
        dim: d.
        n_components: K.
        hidden, depth: the network of t giving the interior of each path.
        correction: add the learned ``div_x(ρ A)`` divergence-free flux.
        correction_hidden, correction_depth: size of the DivFreeMatrixField for ``A``.
        init_mean_scale: spread of the initial endpoint means.

    The component paths are ``μ_k(t) = (1-t) a_k + t c_k + t(1-t) f_k(t)`` and
    ``log σ_k(t) = (1-t) α_k + t γ_k + t(1-t) g_k(t)`` with (a, c, α, γ) learnable endpoints and
    (f, g) the outputs of the network of t.

    Shapes:
        ``rho_flux(t, x)``: t scalar or (B,), x (B, d) -> ρ (B,), j (B, d).
    """

    def __init__(
        self,
        dim: int,
        n_components: int = 1,
        hidden: int = 64,
        depth: int = 2,
        correction: bool = True,
        correction_hidden: int = 64,
        correction_depth: int = 2,
        init_mean_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
        check(n_components >= 1, "n_components", n_components, "an integer >= 1")
        self.dim = dim
        self.n_components = k = n_components
        self.weight_logits = nn.Parameter(torch.zeros(k))
        self.mean_0 = nn.Parameter(init_mean_scale * torch.randn(k, dim))
        self.mean_1 = nn.Parameter(init_mean_scale * torch.randn(k, dim))
        self.log_std_0 = nn.Parameter(torch.zeros(k))
        self.log_std_1 = nn.Parameter(torch.zeros(k))
        self.time_net = mlp(1, k * (dim + 1), hidden, depth, "silu")
        self.correction = (
            DivFreeMatrixField(
                dim, hidden=correction_hidden, depth=correction_depth, time_dependent=True
            )
            if correction and dim >= 2
            else None
        )

    @torch.no_grad()
    def init_endpoints(
        self, x_0: Tensor, x_1: Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Moment-based start for the endpoint parameters from samples of both ends.

        With one component: the sample mean and the RMS per-coordinate standard deviation of
        each end. With K components: K-means centres (Lloyd's iterations from K random samples)
        of each end, paired across the ends by an optimal assignment of squared distances
        (``scipy.optimize.linear_sum_assignment``), with the RMS within-cluster standard
        deviation as the scale. Training refines these.

        Args:
            x_0: (N, d) samples of the density at t = 0.
            x_1: (M, d) samples of the density at t = 1.
            generator: RNG for the K-means start.
        """
        k, d = self.n_components, self.dim
        for name, x in (("x_0", x_0), ("x_1", x_1)):
            check_shape(x, name, ndim=2, last=d)
            check_finite(x, name)
            check(x.shape[0] >= max(k, 2), name, x, f"at least {max(k, 2)} samples")
        dtype = self.mean_0.dtype
        if k == 1:
            for x, mean, log_std in (
                (x_0, self.mean_0, self.log_std_0),
                (x_1, self.mean_1, self.log_std_1),
            ):
                x = x.to(dtype)
                mean.copy_(x.mean(0, keepdim=True))
                log_std.fill_(0.5 * float(torch.log(x.var(0).mean())))
            return
        ends = [_cluster_moments(x.to(dtype), k, generator) for x in (x_0, x_1)]
        from scipy.optimize import linear_sum_assignment

        cost = torch.cdist(ends[0][0], ends[1][0]).square().cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        order = torch.as_tensor(cols[rows.argsort()], device=self.mean_0.device)
        self.mean_0.copy_(ends[0][0])
        self.log_std_0.copy_(torch.log(ends[0][1]))
        self.mean_1.copy_(ends[1][0][order])
        self.log_std_1.copy_(torch.log(ends[1][1][order]))

    # ---- component paths -------------------------------------------------------------------
    def _paths_and_rates(self, t: Tensor) -> dict[str, Tensor]:
        """μ (T, K, d), σ (T, K) at times t (T,) and their t-derivatives.

        The derivative is forward mode written out through the small network of t (one tangent
        stream; cheaper than a ``torch.func.jvp`` call, and itself differentiable).
        """
        k, d = self.n_components, self.dim
        tt = t.unsqueeze(-1)
        h, dh = tt, torch.ones_like(tt)
        lins = [m for m in self.time_net if isinstance(m, nn.Linear)]  # Linear, SiLU, ..., Linear
        for lin in lins[:-1]:
            z = lin(h)
            dz = dh @ lin.weight.T
            sig = torch.sigmoid(z)
            h, dh = z * sig, dz * sig * (1 + z * (1 - sig))
        out = lins[-1](h).reshape(-1, k, d + 1)
        dout = (dh @ lins[-1].weight.T).reshape(-1, k, d + 1)
        bridge, dbridge = tt * (1 - tt), 1 - 2 * tt  # (T, 1)
        mu = (1 - tt).unsqueeze(-1) * self.mean_0 + tt.unsqueeze(-1) * self.mean_1
        mu = mu + bridge.unsqueeze(-1) * out[..., :d]
        dmu = (self.mean_1 - self.mean_0) + dbridge.unsqueeze(-1) * out[..., :d]
        dmu = dmu + bridge.unsqueeze(-1) * dout[..., :d]
        log_std = (1 - tt) * self.log_std_0 + tt * self.log_std_1 + bridge * out[..., d]
        dlog_std = self.log_std_1 - self.log_std_0 + dbridge * out[..., d] + bridge * dout[..., d]
        std = torch.exp(log_std)
        return {"mu": mu, "std": std, "dmu": dmu.expand_as(mu), "dstd": std * dlog_std}

    def components(self, t: Tensor | float, x: Tensor | None = None) -> dict[str, Tensor]:
        """Log-weights (K,), means μ (T, K, d), scales σ (T, K) and their time derivatives.

        Args:
            t: time(s): a scalar (then T = 1, broadcasting against any batch) or (T,).
            x: optional (B, d) points: checks that T is 1 or B and sets dtype and device.

        Returns:
            dict with ``log_w`` (K,), ``mu`` (T, K, d), ``std`` (T, K), ``dmu`` = ∂_t μ and
            ``dstd`` = ∂_t σ (same shapes).
        """
        ref = x if x is not None else self.mean_0
        check(
            isinstance(t, (int, float, Tensor)) and not isinstance(t, bool),
            "t",
            t,
            "a time: a number or a real tensor",
        )
        t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
        if x is not None:
            check(
                t.ndim == 0 or (t.ndim == 1 and t.shape[0] in (1, x.shape[0])),
                "t",
                t,
                f"a scalar or a tensor of shape ({x.shape[0]},)",
            )
        _check_finite_plain(t, "t")
        t = t.reshape(-1)
        log_w = torch.log_softmax(self.weight_logits, -1).to(ref.dtype)
        plain = not (torch._C._functorch.is_functorch_wrapped_tensor(t) or t.requires_grad)
        if plain and t.numel() > 1:
            # the paths depend on t only: evaluate them once per distinct time
            uniq, inverse = torch.unique(t, return_inverse=True)
            out = self._paths_and_rates(uniq)
            out = {k: v[inverse] for k, v in out.items()}
        else:
            out = self._paths_and_rates(t.contiguous())
        out["log_w"] = log_w
        return out

    # ---- density ---------------------------------------------------------------------------
    def _log_terms(self, c: dict[str, Tensor], x: Tensor) -> Tensor:
        """log(w_k N(x; μ_k, σ_k²)) (B, K)."""
        y = x.unsqueeze(1) - c["mu"]
        return c["log_w"] + gaussian_log_density(y, c["std"])

    def log_rho(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``log ρ(t, x)`` (B,)."""
        _check_points(x, self.dim, self)
        return torch.logsumexp(self._log_terms(self.components(t, x), x), -1)

    def marginal(self, t: float) -> MixtureMarginal:
        """The density ``ρ_t`` at one time as a :class:`~flowfields.density.DensityModel`."""
        return MixtureMarginal(self, t)

    def grad_b0(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``∇_x b_0`` (B, d): the mixture of Gaussian Newtonian potential gradients."""
        _check_points(x, self.dim)
        c = self.components(t, x)
        y = x.unsqueeze(1) - c["mu"]
        w = torch.exp(c["log_w"])
        return (w.unsqueeze(-1) * gaussian_newtonian_grad(y, c["std"])).sum(1)

    def sample_at(
        self, t: float | Tensor, n: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """n reparameterised samples of ``ρ_t`` (differentiable in the paths), shape (n, d).

        ``t`` is one time or a tensor of ``n`` times (one sample at each). For the density at
        one time as a :class:`~flowfields.density.DensityModel` see :meth:`marginal`.
        """
        check_sample_count(n)
        ref = self.mean_0
        t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
        check(t.numel() in (1, n), "t", t, f"a scalar or a tensor of {n} times")
        return _sample_at(self, t.reshape(-1).expand(n), generator)

    # ---- flux and velocity -----------------------------------------------------------------
    def _velocity_parts(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log ρ (B,), v (B, d)), with v computed stably through responsibilities."""
        _check_points(x, self.dim)
        c = self.components(t, x)
        log_terms = self._log_terms(c, x)
        log_rho = torch.logsumexp(log_terms, -1)
        resp = torch.exp(log_terms - log_rho.unsqueeze(-1))  # (B, K)
        y = x.unsqueeze(1) - c["mu"]
        u = c["dmu"] + (c["dstd"] / c["std"]).unsqueeze(-1) * y  # per-component velocity
        v = (resp.unsqueeze(-1) * u).sum(1)
        if self.correction is not None:
            tb = _time_vector(t, x)
            a = self.correction.matrix(tb, x)  # (B, d, d) antisymmetric
            div_a = self.correction(tb, x)  # row-wise divergence of A
            grad_log_rho = -(resp.unsqueeze(-1) * y / (c["std"] ** 2).unsqueeze(-1)).sum(1)
            v = v + div_a + torch.einsum("bij,bj->bi", a, grad_log_rho)
        return log_rho, v

    def velocity(self, t: Tensor | float, x: Tensor) -> Tensor:
        """``v = j / ρ`` (B, d), computed without dividing by ``ρ`` (stable in the tails)."""
        return self._velocity_parts(t, x)[1]

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        """The velocity ``v(t, x)``: usable as the vector field of an ODE or CNF."""
        return self.velocity(t, x)

    def rho_flux(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``ρ`` (B,) and flux ``j = ρ v`` (B, d)."""
        log_rho, v = self._velocity_parts(t, x)
        rho = torch.exp(log_rho)
        return rho, rho.unsqueeze(-1) * v

    def kinetic_energy(
        self,
        n_t: int = 32,
        n_x: int = 256,
        generator: torch.Generator | None = None,
        quadrature: str = "gauss",
    ) -> Tensor:
        """``∫_0^1 ∫ ρ |v|² dx dt``: quadrature in t, Monte Carlo in x ~ ρ_t (n_x per time).

        Args:
            n_t: number of times.
            n_x: samples of ρ_t per time.
            generator: RNG for the samples (and the stratified times).
            quadrature: ``"gauss"`` (Gauss-Legendre nodes, for evaluation) or ``"stratified"``
                (one uniform time in each of n_t equal bins: unbiased, for training).

        Returns:
            Scalar tensor, differentiable in the parameters (reparameterised samples).
        """
        check(quadrature in ("gauss", "stratified"), "quadrature", quadrature, "gauss|stratified")
        check(n_t >= 1 and n_x >= 1, "n_t, n_x", (n_t, n_x), "positive integers")
        dtype, device = self.mean_0.dtype, self.mean_0.device
        if quadrature == "gauss":
            nodes, weights = gauss_legendre(n_t, 0.0, 1.0, dtype=dtype, device=device)
        else:
            u = torch.rand(n_t, generator=generator, dtype=dtype, device=device)
            nodes = (torch.arange(n_t, dtype=dtype, device=device) + u) / n_t
            weights = torch.full((n_t,), 1.0 / n_t, dtype=dtype, device=device)
        t = nodes.repeat_interleave(n_x)
        x = _sample_at(self, t, generator)
        v = self.velocity(t, x)
        per_t = (v * v).sum(-1).reshape(n_t, n_x).mean(-1)
        return (weights * per_t).sum()


class MixtureMarginal(nn.Module):
    """The density ``ρ_t`` of a :class:`PositiveDensityFlux` at a fixed time t.

    A :class:`~flowfields.density.DensityModel` (``sample(n)``, ``log_prob(x)``,
    ``event_shape``) whose parameters are the model's (registered as ``model``), so it is
    differentiable in the component paths (samples are reparameterised) and its
    ``state_dict`` is the model's.

    Args:
        model: the density/flux model.
        t: the time, a float in [0, 1].

    Shapes:
        ``sample(n)``: (n, d); ``log_prob(x)``: (B, d) -> (B,).
    """

    def __init__(self, model: PositiveDensityFlux, t: float) -> None:
        super().__init__()
        check(isinstance(model, PositiveDensityFlux), "model", model, "a PositiveDensityFlux")
        check(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0,
            "t",
            t,
            "a float in [0, 1]",
        )
        self.model = model
        self.t = float(t)
        self.event_shape = (model.dim,)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of ``ρ_t``, shape (n, d)."""
        return self.model.sample_at(self.t, n, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log ρ_t(x)``, shape (B,)."""
        check_points(x, self.event_shape, dtype=self.model.mean_0.dtype)
        return self.model.log_rho(self.t, x)

    def extra_repr(self) -> str:
        return f"t={self.t:g}"


def _cluster_moments(x: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """k-means centres (k, d) and RMS per-coordinate within-cluster std (k,), floored."""
    km = kmeans(x, k, generator=generator, iters=20)
    label = km.labels
    sq = ((x - km.centres[label]) ** 2).mean(-1)
    counts = km.counts.clamp_min(1).to(x.dtype)
    var = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, label, sq) / counts
    floor = 1e-3 * x.var(0).mean()
    return km.centres, var.clamp_min(floor).sqrt()


def _sample_at(model: PositiveDensityFlux, t: Tensor, generator: torch.Generator | None) -> Tensor:
    """One reparameterised sample of ρ_t for each entry of t (B,)."""
    c = model.components(t)
    n = t.shape[0]
    c = {k: (v.expand(n, *v.shape[1:]) if k != "log_w" else v) for k, v in c.items()}
    idx = torch.multinomial(
        torch.exp(c["log_w"]).detach(), n, replacement=True, generator=generator
    )
    eps = torch.randn(n, model.dim, generator=generator, dtype=t.dtype, device=t.device)
    rows = torch.arange(n, device=t.device)
    return c["mu"][rows, idx] + c["std"][rows, idx].unsqueeze(-1) * eps


def continuity_residual(rho_flux: RhoFlux, t: Tensor | float, x: Tensor) -> Tensor:
    """``∂_t ρ + div_x j`` at each (t, x), with forward-mode derivatives from torch.func.

    Args:
        rho_flux: ``(t, x) -> (ρ (B,), j (B, d))`` with samples independent of each other.
        t: scalar or (B,) times.
        x: (B, d) points.

    Returns:
        (B,) residual; zero up to floating point for the models in this module.
    """
    check_shape(x, "x", ndim=2)
    check_finite(x, "x")
    t = _time_vector(t, x).contiguous()  # a real (B,) tensor: the jvp writes one tangent per row
    d = x.shape[1]
    drho_dt = jvp(lambda s: rho_flux(s, x)[0], (t,), (torch.ones_like(t),))[1]
    basis = torch.eye(d, dtype=x.dtype, device=x.device).unsqueeze(1).expand(d, x.shape[0], d)
    dj = vmap(lambda e: jvp(lambda y: rho_flux(t, y)[1], (x,), (e,))[1])(basis)  # (d, B, d)
    return drho_dt + torch.diagonal(dj, dim1=0, dim2=2).sum(-1)


def kinetic_energy(velocity: Tensor, weights: Tensor | None = None) -> Tensor:
    """Monte Carlo kinetic energy ``E |v|²`` from velocities at samples ``x ~ ρ_t``.

    Args:
        velocity: (B, d) velocities at samples of the density.
        weights: optional (B,) importance weights (normalised here).

    Returns:
        Scalar ``sum_b w_b |v_b|²`` (plain mean without weights).
    """
    check_shape(velocity, "velocity", ndim=2)
    sq = (velocity * velocity).sum(-1)
    if weights is None:
        return sq.mean()
    check(weights.shape == sq.shape, "weights", weights, f"shape {tuple(sq.shape)}")
    return (weights * sq).sum() / weights.sum()
