"""Time handling for vector-field networks: the one place ``v(t, x)`` conventions live.

A vector field in flowfields is a callable ``v(t, x)`` where ``t`` is a Python float, a 0-d
tensor, a (1,) tensor or a (B,) tensor, and ``x`` is (B, *dims). :func:`broadcast_time` turns
any of those into a (B,) tensor; :class:`TimeEmbedding` maps (B,) times to sinusoidal
features; :func:`as_field` adapts any module with a different calling convention.

Convention: t in [0, 1], noise at t = 0, data at t = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check, describe

__all__ = ["Field", "TimeEmbedding", "as_field", "broadcast_time"]


def broadcast_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Return ``t`` as a (B,) tensor with ``x``'s dtype and device (B = ``x.shape[0]``).

    Args:
        t: a float, a 0-d tensor, a (1,) tensor or a (B,) tensor.
        x: the batch, shape (B, *dims).

    Raises:
        FlowfieldsError: if ``t`` has any other shape.

    Works under ``torch.func`` transforms (no data-dependent checks).
    """
    batch = x.shape[0]
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return torch.full((batch,), float(t), dtype=x.dtype, device=x.device)
    if not isinstance(t, Tensor):
        raise FlowfieldsError(f"t: got {describe(t)}, expected a float or a tensor of times.")
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
        t = t.reshape(()).expand(batch)
    elif not (t.ndim == 1 and t.shape[0] == batch):
        raise FlowfieldsError(
            f"t: got {describe(t)}, expected a scalar, a 0-d tensor or a tensor of shape "
            f"({batch},) matching the batch of x {tuple(x.shape)}."
        )
    return t.to(dtype=x.dtype, device=x.device)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of time: ``[sin(w_k t), cos(w_k t)]_k`` with fixed frequencies.

    The angular frequencies ``w_k`` are geometrically spaced in
    ``[min_frequency, max_frequency]`` (radians per unit time). Over t in [0, 1] the defaults
    (1 to 100) span from a quarter period to about 16 periods; lower ``max_frequency`` gives
    smoother-in-time fields and fewer adaptive solver steps.

    Args:
        dim: output size (even, >= 2).
        min_frequency, max_frequency: frequency range, ``0 < min <= max``.

    Shapes:
        forward(t): t (B,) -> (B, dim).
    """

    frequencies: Tensor

    def __init__(self, dim: int = 32, min_frequency: float = 1.0, max_frequency: float = 100.0):
        super().__init__()
        check(
            isinstance(dim, int) and dim >= 2 and dim % 2 == 0, "dim", dim, "an even integer >= 2"
        )
        check(
            0 < min_frequency <= max_frequency,
            "max_frequency",
            max_frequency,
            f"a float >= min_frequency = {min_frequency} > 0",
        )
        self.dim = dim
        half = dim // 2
        if half == 1:
            freqs = torch.tensor([float(min_frequency)], dtype=torch.float64)
        else:
            freqs = torch.exp(
                torch.linspace(math.log(min_frequency), math.log(max_frequency), half)
            ).to(torch.float64)
        self.register_buffer("frequencies", freqs.to(torch.get_default_dtype()))

    def forward(self, t: Tensor) -> Tensor:
        check(t.ndim == 1, "t", t, "a tensor of shape (B,)")
        phase = t[:, None] * self.frequencies.to(t.dtype)[None, :]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)

    def extra_repr(self) -> str:
        f = self.frequencies
        return f"dim={self.dim}, frequencies=[{float(f[0]):.3g}, {float(f[-1]):.3g}]"


class Field(nn.Module):
    """Adapter giving any module the ``v(t, x)`` calling convention.

    Wraps ``module`` and calls it as ``module(t_b, x)`` (``order="tx"``) or ``module(x, t_b)``
    (``order="xt"``) with ``t_b`` the (B,) tensor from :func:`broadcast_time`
    (``time="batch"``), or with ``t`` as a 0-d tensor (``time="scalar"``), or not at all
    (``time="none"``, autonomous fields ``module(x)``).

    Parameters and buffers of ``module`` are registered (optimizers and ``state_dict`` see them).
    """

    follows_field_convention = True

    def __init__(self, module: nn.Module, order: str = "tx", time: str = "batch") -> None:
        super().__init__()
        check(order in ("tx", "xt"), "order", order, "'tx' or 'xt'")
        check(time in ("batch", "scalar", "none"), "time", time, "'batch', 'scalar' or 'none'")
        self.module = module
        self.order = order
        self.time = time

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        if self.time == "none":
            return self.module(x)
        if self.time == "batch":
            tt = broadcast_time(t, x)
        else:
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            if tt.ndim != 0:
                raise FlowfieldsError(
                    f"t: got {describe(tt)}, expected a scalar (this field is time='scalar')."
                )
        return self.module(tt, x) if self.order == "tx" else self.module(x, tt)

    def extra_repr(self) -> str:
        return f"order={self.order!r}, time={self.time!r}"


def as_field(module: nn.Module | Callable, order: str = "tx", time: str = "batch") -> nn.Module:
    """Adapt ``module`` to the ``v(t, x)`` convention (see :class:`Field`).

    Modules that already follow it (:class:`~flowfields.nn.MLPField`,
    :class:`~flowfields.nn.UNet`, other :class:`Field` s) are returned unchanged when
    ``order="tx"`` and ``time="batch"``. A plain callable is wrapped too (it then has no
    parameters).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> v = as_field(net, time="none")     # autonomous: v(t, x) = net(x)
    """
    conventional = getattr(module, "follows_field_convention", False)
    if isinstance(module, nn.Module) and conventional and order == "tx" and time == "batch":
        return module
    if not isinstance(module, nn.Module):
        check(callable(module), "module", module, "an nn.Module or a callable")
        module = _CallableModule(module)
    return Field(module, order=order, time=time)


class _CallableModule(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Tensor) -> Tensor:
        return self.fn(*args)
