"""The ProbPath contract, PathSample's endpoints, and cfm_loss with a source and a metric."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.matching import cfm_loss
from flowfields.paths import CondOTPath, GaussianPath, PathSample, ProbPath, VEPath, VPPath

F64 = torch.float64


class CirclePath(ProbPath):
    """Geodesic path on the unit circle (angles): x_t = x_0 + t * wrap(x_1 - x_0)."""

    name = "circle"

    def __init__(self) -> None:
        self.checked = 0

    def sample(self, x_0, x_1, t):
        delta = torch.remainder(x_1 - x_0 + math.pi, 2 * math.pi) - math.pi
        tt = t.reshape(-1, *([1] * (x_1.ndim - 1)))
        return PathSample(t=t, x_t=x_0 + tt * delta, u_t=delta, x_0=x_0, x_1=x_1)

    def check_inputs(self, x_0, x_1, t):
        self.checked += 1
        super().check_inputs(x_0, x_1, t)


class HalfTime(CirclePath):
    t_max = 0.5


def test_prob_path_is_abstract_and_gaussian_paths_derive_from_it() -> None:
    with pytest.raises(TypeError):
        ProbPath()  # type: ignore[abstract]
    for path in (CondOTPath(), VPPath(), VEPath()):
        assert isinstance(path, ProbPath) and isinstance(path, GaussianPath)


@pytest.mark.parametrize("path", [CondOTPath(), VPPath(), VEPath(), CirclePath()])
def test_path_sample_carries_the_endpoints(path: ProbPath) -> None:
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    t = path.sample_t(6, generator=g, dtype=F64)
    s = path.sample(x_0, x_1, t)
    assert s.x_0 is x_0 and s.x_1 is x_1
    assert s.t.shape == (6,) and s.x_t.shape == s.u_t.shape == (6, 2)


def test_default_sample_t_is_uniform_on_the_paths_range() -> None:
    t = HalfTime().sample_t(20_000, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 0.5
    assert abs(float(t.mean()) - 0.25) < 4 * 0.5 / math.sqrt(12 * 20_000)  # 4 s.e.


def test_cfm_loss_with_a_source_and_a_metric_on_a_custom_path() -> None:
    """source(n) replaces N(0, I); metric(x, a, b) replaces the Euclidean inner product; the
    path's own check_inputs runs once per call (no isinstance special case)."""
    path = CirclePath()
    g = torch.Generator().manual_seed(2)
    x_1 = torch.rand(8, 1, generator=g, dtype=F64) * 2 * math.pi
    x_0 = torch.rand(8, 1, generator=g, dtype=F64) * 2 * math.pi
    t = torch.rand(8, generator=g, dtype=F64)

    def v(s, x):
        return torch.sin(x) + s[:, None]

    plain = cfm_loss(v, path, x_1, x_0=x_0, t=t)
    assert path.checked == 1
    assert cfm_loss(v, path, x_1, t=t, source=lambda n: x_0) == plain
    doubled = cfm_loss(v, path, x_1, x_0=x_0, t=t, metric=lambda x, a, b: 2 * (a * b).sum(-1))
    torch.testing.assert_close(doubled, 2 * plain)
    # a metric that depends on the point (a conformal factor) weights each example
    weighted = cfm_loss(
        v, path, x_1, x_0=x_0, t=t, metric=lambda x, a, b: (1 + x[:, 0] ** 2) * (a * b).sum(-1)
    )
    s = path.sample(x_0, x_1, t)
    expected = ((1 + s.x_t[:, 0] ** 2) * (v(t, s.x_t) - s.u_t).pow(2).sum(-1)).mean()
    torch.testing.assert_close(weighted, expected)


def test_default_source_draws_n01_before_the_times() -> None:
    """The default draws (x_0 ~ N(0, I) first, then t) are unchanged."""
    x_1 = torch.randn(5, 3, dtype=F64)
    path = CondOTPath()
    a = cfm_loss(lambda s, x: x, path, x_1, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    x_0 = torch.randn(x_1.shape, generator=g, dtype=F64)
    t = path.sample_t(5, generator=g)
    assert a == cfm_loss(lambda s, x: x, path, x_1, x_0=x_0, t=t)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"source": lambda n: torch.zeros(n + 1, 1)}, "source"),
        ({"metric": lambda x, a, b: a * b}, "metric"),
        ({"t": torch.full((4,), 1.5)}, r"\[0, 1\]"),
        ({"x_0": torch.full((4, 1), float("nan"))}, "x_0"),
    ],
)
def test_custom_path_bad_input(kwargs: dict, fragment: str) -> None:
    with pytest.raises(FlowfieldsError, match=fragment):
        cfm_loss(lambda s, x: x, CirclePath(), torch.zeros(4, 1), **kwargs)


def test_gaussian_paths_validate_inside_sample_instead() -> None:
    path = CondOTPath()
    bad = torch.tensor([[float("nan"), 0.0]])
    path.check_inputs(bad, bad, torch.zeros(1))  # the fast path: a no-op
    with pytest.raises(FlowfieldsError, match="x_0"):
        path.sample(bad, torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(FlowfieldsError, match="x_1"):
        cfm_loss(lambda s, x: x, path, bad)
