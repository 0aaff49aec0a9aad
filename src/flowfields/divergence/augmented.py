"""The augmented dynamics every continuous normalizing flow (CNF) integrates.

Along a trajectory of ``dx/dt = v(t, x)`` the log-density of the pushed-forward distribution
obeys the instantaneous change of variables ``d/dt log p_t(x_t) = -div v(t, x_t)``. Integrating
the pair ``(x, log_p)`` with :class:`AugmentedDynamics` therefore gives
``log p_{t_end}(x(t_end)) - log p_{t_start}(x(t_start))`` in the second component.

A CNF's ``log_prob`` (flowfields convention: noise at t = 0, data at t = 1) integrates from
``t = 1`` back to ``t = 0`` starting from ``(x, 0)``; with ``(z, dlog)`` the state reached at
``t = 0``, ``log p_1(x) = log p_0(z) - dlog``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flowfields.divergence.estimators import (
    PROBE_KINDS,
    divergence_exact,
    divergence_hutchinson,
    divergence_hutchpp,
    sample_hutchpp_probes,
    sample_probe,
)
from flowfields.errors import FlowfieldsError, check

__all__ = ["ESTIMATORS", "AugmentedDynamics"]

#: Divergence estimators AugmentedDynamics offers.
ESTIMATORS: tuple[str, ...] = ("exact", "hutchinson", "hutch++")


class AugmentedDynamics(nn.Module):
    """``(t, (x, log_p)) -> (v(t, x), -div v(t, x))``: the CNF's state and log-density change.

    Reference: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations",
    arXiv:1806.07366 (instantaneous change of variables); Grathwohl et al., "FFJORD",
    arXiv:1810.01367 (Hutchinson's estimator with a fixed probe).

    Use it with :func:`flowfields.integrate.odeint` on a tuple state ``(x, log_p)``, with or
    without ``adjoint=True`` (the parameters of ``v`` are this module's parameters when ``v``
    is an ``nn.Module``).

    Args:
        v: vector field ``v(t, x)``, ``(B, D) -> (B, D)``.
        estimator: "exact" (``D`` products, see :func:`divergence_exact`), "hutchinson"
            (one product with a probe held fixed over the solve) or "hutch++" (``3k``
            products, see :func:`divergence_hutchpp`, probes held fixed).
        probe: the Hutchinson probe, shape ``(B, D)`` (for "hutch++": the pair ``(S, G)``
            of shape ``(B, D, k)`` each). If None, one is drawn (of kind ``probe_kind``,
            from ``generator``) at the first evaluation and kept until :meth:`reset_probe`;
            call that before each new solve.
        probe_kind: "rademacher" or "gaussian".
        generator: torch.Generator for drawn probes.
        mode: exact-divergence mode (see :func:`divergence_exact`).
        chunk_size: basis directions per vmapped batch in the exact "reverse"/"forward"
            modes (bounds memory for large ``D``, e.g. images).
        hutchpp_k: sketch size ``k`` of drawn Hutch++ probes.

    Example:
        >>> import torch
        >>> from flowfields.integrate import odeint
        >>> v = lambda t, x: -x                   # contracts: div v = -D, so dlog = D t
        >>> x_1 = torch.randn(5, 2, dtype=torch.float64)
        >>> dyn = AugmentedDynamics(v, estimator="exact")
        >>> sol = odeint(dyn, (x_1, torch.zeros(5, dtype=torch.float64)), [1.0, 0.0])
        >>> z, dlog = sol.x_final   # log p_1(x_1) = log N(z; 0, I) - dlog
        >>> round(float(dlog[0]), 6)              # int_1^0 -div v dt = -2
        -2.0
    """

    def __init__(
        self,
        v: Callable[[Tensor, Tensor], Tensor],
        estimator: Literal["exact", "hutchinson", "hutch++"] = "exact",
        probe: Tensor | tuple[Tensor, Tensor] | None = None,
        *,
        probe_kind: Literal["rademacher", "gaussian"] = "rademacher",
        generator: torch.Generator | None = None,
        mode: Literal["auto", "reverse", "forward", "loop"] = "auto",
        chunk_size: int | None = None,
        hutchpp_k: int = 2,
    ) -> None:
        super().__init__()
        check(callable(v), "v", v, "a callable v(t, x)")
        check(estimator in ESTIMATORS, "estimator", estimator, f"one of: {', '.join(ESTIMATORS)}")
        check(probe_kind in PROBE_KINDS, "probe_kind", probe_kind, f"one of {PROBE_KINDS}")
        if probe is not None and estimator == "hutch++":
            check(
                isinstance(probe, (tuple, list)) and len(probe) == 2,
                "probe",
                probe,
                "a pair (S, G) of tensors of shape (batch, dim, k) for Hutch++",
            )
        elif probe is not None:
            check(
                isinstance(probe, Tensor) and probe.ndim == 2,
                "probe",
                probe,
                "a tensor of shape (batch, dim)",
            )
        if isinstance(v, nn.Module):
            self.v = v
        else:
            object.__setattr__(self, "v", v)
        self.estimator = estimator
        self.probe = probe
        self.probe_kind = probe_kind
        self.generator = generator
        self.mode = mode
        self.chunk_size = chunk_size
        self.hutchpp_k = hutchpp_k
        self._user_probe = probe is not None

    def reset_probe(self, probe: Tensor | tuple[Tensor, Tensor] | None = None) -> None:
        """Forget the current probe (a new one is drawn at the next call) or set ``probe``."""
        self.probe = probe
        self._user_probe = probe is not None

    @staticmethod
    def _check_probe_batch(shape: Any, x: Tensor) -> None:
        if tuple(shape) != tuple(x.shape):
            raise FlowfieldsError(
                f"probe: got leading shape {tuple(shape)}, expected {tuple(x.shape)} "
                "(the state's shape). Call reset_probe() before solving a new batch."
            )

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Evaluate the augmented field.

        Args:
            t: time, 0-d tensor.
            state: ``(x, log_p)`` with shapes ``(B, D)`` and ``(B,)``.

        Returns:
            ``(v(t, x), -div v(t, x))`` with shapes ``(B, D)`` and ``(B,)``.
        """
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise FlowfieldsError(
                f"state: got {type(state).__name__}, expected a tuple (x, log_p) of shapes "
                "(B, D) and (B,)."
            )
        x, log_p = state
        if self.estimator == "exact":
            v_tx, div = divergence_exact(self.v, t, x, mode=self.mode, chunk_size=self.chunk_size)
        elif self.estimator == "hutchinson":
            if self.probe is None:
                self.probe = sample_probe(x, self.probe_kind, self.generator)
            assert isinstance(self.probe, Tensor)
            self._check_probe_batch(self.probe.shape[:2], x)
            v_tx, div = divergence_hutchinson(self.v, t, x, self.probe)
        else:
            if self.probe is None:
                self.probe = sample_hutchpp_probes(
                    x, self.hutchpp_k, self.probe_kind, self.generator
                )
            assert isinstance(self.probe, (tuple, list))
            probes = (self.probe[0], self.probe[1])
            self._check_probe_batch(probes[0].shape[:2], x)
            v_tx, div = divergence_hutchpp(self.v, t, x, probes)
        return v_tx, (-div).to(log_p.dtype)
