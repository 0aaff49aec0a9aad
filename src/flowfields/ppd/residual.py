"""The logarithmic mass conservation (LMC) residual and the PPD losses.

Ben-Hamu et al. (arXiv:2207.04711), Sec. 3: a tangent field ``v_t`` generates the path
``p_t`` on M iff the continuity equation holds, i.e. iff the LMC residual

    r_t(x) = d/dt log p_t(x) + div_g v_t(x) + <grad_g log p_t(x), v_t(x)>_g

vanishes. ``PPD_l = int_0^1 E_{x ~ w_t} |r_t(x)|^l dt`` (``w_t = p_t`` here) is minimised
without solving an ODE. ``d/dt log p_t`` and the ambient gradient of ``log p_t`` come from
autograd of the path's log-sum-exp; ``grad_g = proju(x, grad)``; ``div_g`` is the ambient
trace of the tangent-projected field (exact, D Jacobian-vector products, or Hutchinson with
one or two independent probes per point: two give two independent unbiased residuals, whose
product is an unbiased estimate of ``r^2``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowfields.divergence import divergence_exact, divergence_hutchinson, sample_probe
from flowfields.errors import check
from flowfields.ppd.paths import KernelPath

__all__ = ["DIVERGENCES", "LMCTerms", "lmc_residual", "tangent_field"]

#: Divergence estimators of :func:`lmc_residual`.
DIVERGENCES = ("exact", "hutchinson")


@dataclass
class LMCTerms:
    """The LMC residual and its three terms, each (B,).

    With two Hutchinson probes, ``residual`` and ``div_v`` are those of the first probe and
    ``residual_2`` / ``div_v_2`` those of the second (independent given ``t`` and ``x``);
    otherwise ``residual_2`` and ``div_v_2`` are None.
    """

    residual: Tensor
    dt_log_p: Tensor
    div_v: Tensor
    transport: Tensor
    residual_2: Tensor | None = None
    div_v_2: Tensor | None = None


def tangent_field(
    field: Callable[[Tensor, Tensor], Tensor], manifold: Any
) -> Callable[..., Tensor]:
    """``(t, x) -> proju(x, field(t, x))`` (``field`` itself if it has ``is_tangent = True``:
    it projects its own output)."""
    if getattr(field, "is_tangent", False):
        return field

    def v(t: Tensor, x: Tensor) -> Tensor:
        return manifold.proju(x, field(t, x))

    return v


def lmc_residual(
    field: Callable[[Tensor, Tensor], Tensor],
    path: KernelPath,
    t: Tensor,
    x: Tensor,
    centers: Tensor,
    *,
    divergence: str = "exact",
    probes: int = 1,
    generator: torch.Generator | None = None,
) -> LMCTerms:
    """The LMC residual ``r_t(x)`` of ``field`` against ``path`` (over ``centers``).

    Args:
        field: ``v(t, x)`` with ``t`` (B,) and ``x`` (B, ambient) -> (B, ambient); it is
            projected onto the tangent spaces here.
        path: a :class:`~flowfields.ppd.KernelPath`.
        t: times (B,); x: points (B, ambient) on the manifold; centers: the mixture's
            centers (N, ambient) (the data, or a minibatch of it).
        divergence: "exact" or "hutchinson" (Rademacher probes).
        probes: Hutchinson probes per point, 1 or 2 (2: one forward pass of the field and
            two vector-Jacobian products; the second residual is ``residual_2``). Must be 1
            with the exact divergence.
        generator: for the Hutchinson probes.

    Returns:
        :class:`LMCTerms`; differentiable w.r.t. the parameters of ``field`` when grad mode is
        on (the path's derivatives are taken with ``create_graph`` only where needed).
    """
    check(divergence in DIVERGENCES, "divergence", divergence, f"one of {DIVERGENCES}")
    check(probes in (1, 2), "probes", probes, "1 or 2")
    check(
        probes == 1 or divergence == "hutchinson",
        "probes",
        probes,
        "1 with the exact divergence (two probes are for divergence='hutchinson')",
    )
    m = path.manifold
    m.check_point(x, "x")
    check(t.shape == (x.shape[0],), "t", t, f"times of shape ({x.shape[0]},)")
    with torch.enable_grad():
        tg = t.detach().clone().requires_grad_(True)
        xg = x.detach().clone().requires_grad_(True)
        log_p = path.log_prob(tg, xg, centers)
        dt_log_p, grad_x = torch.autograd.grad(log_p.sum(), (tg, xg))
    grad_g = m.proju(x, grad_x)
    v = tangent_field(field, m)
    tt = t.detach()
    if divergence == "exact":
        v_tx, div_v = divergence_exact(v, tt, x.detach(), mode="reverse")
    elif probes == 1:
        probe = sample_probe(x.detach(), generator=generator)
        v_tx, div_v = divergence_hutchinson(v, tt, x.detach(), probe)
    else:
        v_tx, div_v, div_v_2 = _hutchinson_pair(v, tt, x.detach(), generator)
        transport = m.inner(x, grad_g, v_tx)
        return LMCTerms(
            dt_log_p + div_v + transport,
            dt_log_p,
            div_v,
            transport,
            residual_2=dt_log_p + div_v_2 + transport,
            div_v_2=div_v_2,
        )
    transport = m.inner(x, grad_g, v_tx)
    return LMCTerms(dt_log_p + div_v + transport, dt_log_p, div_v, transport)


def _hutchinson_pair(
    v: Callable[..., Tensor], t: Tensor, x: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``v(t, x)`` and two Hutchinson estimates of its divergence with independent Rademacher
    probes: one forward pass, two vector-Jacobian products through the same graph
    (differentiable w.r.t. the parameters of ``v`` when grad mode is on)."""
    create_graph = torch.is_grad_enabled()
    probe_1 = sample_probe(x, generator=generator)
    probe_2 = sample_probe(x, generator=generator)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v_tx = v(t, xg)
        divs = []
        for probe in (probe_1, probe_2):
            if v_tx.requires_grad:
                (g,) = torch.autograd.grad(
                    v_tx,
                    xg,
                    probe.to(v_tx.dtype),
                    create_graph=create_graph,
                    retain_graph=True,
                    allow_unused=True,
                )
            else:
                g = None
            g = torch.zeros_like(xg) if g is None else g
            divs.append((g * probe).sum(dim=1))
    if not create_graph:
        return v_tx.detach(), divs[0].detach(), divs[1].detach()
    return v_tx, divs[0], divs[1]
