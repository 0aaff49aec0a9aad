"""The probability-path contract: :class:`ProbPath` and the :class:`PathSample` it draws.

A conditional probability path (Lipman et al., "Flow Matching for Generative Modeling",
arXiv:2210.02747, Sec. 3) pairs a noise point ``x_0`` (t = 0) with a data point ``x_1``
(t = 1) and gives, at time t, a point ``x_t = psi_t(x_0 | x_1)`` and its velocity
``u_t = d/dt psi_t(x_0 | x_1)``, the regression target of conditional flow matching
(:func:`flowfields.matching.cfm_loss`). Gaussian paths (:mod:`flowfields.paths.gaussian`)
are one family; geodesic paths on manifolds are another (the PPD paper): each subclasses
:class:`ProbPath` and implements :meth:`ProbPath.sample`.

Convention (flowfields-wide): t in [0, 1], noise at t = 0, data at t = 1.

Example:
    >>> import torch
    >>> from flowfields.paths import PathSample, ProbPath
    >>> class Linear(ProbPath):
    ...     name = "linear"
    ...     def sample(self, x_0, x_1, t):
    ...         tt = t.reshape(-1, *([1] * (x_1.ndim - 1)))
    ...         return PathSample(t=t, x_t=(1 - tt) * x_0 + tt * x_1, u_t=x_1 - x_0,
    ...                           x_0=x_0, x_1=x_1)
    >>> path = Linear()
    >>> s = path.sample(torch.zeros(3, 2), torch.ones(3, 2), path.sample_t(3))
    >>> s.u_t.tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check, check_finite, describe

__all__ = ["PathSample", "ProbPath", "check_path_inputs", "check_times"]


@dataclass
class PathSample:
    """A draw from a conditional path.

    Attributes:
        t: times, shape (B,).
        x_t: points ``psi_t(x_0 | x_1)``, shape (B, *dims).
        u_t: conditional target ``u_t = d/dt psi_t(x_0 | x_1)``, shape (B, *dims).
        x_0: the noise (t = 0) points, shape (B, *dims) (set by every path in flowfields;
            None only from a duck-typed path that does not set it).
        x_1: the data (t = 1) points, shape (B, *dims) (likewise).
    """

    t: Tensor
    x_t: Tensor
    u_t: Tensor
    x_0: Tensor | None = None
    x_1: Tensor | None = None


def check_times(t: Tensor | float, batch: int | None, argument: str = "t") -> tuple[Tensor, float]:
    """Validate ``t`` in [0, 1] (one device sync); return it, as (batch,) if asked, and its max.

    Returns:
        ``(t, t_max)``: ``t`` as given (a float becomes a float64 0-d tensor), expanded to
        shape (batch,) when ``batch`` is given, and its largest value (``-inf`` if empty).

    Raises:
        FlowfieldsError: not a floating tensor or float, a shape that does not match the
            batch, NaN / Inf, values outside [0, 1].
    """
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=torch.float64)
    check(isinstance(t, Tensor), argument, t, "a float or a tensor of times")
    assert isinstance(t, Tensor)
    check(t.is_floating_point(), argument, t, "a floating-point tensor")
    if batch is not None:
        if t.ndim == 0:
            t = t.expand(batch)
        check(
            t.ndim == 1 and t.shape[0] == batch,
            argument,
            t,
            f"a scalar or a tensor of shape ({batch},) matching the batch",
        )
    if not t.numel():
        return t, -math.inf
    lo, hi = torch.stack(torch.aminmax(t.detach())).tolist()  # NaN propagates to both
    if not (lo >= 0.0 and hi <= 1.0):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise FlowfieldsError(f"{argument}: got {describe(t)} with NaN or Inf, expected finite")
        raise FlowfieldsError(
            f"{argument}: got values in [{lo:.6g}, {hi:.6g}], "
            "expected times in [0, 1] (noise at t = 0, data at t = 1)."
        )
    return t, hi


def check_path_inputs(x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
    """The checks :func:`~flowfields.matching.cfm_loss` needs before calling a path's
    ``sample``: finite ``x_0`` and ``x_1`` (one reduction each, the entry-wise check only on
    failure) and times in [0, 1]."""
    if not math.isfinite(float(x_1.detach().sum())):
        check_finite(x_1, "x_1")
    if not math.isfinite(float(x_0.detach().sum())):
        check_finite(x_0, "x_0")
    check(bool(((t >= 0) & (t <= 1)).all()), "t", t, "times in [0, 1]")


class ProbPath(ABC):
    """A conditional probability path: ``sample(x_0, x_1, t) -> PathSample``.

    Subclasses implement :meth:`sample`; :meth:`sample_t` (uniform times on
    ``[t_min, t_max]``) and :meth:`check_inputs` have defaults.

    Attributes:
        name: short name (used by :func:`~flowfields.paths.get_path` for the built-in ones).
        t_min, t_max: the range :meth:`sample_t` draws from (a training range).
    """

    name: str = "path"
    t_min: float = 0.0
    t_max: float = 1.0

    @abstractmethod
    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor | float) -> PathSample:
        """Draw ``x_t = psi_t(x_0 | x_1)`` and its target ``u_t``.

        Args:
            x_0: noise (t = 0) points, shape (B, *dims).
            x_1: data (t = 1) points, shape (B, *dims).
            t: times, shape (B,) or scalar, in [0, 1].

        Returns:
            :class:`PathSample` with ``t`` (B,), ``x_t``, ``u_t``, ``x_0``, ``x_1`` (B, *dims).
        """

    def sample_t(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``n`` times uniform on ``[t_min, t_max]``, shape (n,) (drawn in float64)."""
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 0, "n", n, "an integer >= 0")
        dev = device if device is not None else (generator.device if generator else None)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
        # [0, 1] needs no affine map (two tensor ops less per training step, same values).
        t = (
            u
            if (self.t_min, self.t_max) == (0.0, 1.0)
            else self.t_min + (self.t_max - self.t_min) * u
        )
        return t.to(dtype or torch.get_default_dtype())

    def check_inputs(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
        """Validate what :func:`~flowfields.matching.cfm_loss` is about to pass to
        :meth:`sample` (default: :func:`check_path_inputs`). A path whose ``sample`` checks
        its own inputs overrides this with a no-op (the fast path)."""
        check_path_inputs(x_0, x_1, t)
