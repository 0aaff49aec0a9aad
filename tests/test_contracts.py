"""The density contract, run over every density model in flowfields.

Every model with ``sample`` and ``log_prob`` (a :class:`flowfields.density.DensityModel`) has
one :class:`DensityEntry` in :data:`REGISTRY`. A new paper adds its models by appending
entries; nothing else in this file changes. An entry says:

- ``name``: the test id;
- ``factory(dtype, device) -> model``: builds the model, seeded, in that dtype and on that
  device (fit it here if it needs data: keep it small);
- ``event_shape``: the shape of one sample;
- ``box``: for models with 2 dimensions per event (any event shape of 2 elements), the box
  ``((lo_0, hi_0), (lo_1, hi_1))`` holding all but a negligible part of the mass, over which
  the density is integrated and the samples are binned; None for higher dimensions;
- ``cells``: quadrature cells per side (``bins`` x cells-per-bin), ``bins``: goodness-of-fit
  bins per side (edges aligned with any discontinuity of the density);
- ``mass_tol``: the allowed ``|integral - 1|`` (quadrature + solver error; the reason given);
- flags: ``exact_log_prob`` (False for stochastic estimates), ``has_sample``, ``weights``
  (an ``nn.Module`` whose ``.to(dtype)`` sets the dtype of its samples: False for the
  dtype-agnostic toys), ``strict_dtype`` (``log_prob`` refuses another float dtype),
  ``smooth`` (``log_prob`` is differentiable in x: checked against finite differences),
  ``no_grad`` (parameter-name prefixes that do not affect ``log_prob``, e.g. a velocity-only
  correction).

Contracts (each a test below, parametrised over the registry):

1. ``isinstance(model, DensityModel)`` and its ``event_shape``;
2. shapes and dtypes: ``sample(n, generator=g)`` is ``(n, *event_shape)`` in the model's dtype
   (float32 and float64), ``log_prob`` is ``(n,)``, finite on samples, in the input's dtype;
3. device: the same on every available device (CUDA is skipped cleanly without one);
4. normalisation: the midpoint rule over ``box`` integrates ``exp(log_prob)`` to 1 within
   ``mass_tol`` (float64);
5. samples agree with ``log_prob``: a chi-square test of 8000 samples (fixed generator) in
   the ``bins x bins`` cells of the box plus one outside cell, expected counts from the
   quadrature, cells with expected count < 5 pooled; the test fails when ``p < 1e-3`` (the
   false-alarm rate of each entry). To show the test has power, samples scaled by 1.15 about
   the box centre must fail it (p < 1e-3);
6. gradients reach every parameter (``-log_prob(samples).mean()``), and for smooth models the
   gradient in x equals central finite differences (float64);
7. ``state_dict`` round trip: a model with perturbed state loaded from the original's
   ``state_dict`` (through ``torch.save``) gives bit-identical ``log_prob``;
8. bad input raises ``FlowfieldsError``: wrong shapes, NaN, Inf, integer / boolean / complex
   dtypes, the wrong float dtype for ``strict_dtype`` models, bad sample counts.

Budget: about 30 s of CPU for the whole file on one thread (small models, 96-192 cells per
side, fixed-step solvers for the CNFs but the maximum-likelihood set-up, which keeps dopri5).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import torch
from scipy.stats import chi2
from torch import nn

from flowfields.conservation import PositiveDensityFlux
from flowfields.data import get_toy
from flowfields.density import DensityModel
from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions
from flowfields.matching import (
    CNF,
    FullCovarianceGaussian,
    IndependentPixelHistogram,
    IsotropicNormal,
    StandardNormal,
    base_for_path,
)
from flowfields.nn import MLPField
from flowfields.paths import CondOTPath, VEPath, VPPath

F64 = torch.float64
Box = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class DensityEntry:
    """One density model under the contract (see the module docstring)."""

    name: str
    factory: Callable[[torch.dtype, torch.device], Any]
    event_shape: tuple[int, ...]
    box: Box | None = None
    cells: int = 96
    bins: int = 8
    mass_tol: float = 1e-3
    exact_log_prob: bool = True
    has_sample: bool = True
    weights: bool = True
    strict_dtype: bool = False
    smooth: bool = True
    no_grad: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


# ------------------------------------------------------------------------------ factories
def _seeded(build: Callable[[], Any], seed: int = 0) -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


class _Scaled(nn.Module):
    """A field times a constant (a small random MLP moves mass by about 0.1; this by ~1)."""

    follows_field_convention = True

    def __init__(self, field: nn.Module, scale: float) -> None:
        super().__init__()
        self.field, self.scale = field, scale

    def forward(self, t, x):
        return self.scale * self.field(t, x)


class _ImageField(nn.Module):
    """An MLP field on (B, 1, 1, 2) events: the CNF's flattening of image-shaped states."""

    def __init__(self) -> None:
        super().__init__()
        self.field = MLPField(2, hidden=16, depth=2, time_embed_dim=4)

    def forward(self, t, x):
        return 3.0 * self.field(t, x.reshape(x.shape[0], 2)).reshape(x.shape)


_RK4 = ODEOptions("rk4", step_size=1 / 16)


def _cnf(base: nn.Module, solver: ODEOptions = _RK4, seed: int = 0):
    def factory(dtype: torch.dtype, device: torch.device) -> CNF:
        field = _seeded(
            lambda: _Scaled(MLPField(2, hidden=16, depth=2, time_embed_dim=4), 3.0), seed
        )
        return CNF(field, dim=2, base=base, solver=solver).to(dtype=dtype, device=device)

    return factory


def _image_cnf(dtype: torch.dtype, device: torch.device) -> CNF:
    field = _seeded(_ImageField, 4)
    return CNF(field, dim=(1, 1, 2), solver=_RK4).to(dtype=dtype, device=device)


def _histogram(dtype: torch.dtype, device: torch.device) -> IndependentPixelHistogram:
    g = torch.Generator().manual_seed(3)
    data = torch.minimum(
        torch.randint(0, 4, (300, 1, 1, 2), generator=g),
        torch.randint(0, 4, (300, 1, 1, 2), generator=g),
    )
    model = IndependentPixelHistogram((1, 1, 2), levels=4, alpha=1.0).fit(data)
    return model.to(dtype=dtype, device=device)


def _full_gaussian(dtype: torch.dtype, device: torch.device) -> FullCovarianceGaussian:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(500, 2, generator=g, dtype=F64)
    data = z @ torch.tensor([[1.0, 0.6], [0.0, 0.5]], dtype=F64) + torch.tensor([0.5, -1.0])
    return FullCovarianceGaussian((2,)).fit(data).to(dtype=dtype, device=device)


def _ncl_marginal(dtype: torch.dtype, device: torch.device) -> nn.Module:
    model = _seeded(
        lambda: PositiveDensityFlux(
            2, n_components=3, hidden=16, depth=2, correction_hidden=8, correction_depth=1
        ),
        5,
    )
    return model.marginal(0.4).to(dtype=dtype, device=device)


def _cpflow(dtype: torch.dtype, device: torch.device) -> nn.Module:
    from flowfields.cpflow import CPFlow

    def build() -> CPFlow:
        flow = CPFlow(2, blocks=2, hidden=8, depth=2)
        g = torch.Generator().manual_seed(7)
        flow.initialize(torch.randn(256, 2, generator=g) * torch.tensor([1.5, 0.7]) + 0.3)
        return flow

    return _seeded(build, 6).to(dtype=dtype, device=device)


def _toy(name: str) -> Callable[[torch.dtype, torch.device], Any]:
    return lambda dtype, device: get_toy(name)


def _action_density(dtype: torch.dtype, device: torch.device) -> nn.Module:
    from flowfields.rl import ActionDensity, TanhGaussianPolicy

    def build() -> nn.Module:
        policy = TanhGaussianPolicy(3, 2, hidden=16)
        with torch.no_grad():  # sigma about 0.4: the density vanishes smoothly at the box edges
            policy.log_std.weight.mul_(0.1)
            policy.log_std.bias.fill_(-0.9)
        return ActionDensity(policy, torch.tensor([0.3, -0.5, 0.8]))

    return _seeded(build, 6).to(dtype=dtype, device=device)


def _voronoi_mixture(dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A 5-cell Voronoi mixture on [-2, 2]^2 (arXiv:2203.06832), non-uniform weights and
    per-cell scales, an NSF conditioned on a per-cell embedding."""
    from flowfields.voronoi import VoronoiMixture, VoronoiTessellation, make_flow

    def build() -> nn.Module:
        anchors = torch.tensor([[-1.0, -1.0], [1.0, -0.5], [0.3, 1.2], [-0.8, 0.9], [0.1, 0.0]])
        tess = VoronoiTessellation(anchors, -2.0, 2.0)
        m = VoronoiMixture(tess, context=3, flow=make_flow(2, 3, hidden=(16, 16)))
        with torch.no_grad():
            m.logits.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0, -0.5]))
            m.theta.copy_(torch.tensor([0.3, -0.5, 0.0, 1.0, -0.2]))
        return m

    return _seeded(build, 6).to(dtype=dtype, device=device)


def _voronoi_mixture_flow(dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The Voronoi mixture as a layer on R^2: an NSF, a sigmoid onto [-1, 1]^2, 5 cells."""
    from flowfields.voronoi import (
        VoronoiMixture,
        VoronoiMixtureFlow,
        VoronoiTessellation,
        make_flow,
    )

    def build() -> nn.Module:
        anchors = torch.tensor([[-0.4, -0.4], [0.4, -0.2], [0.1, 0.5], [-0.3, 0.35], [0.0, 0.0]])
        mix = VoronoiMixture(
            VoronoiTessellation(anchors),
            context=3,
            flow=make_flow(2, 3, transforms=1, hidden=(16,)),
        )
        with torch.no_grad():
            mix.logits.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0, -0.5]))
        return VoronoiMixtureFlow(mix, make_flow(2, 0, transforms=1, hidden=(16,)))

    return _seeded(build, 6).to(dtype=dtype, device=device)


def _flow_mixture(dtype: torch.dtype, device: torch.device) -> nn.Module:
    from flowfields.voronoi import FlowMixture, make_flow

    build = lambda: FlowMixture(2, 3, context=2, flow=make_flow(2, 2, hidden=(16,)))  # noqa: E731
    return _seeded(build, 7).to(dtype=dtype, device=device)


def _manifold_cnf(which: str) -> Callable[[torch.dtype, torch.device], Any]:
    from flowfields.manifolds import FlatTorus, Sphere
    from flowfields.ppd import ManifoldField

    def factory(dtype: torch.dtype, device: torch.device) -> CNF:
        m = FlatTorus(2) if which == "t2" else Sphere(2)
        field = _seeded(lambda: _Scaled(ManifoldField(m, hidden=16, depth=2), 2.0), 6)
        return CNF(field, m.ambient_dim, manifold=m, solver=_RK4).to(dtype=dtype, device=device)

    return factory


def _ppd_density(which: str) -> Callable[[torch.dtype, torch.device], Any]:
    """The exact densities of the PPD experiments (flowfields.ppd), float64-built, moved."""
    from flowfields import ppd
    from flowfields.manifolds import FlatTorus, Sphere

    def factory(dtype: torch.dtype, device: torch.device) -> Any:
        g = torch.Generator().manual_seed(11)
        if which == "ring":
            model = ppd.ring_and_blobs(g, kappa=10.0)
            assert isinstance(model, ppd.RingAndBlobs)
        elif which == "vmf":
            model = ppd.random_vmf_mixture(3, (2.0, 20.0), g)
            assert isinstance(model, ppd.VMFMixture)
        elif which == "von-mises":
            mus = torch.tensor([[0.5, -2.0], [-1.5, 1.0], [3.0, 3.0]], dtype=F64)
            kappas = torch.tensor([[2.0, 6.0], [1.0, 0.3], [4.0, 4.0]], dtype=F64)
            model = ppd.VonMisesMixture(torch.tensor([0.3, 0.5, 0.2], dtype=F64), mus, kappas)
        elif which == "vmf-path":  # the PPD target path's marginal p_t on S^2 (a KernelPath)
            centers = ppd.random_vmf_mixture(4, (5.0, 5.0), g).sample(5, generator=g)
            model = ppd.VMFMixturePath(Sphere(2), ppd.KappaSchedule(20.0)).marginal(0.5, centers)
            assert isinstance(model, ppd.PathMarginal)
        elif which == "von-mises-path":  # the same on T^2, product von Mises kernels
            centers = torch.tensor([[0.5, -2.0], [-1.5, 1.0], [3.0, 3.0]], dtype=F64)
            path = ppd.VonMisesMixturePath(FlatTorus(2), ppd.KappaSchedule(8.0))
            model = path.marginal(0.7, centers)
        else:  # wrapped normals straddling the seam at +-pi
            mus = torch.tensor([[0.5, -2.8], [3.0, 1.0]], dtype=F64)
            sigmas = torch.tensor([[0.4, 0.9], [1.2, 0.5]], dtype=F64)
            model = ppd.WrappedNormalMixture(torch.tensor([0.6, 0.4], dtype=F64), mus, sigmas)
        return model.to(dtype=dtype, device=device)

    return factory


# ------------------------------------------------------------------------------ registry
#: Every density model in flowfields. Append entries here (one per model / set-up).
REGISTRY: list[DensityEntry] = [
    # CNFs (one per path's base) on a random field scaled to move mass by about 1, rk4 with
    # h = 1/16: the density integrates to 1 up to the solver's O(h^4) (measured 2e-5 and below)
    DensityEntry(
        "cnf-condot",
        _cnf(base_for_path(CondOTPath(), 2)),
        (2,),
        ((-7.0, 7.0),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
    ),
    DensityEntry(
        "cnf-vp",
        _cnf(base_for_path(VPPath(), 2), seed=1),
        (2,),
        ((-7.0, 7.0),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
    ),
    DensityEntry(
        "cnf-ve",
        _cnf(base_for_path(VEPath(sigma_max=3.0), 2), seed=2),
        (2,),
        ((-16.0, 16.0),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
    ),
    # the maximum-likelihood CNF as flow-matching-2d trains it: dopri5 at 1e-5, adjoint
    # gradients (adaptive steps: log_prob is not smooth enough in x for finite differences)
    DensityEntry(
        "cnf-mlcnf-adjoint",
        _cnf(StandardNormal(2), ODEOptions(rtol=1e-5, atol=1e-5, adjoint=True), seed=3),
        (2,),
        ((-7.0, 7.0),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
        smooth=False,
    ),
    DensityEntry(
        "cnf-image-event",
        _image_cnf,
        (1, 1, 2),
        ((-7.0, 7.0),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
    ),
    # closed forms: the midpoint rule is spectrally accurate on these smooth, decaying
    # densities, so the tolerance is the box's tail mass (below 1e-8)
    DensityEntry(
        "standard-normal",
        lambda d, dev: StandardNormal(2).to(d).to(dev),
        (2,),
        ((-6.0, 6.0),) * 2,
        mass_tol=1e-6,
    ),
    DensityEntry(
        "isotropic-normal",
        lambda d, dev: IsotropicNormal((2,), 0.7).to(d).to(dev),
        (2,),
        ((-4.5, 4.5),) * 2,
        mass_tol=1e-6,
    ),
    # convex potential flow (arXiv:2012.05942), two blocks, exact log-det (Hessian Cholesky):
    # |integral - 1| measured 3e-6 over this box (tail mass + midpoint rule)
    DensityEntry(
        "cpflow-2block",
        _cpflow,
        (2,),
        ((-7.0, 7.0), (-4.0, 4.0)),
        mass_tol=1e-4,
        strict_dtype=True,
    ),
    # piecewise constant on cells aligned with the bins: exact up to rounding
    DensityEntry(
        "pixel-histogram",
        _histogram,
        (1, 1, 2),
        ((0.0, 1.0),) * 2,
        bins=4,
        mass_tol=1e-9,
        smooth=False,
    ),
    DensityEntry(
        "full-covariance-gaussian", _full_gaussian, (2,), ((-6.0, 7.0), (-6.0, 4.0)), mass_tol=1e-6
    ),
    # the neural-conservation-law density at t = 0.4 (the correction field moves mass without
    # changing the density, so its weights get no gradient from log_prob)
    DensityEntry(
        "ncl-mixture-marginal",
        _ncl_marginal,
        (2,),
        ((-7.0, 7.0),) * 2,
        mass_tol=1e-6,
        strict_dtype=True,
        no_grad=("model.correction",),
    ),
    DensityEntry(
        "toy-checkerboard",
        _toy("checkerboard"),
        (2,),
        ((-4.0, 4.0),) * 2,
        mass_tol=1e-9,
        weights=False,
        smooth=False,
    ),
    DensityEntry(
        "toy-8gaussians", _toy("8gaussians"), (2,), ((-6.0, 6.0),) * 2, mass_tol=1e-6, weights=False
    ),
    DensityEntry(
        "toy-rings",
        _toy("rings"),
        (2,),
        ((-3.6, 3.6),) * 2,
        cells=192,
        mass_tol=1e-6,
        weights=False,
    ),
    # manifold CNFs (PPD, arXiv:2207.04711): a random tangent field on T^2 (periodic features,
    # the box is the torus itself) and on S^2 (3 ambient coordinates: no box here; its mass
    # on the sphere is checked by quadrature in tests/ppd/test_ppd_paths.py). rk4, h = 1/16.
    DensityEntry(
        "cnf-manifold-t2",
        _manifold_cnf("t2"),
        (2,),
        ((-math.pi, math.pi),) * 2,
        mass_tol=2e-4,
        strict_dtype=True,
    ),
    DensityEntry("cnf-manifold-s2", _manifold_cnf("s2"), (3,), strict_dtype=True),
    # PPD's data densities: on S^2 (3 ambient coordinates, no box) and on T^2 (the box is the
    # torus; smooth and periodic, so the midpoint rule is spectrally accurate)
    DensityEntry("ppd-ring-and-blobs", _ppd_density("ring"), (3,)),
    DensityEntry("ppd-vmf-mixture", _ppd_density("vmf"), (3,)),
    DensityEntry(
        "ppd-von-mises-mixture-t2",
        _ppd_density("von-mises"),
        (2,),
        ((-math.pi, math.pi),) * 2,
        mass_tol=1e-9,
    ),
    # the PPD target paths themselves (KernelPath.marginal: p_t at one t over fixed centers)
    DensityEntry("ppd-vmf-path-s2", _ppd_density("vmf-path"), (3,)),
    DensityEntry(
        "ppd-von-mises-path-t2",
        _ppd_density("von-mises-path"),
        (2,),
        ((-math.pi, math.pi),) * 2,
        mass_tol=1e-9,
    ),
    DensityEntry(
        "ppd-wrapped-normal-mixture-t2",
        _ppd_density("wrapped-normal"),
        (2,),
        ((-math.pi, math.pi),) * 2,
        mass_tol=1e-9,
    ),
    # the Voronoi mixture: zero outside its box [-2, 2]^2 (the quadrature box) and
    # discontinuous across the cell faces, so the midpoint rule is first order there
    # (measured |mass - 1| = 1.4e-3 at 192 cells per side, 1.3e-4 at 400, 2e-5 at 800)
    DensityEntry(
        "voronoi-mixture",
        _voronoi_mixture,
        (2,),
        ((-2.0, 2.0),) * 2,
        cells=384,
        mass_tol=3e-4,
        strict_dtype=True,
        smooth=False,
    ),
    # the mixture as a layer on R^2: its density drops to zero at the faces' images, so the
    # midpoint rule converges slowly (measured mass 1.0012 at 400 cells per side, 1.00003 at
    # 800, 1.00002 at 1600; the tails beyond [-6, 6]^2 are negligible)
    DensityEntry(
        "voronoi-mixture-flow",
        _voronoi_mixture_flow,
        (2,),
        ((-6.0, 6.0),) * 2,
        cells=800,
        mass_tol=2e-4,
        strict_dtype=True,
        smooth=False,
    ),
    # its baseline, a standard 3-component mixture of one conditional NSF (C^1 splines:
    # measured |mass - 1| = 1.3e-4 at 192 cells per side, 3e-5 at 400)
    DensityEntry(
        "voronoi-flow-mixture",
        _flow_mixture,
        (2,),
        ((-7.0, 7.0),) * 2,
        cells=320,
        mass_tol=1e-4,
        strict_dtype=True,
    ),
    # SAC's tanh-Gaussian policy at one observation (flowfields.rl): support (-1, 1)^2
    DensityEntry("rl-tanh-gaussian", _action_density, (2,), ((-1.0, 1.0),) * 2, strict_dtype=True),
]
ENTRIES = {e.name: e for e in REGISTRY}
TWO_D = [e for e in REGISTRY if e.box is not None and e.exact_log_prob]
STATEFUL = [e for e in REGISTRY if e.weights]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _build(entry: DensityEntry, dtype: torch.dtype = F64, device: str = "cpu") -> Any:
    return entry.factory(dtype, torch.device(device))


def _sample(model: Any, n: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ 1-3
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_is_a_density_model(entry: DensityEntry) -> None:
    model = _build(entry)
    assert isinstance(model, DensityModel)
    assert tuple(model.event_shape) == entry.event_shape


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_shapes_and_dtypes(entry: DensityEntry, dtype: torch.dtype) -> None:
    model = _build(entry, dtype)
    x = _sample(model, 7, seed=1)
    assert x.shape == (7, *entry.event_shape)
    assert x.dtype == (dtype if entry.weights else torch.get_default_dtype())
    x = x.to(dtype)
    with torch.no_grad():
        lp = model.log_prob(x)
    assert isinstance(lp, torch.Tensor) and lp.shape == (7,) and lp.dtype == dtype
    assert torch.isfinite(lp).all(), "samples must lie where the density is positive"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_device(entry: DensityEntry, device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = _build(entry, torch.float32, device)
    x = _sample(model, 5, seed=2)
    assert x.device.type == (device if entry.weights else "cpu")
    with torch.no_grad():
        lp = model.log_prob(x.to(device))
    assert lp.device.type == device and lp.shape == (5,)


# ------------------------------------------------------------------------------ 4-5
def _cell_grid(entry: DensityEntry) -> tuple[torch.Tensor, float]:
    """Midpoints of the quadrature cells (cells^2, 2) in row-major (x_0, x_1) order, and the
    area of one cell."""
    assert entry.box is not None
    (a0, b0), (a1, b1) = entry.box
    n = entry.cells
    h0, h1 = (b0 - a0) / n, (b1 - a1) / n
    g0 = a0 + h0 * (torch.arange(n, dtype=F64) + 0.5)
    g1 = a1 + h1 * (torch.arange(n, dtype=F64) + 0.5)
    xx, yy = torch.meshgrid(g0, g1, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), h0 * h1


@cache
def _cell_mass(name: str) -> torch.Tensor:
    """The density times the cell area at every quadrature cell (cells, cells), float64."""
    entry = ENTRIES[name]
    model = _build(entry)
    pts, area = _cell_grid(entry)
    with torch.no_grad():
        lp = model.log_prob(pts.reshape(-1, *entry.event_shape))
    return (lp.exp() * area).reshape(entry.cells, entry.cells)


@pytest.mark.parametrize("entry", TWO_D, ids=str)
def test_density_integrates_to_one_over_its_box(entry: DensityEntry) -> None:
    mass = float(_cell_mass(entry.name).sum())
    assert abs(mass - 1.0) < entry.mass_tol, (entry.name, mass)


def _chi_square_p(entry: DensityEntry, x: torch.Tensor) -> float:
    """p-value of the chi-square test of samples ``x`` against the quadrature cell masses."""
    assert entry.box is not None
    (a0, b0), (a1, b1) = entry.box
    k, per = entry.bins, entry.cells // entry.bins
    expected_in = _cell_mass(entry.name).reshape(k, per, k, per).sum((1, 3)).reshape(-1)
    p = torch.cat([expected_in, (1.0 - expected_in.sum()).clamp_min(0.0).reshape(1)])
    x = x.reshape(x.shape[0], 2).double()
    i = torch.floor((x[:, 0] - a0) / (b0 - a0) * k)
    j = torch.floor((x[:, 1] - a1) / (b1 - a1) * k)
    inside = (i >= 0) & (i < k) & (j >= 0) & (j < k)
    cell = torch.where(inside, (i * k + j), torch.full_like(i, k * k)).long()
    observed = torch.bincount(cell, minlength=k * k + 1).double()
    n = x.shape[0]
    expected = p * n / p.sum()
    if bool((observed[expected == 0] > 0).any()):
        return 0.0  # samples where the density is zero
    small = expected < 5  # pool the cells with expected count < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp_ = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp_ > 0
    obs, exp_ = obs[keep], exp_[keep]
    if bool((exp_ < 5).any()):  # the pooled cell is still small: merge it into the smallest
        order = torch.argsort(exp_)
        obs[order[1]] += obs[order[0]]
        exp_[order[1]] += exp_[order[0]]
        obs, exp_ = obs[order[1:]], exp_[order[1:]]
    stat = float(((obs - exp_) ** 2 / exp_).sum())
    return float(chi2.sf(stat, obs.numel() - 1))


@pytest.mark.parametrize("entry", [e for e in TWO_D if e.has_sample], ids=str)
def test_samples_agree_with_log_prob(entry: DensityEntry) -> None:
    model = _build(entry)
    x = _sample(model, 8000, seed=7).double()
    p = _chi_square_p(entry, x)
    assert p > 1e-3, (entry.name, p)
    # power: the same test rejects samples stretched by 15% about the box centre
    (a0, b0), (a1, b1) = entry.box  # type: ignore[misc]
    centre = torch.tensor([(a0 + b0) / 2, (a1 + b1) / 2], dtype=F64)
    flat = x.reshape(-1, 2)
    stretched = (centre + 1.15 * (flat - centre)).reshape(x.shape)
    assert _chi_square_p(entry, stretched) < 1e-3, entry.name


# ------------------------------------------------------------------------------ 6-8
@pytest.mark.parametrize("entry", STATEFUL, ids=str)
def test_gradients_reach_every_parameter(entry: DensityEntry) -> None:
    model = _build(entry)
    x = _sample(model, 64, seed=3).double()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if named:
        (-model.log_prob(x).mean()).backward()
    for name, p in named:
        if name.startswith(entry.no_grad):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    if not named:  # buffer-only models: nothing to train, and nothing hidden
        assert sum(1 for _ in model.parameters()) == 0


@pytest.mark.parametrize("entry", [e for e in REGISTRY if e.smooth and e.exact_log_prob], ids=str)
def test_log_prob_gradient_in_x_matches_finite_differences(entry: DensityEntry) -> None:
    model = _build(entry)
    x = _sample(model, 4, seed=4).double().requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(x).sum(), x)
    eps = 1e-6
    fd = torch.zeros_like(x)
    flat, fd_flat = x.detach().reshape(4, -1), fd.view(4, -1)
    with torch.no_grad():
        for d in range(flat.shape[1]):
            e = torch.zeros_like(flat)
            e[:, d] = eps
            up = model.log_prob((flat + e).reshape(x.shape))
            down = model.log_prob((flat - e).reshape(x.shape))
            fd_flat[:, d] = (up - down) / (2 * eps)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", STATEFUL, ids=str)
def test_state_dict_round_trip(entry: DensityEntry) -> None:
    model = _build(entry)
    x = _sample(model, 16, seed=5).double()
    with torch.no_grad():
        before = model.log_prob(x)
    other = _build(entry)
    with torch.no_grad():
        for t in other.state_dict().values():
            if t.is_floating_point():
                t.mul_(1.05)  # keeps the structure (a Cholesky factor stays one)
        changed = other.log_prob(x)
    assert not torch.equal(changed, before) or not any(
        t.is_floating_point() for t in other.state_dict().values()
    )
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(other.log_prob(x), before)


def _bad_inputs(entry: DensityEntry) -> list[tuple[str, torch.Tensor]]:
    shape = entry.event_shape
    good = torch.zeros(3, *shape, dtype=F64)
    nan = good.clone().reshape(3, -1)
    nan[1, 0] = float("nan")
    inf = good.clone().reshape(3, -1)
    inf[2, -1] = float("inf")
    cases = [
        ("no batch dimension", torch.zeros(*shape, dtype=F64)),
        ("extra dimension", torch.zeros(3, *shape, 1, dtype=F64)),
        ("wrong event size", torch.zeros(3, math.prod(shape) + 1, dtype=F64)),
        ("NaN", nan.reshape(good.shape)),
        ("Inf", inf.reshape(good.shape)),
        ("integer", torch.zeros(3, *shape, dtype=torch.int64)),
        ("boolean", torch.zeros(3, *shape, dtype=torch.bool)),
        ("complex", torch.zeros(3, *shape, dtype=torch.complex128)),
    ]
    if entry.strict_dtype:
        cases.append(("other float dtype", torch.zeros(3, *shape, dtype=torch.float32)))
    return cases


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_bad_input_raises_flowfields_error(entry: DensityEntry) -> None:
    model = _build(entry)
    for label, x in _bad_inputs(entry):
        with pytest.raises(FlowfieldsError):
            model.log_prob(x)
        del label
    if entry.has_sample:
        for n in (-1, 2.5, True, "3"):
            with pytest.raises(FlowfieldsError, match="n"):
                model.sample(n, generator=torch.Generator().manual_seed(0))
