"""Continuous normalizing flows: sampling and exact / stochastic log-likelihood.

A CNF transports a base density ``p_0`` (noise, t = 0) to a model density ``p_1`` (data,
t = 1) along ``dx/dt = v(t, x)``. Its log-density follows the instantaneous change of
variables ``d/dt log p_t(x_t) = -div v(t, x_t)``; :meth:`CNF.log_prob` integrates it from
t = 1 back to t = 0. Numerics come from :mod:`flowfields.integrate` and
:mod:`flowfields.divergence`; nothing here steps in time by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_finite, check_shape

__all__ = [
    "CNF",
    "ESTIMATORS",
    "CNFLogProb",
    "CNFSample",
    "IsotropicNormal",
    "StandardNormal",
    "base_for_path",
]

#: Divergence estimators understood by :meth:`CNF.log_prob`.
ESTIMATORS = ("exact", "hutchinson")

_PROBES = ("rademacher", "gaussian")


def _event_shape(dim: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(dim, int) and not isinstance(dim, bool):
        check(dim > 0, "dim", dim, "a positive integer or a shape such as (1, 8, 8)")
        return (dim,)
    ok = isinstance(dim, Sequence) and len(dim) > 0
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dim)
    check(ok, "dim", dim, "a positive integer or a shape of positive integers such as (1, 8, 8)")
    return tuple(int(d) for d in dim)


class IsotropicNormal(nn.Module):
    """Isotropic normal density N(0, std^2 I) over an event shape.

    The base of a CNF trained on the VE path (whose t = 0 marginal is about
    N(0, sigma_max^2 I)); :class:`StandardNormal` is the ``std = 1`` case.

    Args:
        event_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        std: standard deviation, > 0.
    """

    def __init__(self, event_shape: int | Sequence[int], std: float = 1.0) -> None:
        super().__init__()
        check(
            isinstance(std, (int, float)) and math.isfinite(std) and std > 0,
            "std",
            std,
            "a positive finite standard deviation",
        )
        self.event_shape = _event_shape(event_shape)
        self.dim = math.prod(self.event_shape)
        self.std = float(std)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, shape (n, *event_shape)."""
        where = generator.device if generator is not None else device
        x = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype, device=where)
        x = x * self.std
        return x.to(device) if device is not None else x

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` of shape (B, *event_shape); returns (B,)."""
        flat = x.reshape(x.shape[0], -1) / self.std
        return -0.5 * flat.pow(2).sum(dim=1) - self.dim * (
            0.5 * math.log(2 * math.pi) + math.log(self.std)
        )

    def entropy(self) -> float:
        """Differential entropy in nats."""
        return self.dim * (0.5 * math.log(2 * math.pi * math.e) + math.log(self.std))


class StandardNormal(IsotropicNormal):
    """Standard normal density N(0, I) over an event shape (the default CNF base)."""

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__(event_shape, std=1.0)


def base_for_path(path: Any, event_shape: int | Sequence[int]) -> IsotropicNormal:
    """The t = 0 density a CNF trained on ``path`` should start from.

    N(0, I) for CondOT and VP; N(0, sigma_max^2 I) for VE (``path.prior_std``).
    """
    std = float(getattr(path, "prior_std", 1.0))
    return StandardNormal(event_shape) if std == 1.0 else IsotropicNormal(event_shape, std)


@dataclass
class CNFSample:
    """Samples of a CNF with the cost of drawing them.

    Attributes:
        x_1: samples at t = 1, shape (n, *event_shape).
        nfe: number of evaluations of the vector field made by the solver.
    """

    x_1: Tensor
    nfe: int


@dataclass
class CNFLogProb:
    """Log-likelihood of a CNF with the quantities computed along the way.

    Attributes:
        log_p: log p_1(x), shape (B,).
        x_0: the points at t = 0 that ``x`` flows back to, shape (B, *event_shape).
        delta_log_p: log p_0(x_0) - log p_1(x) = int_0^1 div v(t, x_t) dt, shape (B,).
        nfe: number of evaluations of the (augmented) dynamics made by the solver.
    """

    log_p: Tensor
    x_0: Tensor
    delta_log_p: Tensor
    nfe: int


class CNF(nn.Module):
    """Continuous normalizing flow density model: ``dx/dt = v(t, x)``, noise at t = 0.

    Used by "Flow Matching for Generative Modeling" (Lipman et al., arXiv:2210.02747) to
    sample and to evaluate likelihoods of a field trained with :func:`cfm_loss`, and trained
    by maximum likelihood in the FFJORD-style baseline (:func:`mlcnf_loss`).

    Args:
        vector_field: ``v(t, x)`` with ``t`` a 0-d tensor (inside solvers) or (B,) and ``x``
            of shape (B, *event_shape); returns the same shape. An ``nn.Module`` is registered
            as a submodule, so its parameters are the CNF's parameters.
        dim: the data dimension (int) or event shape (e.g. ``(1, 8, 8)`` for images).
        base: density at t = 0 with ``sample(n, generator=None)`` and ``log_prob(x) -> (B,)``
            (a :class:`torch.distributions.Distribution` also works); standard normal if None.

    Example:
        >>> cnf = CNF(MLPField(2), dim=2)
        >>> x = cnf.sample(512, method="midpoint", steps=8)
        >>> log_p = cnf.log_prob(x)                       # (512,), exact divergence, dopri5
    """

    def __init__(
        self,
        vector_field: Callable[[Tensor, Tensor], Tensor],
        dim: int | Sequence[int],
        base: Any = None,
    ) -> None:
        super().__init__()
        check(callable(vector_field), "vector_field", vector_field, "a callable v(t, x)")
        self.event_shape = _event_shape(dim)
        self.dim = math.prod(self.event_shape)
        if base is None:
            base = StandardNormal(self.event_shape)
        check(
            hasattr(base, "sample") and hasattr(base, "log_prob"),
            "base",
            base,
            "a density with sample(n) and log_prob(x), or None for a standard normal",
        )
        self.vector_field = vector_field
        self.base = base

    # ------------------------------------------------------------------ helpers
    def _like(self) -> tuple[torch.dtype, torch.device]:
        ref = next(iter(self.parameters()), None)
        if ref is None:
            ref = next((b for b in self.buffers() if b.is_floating_point()), None)
        if ref is None:
            return torch.get_default_dtype(), torch.device("cpu")
        return ref.dtype, ref.device

    def _flat_field(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``v`` acting on flattened states (B, D), as the divergence estimators expect."""
        if len(self.event_shape) == 1:
            return self.vector_field
        shape = self.event_shape
        field = self.vector_field

        def flat(t: Tensor, x: Tensor) -> Tensor:
            return field(t, x.reshape(x.shape[0], *shape)).reshape(x.shape[0], -1)

        return flat

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points from the base density (t = 0), shape (n, *event_shape), in the
        model's dtype and device (e.g. to reuse the same base points across solvers)."""
        check(
            isinstance(n, int) and not isinstance(n, bool) and n > 0,
            "n",
            n,
            "a positive integer number of samples",
        )
        return self._base_sample(n, generator)

    def _base_sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        dtype, device = self._like()
        if isinstance(self.base, torch.distributions.Distribution):
            return self.base.sample((n,)).to(device=device, dtype=dtype)
        if isinstance(self.base, IsotropicNormal):
            return self.base.sample(n, generator, dtype=dtype, device=device)
        return self.base.sample(n, generator=generator).to(device=device, dtype=dtype)

    def _grid(self, t0: float, t1: float, steps: int | None, like: Tensor) -> Tensor:
        if steps is None:
            return torch.tensor([t0, t1], dtype=like.dtype, device=like.device)
        check(
            isinstance(steps, int) and not isinstance(steps, bool) and steps > 0,
            "steps",
            steps,
            "a positive integer number of uniform solver steps (or None for adaptive solvers)",
        )
        return torch.linspace(t0, t1, steps + 1, dtype=like.dtype, device=like.device)

    def _check_x(self, x: Tensor, argument: str = "x") -> None:
        check_shape(x, argument)
        check(
            x.ndim == 1 + len(self.event_shape) and tuple(x.shape[1:]) == self.event_shape,
            argument,
            x,
            f"a batch of shape (B, {', '.join(map(str, self.event_shape))})",
        )
        check(x.is_floating_point(), argument, x, "a floating-point tensor")
        check_finite(x, argument)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """The vector field ``v(t, x)``."""
        return self.vector_field(t, x)

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        method: str = "dopri5",
        steps: int | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        generator: torch.Generator | None = None,
        return_nfe: bool = False,
        *,
        x_0: Tensor | None = None,
        grad: bool = False,
    ) -> Tensor | CNFSample:
        """Draw samples by integrating ``dx/dt = v(t, x)`` from t = 0 (base) to t = 1.

        Args:
            n: number of samples.
            method: any solver of :func:`flowfields.integrate.odeint` (``"dopri5"``,
                ``"euler"``, ``"midpoint"``, ``"rk4"``, ...).
            steps: number of uniform steps for fixed-step methods (required for them).
            rtol, atol: tolerances of adaptive solvers.
            generator: torch generator for the base samples.
            return_nfe: if True, return a :class:`CNFSample` with the NFE.
            x_0: base points to transport, shape (n, *event_shape), instead of drawing them.
            grad: keep the autograd graph (default: sample under ``torch.no_grad``).

        Returns:
            Samples of shape (n, *event_shape), or a :class:`CNFSample` if ``return_nfe``.

        Raises:
            FlowfieldsError: bad ``n``/``steps``/``x_0`` or an unknown solver name.
        """
        from flowfields.integrate import odeint

        check(
            isinstance(n, int) and not isinstance(n, bool) and n > 0,
            "n",
            n,
            "a positive integer number of samples",
        )
        if x_0 is None:
            x_0 = self._base_sample(n, generator)
        else:
            self._check_x(x_0, "x_0")
            check(x_0.shape[0] == n, "x_0", x_0, f"{n} base points (the value of n)")
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            grid = self._grid(0.0, 1.0, steps, x_0)
            sol = odeint(
                self.vector_field,
                x_0,
                grid,
                method=method,
                rtol=rtol,
                atol=atol,
                step_size=1.0 if steps == 1 else None,
            )
            x_1 = sol.x[-1]
        if return_nfe:
            return CNFSample(x_1=x_1, nfe=int(sol.nfe))
        return x_1

    # ------------------------------------------------------------------ likelihood
    def log_prob(
        self,
        x: Tensor,
        estimator: str = "exact",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        *,
        steps: int | None = None,
        probe: str | Tensor = "rademacher",
        generator: torch.Generator | None = None,
        adjoint: bool = False,
        return_nfe: bool = False,
    ) -> Tensor | CNFLogProb:
        """Log-density ``log p_1(x)`` by the instantaneous change of variables.

        Integrates the augmented state ``(x_t, l_t)`` with ``dl/dt = -div v(t, x_t)`` from
        t = 1 (``x``, 0) back to t = 0, then ``log p_1(x) = log p_0(x_0) - l_0``.

        Args:
            x: points at t = 1, shape (B, *event_shape).
            estimator: ``"exact"`` (trace of the Jacobian, D vector products per evaluation)
                or ``"hutchinson"`` (unbiased one-probe estimate, probe fixed over the solve).
            method, rtol, atol, steps: solver settings as in :meth:`sample`.
            probe: for Hutchinson, ``"rademacher"``, ``"gaussian"`` or a probe tensor of
                shape (B, D) with D the flattened dimension.
            generator: torch generator for the Hutchinson probe.
            adjoint: differentiate with the adjoint method (memory O(1) in the solver steps),
                as used for maximum-likelihood training.
            return_nfe: if True, return a :class:`CNFLogProb` record.

        Returns:
            ``log p_1(x)`` of shape (B,), or a :class:`CNFLogProb` if ``return_nfe``.

        Raises:
            FlowfieldsError: wrong shape, NaN in ``x``, unknown estimator, probe or solver.
        """
        from flowfields.divergence import AugmentedDynamics, sample_probe
        from flowfields.integrate import odeint

        self._check_x(x)
        check(estimator in ESTIMATORS, "estimator", estimator, f"one of {', '.join(ESTIMATORS)}")
        batch = x.shape[0]
        x_flat = x.reshape(batch, self.dim)
        probe_tensor = None
        if estimator == "hutchinson":
            if isinstance(probe, Tensor):
                check(probe.shape == x_flat.shape, "probe", probe, f"shape ({batch}, {self.dim})")
                probe_tensor = probe.to(dtype=x.dtype, device=x.device)
            else:
                check(probe in _PROBES, "probe", probe, f"one of {', '.join(_PROBES)} or a tensor")
                probe_tensor = sample_probe(x_flat, kind=probe, generator=generator)
        dynamics = AugmentedDynamics(self._flat_field(), estimator=estimator, probe=probe_tensor)
        grid = self._grid(1.0, 0.0, steps, x)
        state = (x_flat, torch.zeros(batch, dtype=x.dtype, device=x.device))
        kwargs: dict[str, Any] = {"method": method, "rtol": rtol, "atol": atol}
        if steps == 1:  # a two-point grid: tell fixed-step solvers to take a single step
            kwargs["step_size"] = 1.0
        if adjoint:
            params = tuple(p for p in self.parameters() if p.requires_grad)
            kwargs.update(adjoint=True, adjoint_params=params)
        sol = odeint(dynamics, state, grid, **kwargs)
        x_0 = sol.x[0][-1].reshape(batch, *self.event_shape)
        delta = sol.x[1][-1]
        log_p = self.base.log_prob(x_0) - delta
        if return_nfe:
            return CNFLogProb(log_p=log_p, x_0=x_0, delta_log_p=delta, nfe=int(sol.nfe))
        return log_p
