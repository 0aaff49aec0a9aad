"""Training losses on manifolds: PPD (Ben-Hamu et al., arXiv:2207.04711) and Riemannian CFM.

- :func:`ppd_loss`: ``PPD_l = E_{t ~ U[0,1], x ~ p_t} |r_t(x)|^l`` (l = 1 or 2), the LMC
  residual of :mod:`flowfields.ppd.residual`. With ``batch`` the mixture's centers are a
  random minibatch of the data (biased; see :func:`~flowfields.ppd.minibatch_bias`). With
  the Hutchinson divergence, ``probes=2`` gives an unbiased estimate of PPD_2 (see
  :func:`ppd_loss`).
- :func:`rfm_loss`: Riemannian conditional flow matching (Chen & Lipman, arXiv:2302.03660)
  on the geodesic path, through :func:`flowfields.matching.cfm_loss` with the manifold's
  uniform source and metric.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.manifolds import Manifold
from flowfields.ppd.paths import KernelPath
from flowfields.ppd.residual import lmc_residual, tangent_field

__all__ = ["ppd_loss", "rfm_loss"]


def ppd_loss(
    field: Callable[[Tensor, Tensor], Tensor],
    path: KernelPath,
    x_data: Tensor,
    l: int = 2,
    batch: int | None = None,
    *,
    n_points: int = 256,
    divergence: str = "exact",
    probes: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte-Carlo ``PPD_l`` of ``field`` against ``path`` built on ``x_data``.

    With ``divergence="hutchinson"`` the residual ``r_hat`` is unbiased for ``r`` but
    ``E[r_hat^2] = r^2 + Var_probe(r_hat)``: the one-probe PPD_2 (``probes=1``, the
    default) is biased upward by the probe variance (``sum_{i<j} (J_ij + J_ji)^2`` of the
    field's Jacobian for Rademacher probes), i.e. it adds a Jacobian penalty whose minimiser
    is in general not the field that generates the path. ``probes=2`` uses two independent
    probes at each point and the product ``r_hat_1 r_hat_2``, unbiased for ``r^2`` (and its
    gradient for the gradient of PPD_2), at the price of a second vector-Jacobian product
    and a higher variance. The default stays ``probes=1``: it is the estimator every
    reported result before the two-probe option was measured with, it costs one product,
    and the measured gain of ``probes=2`` is small and not uniform: on ``ppd-torus`` (one
    seed) the gap per dimension went from 0.150 / 0.786 / 1.057 to 0.133 / 0.732 / 1.025 at
    d = 2 / 10 / 50 (quick) and from 0.022 / 0.267 / 0.907 to 0.009 / 0.228 / 1.036 (full:
    worse at d = 50), changing no claim (``docs/ppd.md``).
    With the exact divergence there is no probe (``probes`` must be 1).

    Args:
        field: ``v(t, x)`` (projected onto the tangent spaces inside).
        path: the target kernel path (:class:`VMFMixturePath`, :class:`VonMisesMixturePath`).
        x_data: the data (N, ambient) on the path's manifold: the mixture's centers.
        l: 1 or 2, the power of the residual.
        batch: use this many random data points as centers (None: all of them).
        n_points: points ``x ~ p_t`` (each with its own ``t ~ U[0, 1]``) per estimate.
        divergence: "exact" or "hutchinson".
        probes: 1 (``r_hat^2``) or 2 (``r_hat_1 r_hat_2``, unbiased; only with l = 2 and the
            Hutchinson divergence).
        generator: for the times, the centers, the kernel samples and the probes.

    Returns:
        A scalar, differentiable w.r.t. the field's parameters.

    Raises:
        FlowfieldsError: ``l`` not 1 or 2, bad ``batch``/``n_points``/``probes``, data off
            the manifold.
    """
    check(l in (1, 2), "l", l, "1 or 2")
    check(probes in (1, 2), "probes", probes, "1 or 2")
    check(
        probes == 1 or (l == 2 and divergence == "hutchinson"),
        "probes",
        probes,
        "1 unless l = 2 and divergence = 'hutchinson' (r_hat_1 r_hat_2 is unbiased for r^2; "
        "|r| has no such product)",
    )
    check(isinstance(n_points, int) and n_points >= 1, "n_points", n_points, "an integer >= 1")
    path.manifold.check_point(x_data, "x_data")
    n = x_data.shape[0]
    centers = x_data
    if batch is not None:
        check(isinstance(batch, int) and 1 <= batch, "batch", batch, "an integer >= 1 or None")
        if batch < n:
            on = generator.device if generator is not None else x_data.device
            idx = torch.randperm(n, generator=generator, device=on)[:batch].to(x_data.device)
            centers = x_data[idx]
    dev = generator.device if generator is not None else None
    t = torch.rand(n_points, generator=generator, dtype=torch.float64, device=dev)
    t = t.to(device=x_data.device, dtype=x_data.dtype)
    x = path.sample(t, centers, generator)
    r = lmc_residual(
        field, path, t, x, centers, divergence=divergence, probes=probes, generator=generator
    )
    res = r.residual
    if r.residual_2 is not None:
        return (res * r.residual_2).mean()
    return res.abs().mean() if l == 1 else res.pow(2).mean()


def rfm_loss(
    field: Callable[[Tensor, Tensor], Tensor],
    manifold: Manifold,
    x_1: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Riemannian CFM on the geodesic path: ``E |proju(v(t, x_t)) - u_t|_g^2``.

    ``x_0`` uniform on M (from ``generator``), ``t ~ U[0, 1]``, ``x_t`` and ``u_t`` from
    :class:`~flowfields.paths.GeodesicPath`.
    """
    from flowfields.matching import cfm_loss
    from flowfields.paths import GeodesicPath

    check(isinstance(manifold, Manifold), "manifold", manifold, "a Manifold")
    manifold.check_point(x_1, "x_1")

    def source(n: int) -> Tensor:
        dev = generator.device if generator is not None else x_1.device
        return manifold.random_base(n, generator, dtype=x_1.dtype, device=dev).to(x_1.device)

    path = GeodesicPath(manifold)
    t = path.sample_t(x_1.shape[0], generator, dtype=x_1.dtype).to(x_1.device)
    return cfm_loss(
        tangent_field(field, manifold), path, x_1, t=t, source=source, metric=manifold.inner
    )
