"""The latent-discretization model: encoder, learned discretization, OU prior, bridge decoder.

Chen, Le, Muckley, Nickel, Ullrich, "Latent Discretization for Continuous-time Sequence
Compression" (arXiv:2212.13659). A sequence ``x_0 .. x_{T-1}`` observed at times ``t_i`` is
mapped frame by frame to latents ``u_i = encoder(x_i)`` (``(B, T, d)``); a subset of frames is
*stored*: their quantised latents ``k_i = round(u_i)`` are coded under the Ornstein–Uhlenbeck
prior ``dz = theta (mu - z) dt + sigma dW`` (the transition from the previous stored point, the
stationary law for the first) plus a learned innovation variance ``kappa^2`` per stored point
(without it a jump between adjacent stored frames would cost more at a higher frame rate, the
OU variance ``v(dt) ~ sigma^2 dt`` shrinking with ``dt``), and the gaps between them under the
continuous-time gap law of :mod:`flowfields.compression.entropy`. The decoder reconstructs the
latent path at *any* time by the OU bridge between the stored neighbours
(:func:`flowfields.integrate.ou_bridge`) and maps it to frames (``decoder(z(t))``).

**Which discretization, and why: on the frame grid, integrate-and-fire with a straight-through
estimator.** The intensity per unit time is ``lambda_i = c + sum_j w_j (|u_{i,j} - u_{i-1,j}| +
|u_{i+1,j} - u_{i,j}|) / dt`` (``c, w >= 0`` learned): positively homogeneous in the latent
velocity, so a jump of size ``J`` contributes ``w J`` events to the frames on both of its
sides *at any frame rate*, and a smooth stretch ``w ∫ |du/dt| dt`` — the number of stored
points follows the content, not ``T`` (claim 2). A frame is stored when the cumulative
intensity ``Lambda_i = sum_{k <= i} lambda_k dt`` crosses an integer after a phase shift
(``floor(Lambda_i + phi) > floor(Lambda_{i-1} + phi)``, at most one point per frame; the first
and last frame are always stored). In training ``phi ~ U(0, 1)``, so frame ``i`` is stored with
probability ``p_i = min(1, lambda_i dt)``, and the hard 0/1 decision ``h_i`` is used forwards
with the gradient of ``p_i`` (``s_i = h_i + p_i - stopgrad(p_i)``); the codec uses ``phi =
1/2``. The frame grid (not event times in continuous time) because frames are where the data
are: an event between frames carries no information the bridge does not, and a grid makes the
stored times exactly codable as integer gaps.

Training loss (:meth:`LatentDiscretization.loss`): ``D + beta R`` with ``D`` the mean squared
error of every frame and ``R`` the bits per sequence of exactly the tables the coder uses,
with uniform noise instead of rounding. The reconstruction of frame ``i`` is ``s_i u~_i + (1 -
s_i) bridge_i`` (``bridge_i`` between the stored neighbours strictly before and after ``i``),
so ``dD/ds_i`` says how much storing ``i`` would beat bridging over it. The latent SDE prior
is :meth:`LatentDiscretization.prior_sde` (:class:`~flowfields.integrate.OUSDE`), sampled
through :func:`flowfields.integrate.sdeint`.

The model is float64 throughout (``.double()`` at construction) so encoder and decoder compute
the same tables bit for bit on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.compression.entropy import gap_bits, gaussian_bits
from flowfields.errors import check
from flowfields.integrate.ou import OUSDE, ou_bridge, ou_stationary, ou_transition
from flowfields.nn import mlp

__all__ = ["LatentDiscretization", "Plan", "bridge_latents", "neighbours"]


@dataclass
class Plan:
    """What the encoder decides for a batch: ``stored`` (B, T) bool, ``symbols`` (B, T, d)
    integer latents (valid where stored), ``bits`` (B,) the model's rate estimate."""

    stored: Tensor
    symbols: Tensor
    bits: Tensor


def neighbours(stored: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the stored frames strictly before (``-1`` if none) and strictly after
    (``T`` if none) each frame. ``stored``: (B, T) bool -> two (B, T) long tensors."""
    T = stored.shape[-1]
    idx = torch.arange(T, device=stored.device).expand_as(stored)
    mark = torch.where(stored, idx, torch.full_like(idx, -1))
    prev = torch.cummax(mark, dim=-1).values
    prev = torch.cat([torch.full_like(prev[..., :1], -1), prev[..., :-1]], dim=-1)
    mark_next = torch.where(stored, idx, torch.full_like(idx, T)).flip(-1)
    nxt = (-torch.cummax(-mark_next, dim=-1).values).flip(-1)
    nxt = torch.cat([nxt[..., 1:], torch.full_like(nxt[..., :1], T)], dim=-1)
    return prev, nxt


def _gather(z: Tensor, index: Tensor) -> Tensor:
    return torch.gather(z, 1, index[..., None].expand(*index.shape, z.shape[-1]))


def bridge_latents(
    z: Tensor, times: Tensor, prev: Tensor, nxt: Tensor, theta: Tensor, mu: Tensor, sigma: Tensor
) -> Tensor:
    """OU bridge means at every frame between stored neighbours ``prev`` and ``nxt``.

    ``z``: (B, T, d) latents (only stored entries are read); ``times``: (T,); ``prev, nxt``:
    (B, T) from :func:`neighbours`, each frame having a stored frame on at least one side;
    where one side is missing, the OU transition mean from the other side. -> (B, T, d).
    """
    T = z.shape[1]
    a, b = prev.clamp(0, T - 1), nxt.clamp(0, T - 1)
    both = (prev >= 0) & (nxt < T)
    a = torch.where(both | (prev >= 0), a, b)
    b = torch.where(both | (nxt < T), b, a)
    t_a, t_b, t = times[a], times[b], times.expand_as(a)
    z_a, z_b = _gather(z, a), _gather(z, b)
    same = (b == a)[..., None]
    t_b_safe = torch.where(b == a, t_a + 1.0, t_b)
    t_safe = torch.where(b == a, t_a, t)
    mean, _ = ou_bridge(
        z_a, t_a[..., None], torch.where(same, z_a, z_b), t_b_safe[..., None],
        t_safe[..., None], theta, mu, sigma,
    )  # fmt: skip
    gap = (t - t_a).abs()[..., None]
    one_sided, _ = ou_transition(z_a, gap, theta, mu, sigma)
    return torch.where(same, one_sided, mean)


class LatentDiscretization(nn.Module):
    """Encoder, learned discretization, OU prior and frame decoder (see the module docstring).

    Args:
        dim: features per frame ``D`` (frames are flattened by the codec).
        latent_dim: ``d``; hidden, depth: the encoder / decoder MLPs (:func:`flowfields.nn.mlp`).
        radius: latents are clamped to ``[-radius, radius]`` (``2 radius + 1`` symbols).
        scale: encoder outputs are multiplied (decoder inputs divided) by it, so the unit
            quantisation step starts fine relative to the data.

    Shapes:
        frames ``x``: (B, T, D); ``times``: (T,) increasing, float64.
    """

    def __init__(
        self,
        dim: int,
        latent_dim: int = 4,
        *,
        hidden: int = 32,
        depth: int = 1,
        radius: int = 31,
        scale: float = 4.0,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("latent_dim", latent_dim), ("radius", radius)):
            check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
        check(scale > 0, "scale", scale, "a float > 0")
        self.dim, self.latent_dim, self.radius, self.scale = dim, latent_dim, radius, scale
        self.encoder = mlp(dim, latent_dim, hidden, depth)
        self.decoder = mlp(latent_dim, dim, hidden, depth)
        d = latent_dim
        self.log_theta = nn.Parameter(torch.zeros(d))  # OU prior
        self.mu = nn.Parameter(torch.zeros(d))
        self.log_sigma = nn.Parameter(torch.full((d,), 1.5))
        self.log_kappa = nn.Parameter(torch.zeros(d))  # innovation at each stored point
        self.log_w = nn.Parameter(torch.full((d,), -1.0))  # intensity
        self.log_c = nn.Parameter(torch.tensor(1.0))
        self.log_rho = nn.Parameter(torch.tensor(1.5))  # gap law
        self.logit_pi = nn.Parameter(torch.tensor(0.0))
        self.double()

    # ---------------------------------------------------------------- parameters
    def ou(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta, mu, sigma)``, each (d,)."""
        return self.log_theta.exp(), self.mu, self.log_sigma.exp()

    def latent_law(self, prev: Tensor | None, gap_t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of a stored point's latent given the previous stored one
        (``prev`` (..., d), ``gap_t`` (..., 1) apart; ``None``: the first point): the OU
        transition (stationary law) plus the innovation variance ``kappa^2``."""
        theta, mu, sigma = self.ou()
        kappa2 = torch.exp(2 * self.log_kappa)
        if prev is None:
            mean, var = ou_stationary(mu, theta, sigma)
        else:
            mean, var = ou_transition(prev, gap_t, theta, mu, sigma)
        return mean, var + kappa2

    def gap_params(self) -> tuple[Tensor, Tensor]:
        """``(rho, pi)``: the gap clock's rate per unit time and the adjacent-frame atom."""
        return self.log_rho.exp(), torch.sigmoid(self.logit_pi)

    def prior_sde(self) -> OUSDE:
        """The latent OU prior as an SDE for :func:`flowfields.integrate.sdeint`."""
        theta, mu, sigma = (p.detach() for p in self.ou())
        return OUSDE(theta, mu, sigma)

    # ---------------------------------------------------------------- encoder side
    def latents(self, x: Tensor) -> Tensor:
        """``u = clamp(scale encoder(x))``: (B, T, D) -> (B, T, d)."""
        r = float(self.radius)
        return (self.scale * self.encoder(x)).clamp(-r, r)

    def frames(self, z: Tensor) -> Tensor:
        """Frame decoder: (..., d) latents -> (..., D) frames."""
        return self.decoder(z / self.scale)

    def intensity_dt(self, u: Tensor, dt: Tensor) -> Tensor:
        """``lambda_i dt_i``: expected stored points per frame, (B, T, d) -> (B, T)."""
        step = (u[:, 1:] - u[:, :-1]).abs() @ F.softplus(self.log_w)  # (B, T-1)
        pad = torch.zeros(u.shape[0], 1, dtype=u.dtype, device=u.device)
        both = torch.cat([pad, step], 1) + torch.cat([step, pad], 1)
        return F.softplus(self.log_c) * dt + both

    @staticmethod
    def fire(lam_dt: Tensor, phase: Tensor) -> Tensor:
        """Integrate-and-fire: frames where ``floor(Lambda + phase)`` steps up; ends forced."""
        level = torch.floor(torch.cumsum(lam_dt.detach(), -1) + phase[:, None])
        before = torch.cat([torch.floor(phase)[:, None], level[:, :-1]], -1)
        stored = level > before
        stored[:, 0] = True
        stored[:, -1] = True
        return stored

    def bits(self, z: Tensor, stored: Tensor, times: Tensor) -> Tensor:
        """Per-frame bits if the frame is stored (latents + gap), given the stored frames before
        it: (B, T, d) latents, (B, T) bool -> (B, T)."""
        prev, _ = neighbours(stored)
        T = z.shape[1]
        a = prev.clamp(min=0)
        first = (prev < 0)[..., None]
        gap_t = (times - times[a]).clamp(min=0)[..., None]
        m_tr, v_tr = self.latent_law(_gather(z, a), gap_t)
        m_st, v_st = self.latent_law(None, gap_t)
        mean = torch.where(first, m_st.expand_as(m_tr), m_tr)
        var = torch.where(first, v_st.expand_as(v_tr), v_tr)
        lat = gaussian_bits(z, mean, var.sqrt(), self.radius).sum(-1)
        idx = torch.arange(T, device=z.device, dtype=z.dtype)
        n = idx - prev.to(z.dtype)
        n_max = (T - 1) - prev.to(z.dtype)
        dt = (times[-1] - times[0]) / max(T - 1, 1)
        rho, pi = self.gap_params()
        gaps = gap_bits(n.clamp(min=1), n_max.clamp(min=1), rho, dt, pi)
        return lat + torch.where(prev < 0, torch.zeros_like(gaps), gaps)

    # ---------------------------------------------------------------- training / planning
    def loss(
        self, x: Tensor, times: Tensor, beta: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``D + beta R``: (B, T, D) frames -> ``{"loss", "mse", "bits", "points"}`` (scalars;
        ``bits`` and ``points`` per sequence)."""
        B, T, _ = x.shape
        u = self.latents(x)
        noise = torch.rand(u.shape, generator=generator, dtype=u.dtype, device=u.device) - 0.5
        z = u + noise
        dt = (times[-1] - times[0]) / max(T - 1, 1)
        lam_dt = self.intensity_dt(u, dt)
        phase = torch.rand(B, generator=generator, dtype=u.dtype, device=u.device)
        hard = self.fire(lam_dt, phase)
        p = lam_dt.clamp(max=1.0)
        s = hard.to(u.dtype) + p - p.detach()
        ends = torch.zeros_like(hard)
        ends[:, 0] = ends[:, -1] = True
        s = torch.where(ends, torch.ones_like(s), s)
        prev, nxt = neighbours(hard)
        bridged = bridge_latents(z, times, prev, nxt, *self.ou())
        z_rec = s[..., None] * z + (1 - s[..., None]) * bridged
        mse = (self.frames(z_rec) - x).pow(2).mean()
        bits = (s * self.bits(z, hard, times)).sum(-1)
        loss = mse + beta * bits.mean()
        return {
            "loss": loss,
            "mse": mse,
            "bits": bits.mean(),
            "points": hard.sum(-1).double().mean(),
        }

    @torch.no_grad()
    def plan(
        self, x: Tensor, times: Tensor, stored: Tensor | None = None, *, rate: bool = True
    ) -> Plan:
        """The codec's decisions (rounding, phase 1/2) and the model's own rate estimate.

        Args:
            x: (B, T, D) frames; times: (T,); stored: (B, T) bool to override the learned
                discretization (the every-frame and uniform-grid baselines).
            rate: compute the estimate (``False``: ``bits`` is NaN; the encoder does not need
                it, and it is ~40% of the plan's time).
        """
        u = self.latents(x)
        k = torch.round(u)
        if stored is None:
            dt = (times[-1] - times[0]) / max(x.shape[1] - 1, 1)
            half = torch.full((x.shape[0],), 0.5, dtype=u.dtype, device=u.device)
            stored = self.fire(self.intensity_dt(u, dt), half)
        if rate:
            bits = (stored.to(u.dtype) * self.bits(k, stored, times)).sum(-1)
        else:
            bits = torch.full((x.shape[0],), float("nan"), dtype=u.dtype, device=u.device)
        return Plan(stored=stored, symbols=k.long(), bits=bits)

    @torch.no_grad()
    def reconstruct(self, symbols: Tensor, stored: Tensor, times: Tensor) -> Tensor:
        """Frames at every frame time from the stored symbols: (B, T, d), (B, T) -> (B, T, D)."""
        z = symbols.to(torch.float64)
        prev, nxt = neighbours(stored)
        z_rec = torch.where(stored[..., None], z, bridge_latents(z, times, prev, nxt, *self.ou()))
        return self.frames(z_rec)
