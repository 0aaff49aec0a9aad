"""Gauss–Legendre quadrature: exact for polynomials of degree 2n - 1, not for degree 2n."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.integrate import QuadratureRule, gauss_legendre

F64 = torch.float64


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-2.0, 3.5), (1.0, 1.25)])
def test_exact_for_degree_2n_minus_1_and_not_for_2n(n: int, a: float, b: float) -> None:
    """int_a^b t^k dt = (b^{k+1} - a^{k+1}) / (k + 1) for every k <= 2n - 1 (to rounding);
    the monomial of degree 2n is not integrated exactly (the error is the Gauss remainder,
    far above rounding), so the rule is exactly as exact as it claims."""
    rule = gauss_legendre(n, a, b)

    def rounding(k: int) -> float:  # what float64 summation of the rule can get wrong
        return 1e-14 * float((rule.weights * rule.nodes.abs() ** k).sum()) + 1e-300

    for k in range(2 * n):
        exact = (b ** (k + 1) - a ** (k + 1)) / (k + 1)
        got = float(rule.integrate(rule.nodes**k))
        assert abs(got - exact) <= rounding(k), (n, k, got, exact)
    k = 2 * n
    exact = (b ** (k + 1) - a ** (k + 1)) / (k + 1)
    # remainder (b - a)^{2n+1} (n!)^4 / ((2n + 1) ((2n)!)^3) f^{(2n)}, f^{(2n)} = (2n)!
    remainder = (
        (b - a) ** (2 * n + 1) * math.factorial(n) ** 4 / ((2 * n + 1) * math.factorial(2 * n) ** 2)
    )
    err = exact - float(rule.integrate(rule.nodes**k))
    assert err == pytest.approx(remainder, rel=1e-6, abs=10 * rounding(k))
    if n <= 5 and b - a >= 1:  # the remainder stands far above rounding: not exact for 2n
        assert remainder > 100 * rounding(k)


def test_weights_nodes_dtype_device_and_unpacking() -> None:
    nodes, weights = gauss_legendre(7, -1.0, 2.0, dtype=torch.float32)
    assert nodes.dtype == weights.dtype == torch.float32 and nodes.shape == (7,)
    assert torch.all(weights > 0) and abs(float(weights.sum()) - 3.0) < 1e-6
    assert torch.all(nodes[1:] > nodes[:-1]) and float(nodes[0]) > -1 and float(nodes[-1]) < 2
    ref_x, ref_w = np.polynomial.legendre.leggauss(7)
    np.testing.assert_allclose(
        gauss_legendre(7, -1.0, 1.0).nodes.numpy(), ref_x, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        gauss_legendre(7, -1.0, 1.0).weights.numpy(), ref_w, rtol=0, atol=1e-15
    )
    assert isinstance(gauss_legendre(2), QuadratureRule)


def test_integrates_vector_valued_functions() -> None:
    rule = gauss_legendre(12, 0.0, math.pi)
    values = torch.stack([torch.sin(rule.nodes), torch.cos(rule.nodes) ** 2], dim=1)
    torch.testing.assert_close(
        rule.integrate(values), torch.tensor([2.0, math.pi / 2], dtype=F64), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [
        ((0,), {}, "n"),
        ((2.5,), {}, "n"),
        ((3, 1.0, 0.0), {}, "a, b"),
        ((3, 0.0, float("inf")), {}, "a, b"),
        ((3,), {"dtype": torch.int64}, "dtype"),
    ],
)
def test_bad_input(args, kwargs, fragment: str) -> None:
    with pytest.raises(FlowfieldsError, match=fragment):
        gauss_legendre(*args, **kwargs)
    with pytest.raises(FlowfieldsError, match="values"):
        gauss_legendre(3).integrate(torch.ones(4))
