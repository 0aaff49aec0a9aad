"""User-facing errors.

Every error a user can trigger says what was given, what was expected and, where it helps,
how to fix it. All derive from :class:`FlowfieldsError`, itself a ``ValueError`` so that code
catching ``ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "FlowfieldsError",
    "NonFiniteLossError",
    "check",
    "check_finite",
    "check_positive_ints",
    "check_shape",
    "describe",
]


class FlowfieldsError(ValueError):
    """Bad input or an unusable state, with a message a user can act on."""


class CheckpointError(FlowfieldsError):
    """A checkpoint is missing, truncated or does not match the model."""


class NonFiniteLossError(FlowfieldsError, FloatingPointError):
    """Training produced NaN or Inf; carries the step, recent losses and last good checkpoint."""

    def __init__(
        self,
        message: str,
        *,
        step: int | None = None,
        recent_losses: list[float] | None = None,
        last_checkpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.recent_losses = list(recent_losses or [])
        self.last_checkpoint = last_checkpoint


def describe(x: Any) -> str:
    """Short description of a value for error messages (tensors: shape, dtype, device)."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        device = getattr(x, "device", None)
        where = f", device={device}" if device is not None else ""
        return f"{type(x).__name__}(shape={tuple(shape)}, dtype={dtype}{where})"
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def check(condition: bool, argument: str, given: Any, expected: str, hint: str = "") -> None:
    """Raise :class:`FlowfieldsError` naming ``argument`` unless ``condition`` holds.

    Example:
        >>> n = -3
        >>> check(n > 0, "n", n, "a positive integer")
        Traceback (most recent call last):
            ...
        flowfields.errors.FlowfieldsError: n: got -3, expected a positive integer.
    """
    if not condition:
        msg = f"{argument}: got {describe(given)}, expected {expected}."
        if hint:
            msg += f" {hint}"
        raise FlowfieldsError(msg)


def check_positive_ints(obj: Any, *names: str) -> None:
    """Raise :class:`FlowfieldsError` unless each attribute ``names`` of ``obj`` is an int >= 1.

    Example:
        >>> from types import SimpleNamespace
        >>> check_positive_ints(SimpleNamespace(steps=10, batch=0), "steps", "batch")
        Traceback (most recent call last):
            ...
        flowfields.errors.FlowfieldsError: batch: got 0, expected a positive integer.
    """
    for name in names:
        value = getattr(obj, name)
        check(isinstance(value, int) and value >= 1, name, value, "a positive integer")


def check_shape(x: Any, argument: str, ndim: int | None = None, last: int | None = None) -> None:
    """Check that ``x`` is a tensor with ``ndim`` dims and trailing size ``last`` (if given)."""
    import torch

    check(isinstance(x, torch.Tensor), argument, x, "a torch.Tensor")
    if ndim is not None:
        check(x.ndim == ndim, argument, x, f"a tensor with {ndim} dimensions")
    if last is not None:
        check(x.ndim >= 1 and x.shape[-1] == last, argument, x, f"last dimension of size {last}")


def check_finite(x: Any, argument: str) -> None:
    """Raise :class:`FlowfieldsError` if tensor ``x`` holds NaN or Inf."""
    import torch

    if isinstance(x, torch.Tensor) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise FlowfieldsError(
            f"{argument}: got {describe(x)} with {bad} non-finite entries (NaN or Inf), "
            "expected finite values. Clean or filter the data first."
        )
