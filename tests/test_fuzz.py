"""Fuzzing the public entry points: every call either returns finite results of the documented
shape or raises FlowfieldsError — never another exception type, never a hang.

Each entry below draws adversarial but plausible arguments with hypothesis (wrong shapes and
dtypes, NaN / Inf, empty batches, out-of-domain scalars, wrong types) and calls one public
function or constructor. :func:`guarded` runs the call under a time limit and enforces the
property. The examples are derandomized (the same every run: CI never flakes) and kept small so
that the suite stays within a few seconds per entry. New paper packages add their entry points
here: one function decorated with ``@entry``.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowfields.errors import FlowfieldsError

# Warm torch's lazy imports (torch.func, dynamo) once, outside the time limit: an alarm that
# fired inside a first import would leave a half-initialised module behind.
torch.func.vmap(torch.sin)(torch.zeros(1, 1))

#: Seconds one call may take before it counts as a hang.
TIME_LIMIT_S = 20
EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES", "20"))

ENTRIES: dict[str, Callable[[Any], Any]] = {}


def entry(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Register ``fn(data)`` (``data`` is hypothesis' interactive draw) as a fuzzed entry point."""
    ENTRIES[fn.__name__.removeprefix("fz_")] = fn
    return fn


# ---------------------------------------------------------------------------- strategies
DTYPES = [torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]
SPECIALS = [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, math.inf, -math.inf, math.nan]


@st.composite
def tensors(
    draw: Any,
    shape: tuple[int, ...] | None = None,
    *,
    max_dims: int = 3,
    dtypes: list[torch.dtype] | None = None,
    special: bool = True,
) -> torch.Tensor:
    """A tensor of a drawn (or given) shape and dtype; sometimes with NaN / Inf / huge values."""
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=max_dims)))
    dtype = draw(st.sampled_from(dtypes or DTYPES))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if special and x.numel() and draw(st.booleans()):
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    if dtype.is_complex:
        return x.to(dtype) * (1 + 1j)
    return x.to(dtype)


def good_or(draw: Any, good: Any, bad: st.SearchStrategy[Any], p_bad: float = 0.5) -> Any:
    """``good`` most of the time, else a draw from ``bad``."""
    return draw(bad) if draw(st.floats(0, 1)) < p_bad else good


NUMBERS = st.one_of(
    st.integers(-3, 5),
    st.sampled_from(SPECIALS),
    st.floats(-1e3, 1e3),
    st.none(),
    st.text(max_size=3),
)


# ---------------------------------------------------------------------------- the property
class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang


def _tensors_in(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors_in(o)]
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields:
        return [t for k in fields for t in _tensors_in(getattr(obj, k))]
    return []


def guarded(call: Callable[[], Any]) -> Any:
    """Run ``call``; pass if it raises FlowfieldsError or returns NaN-free tensors in time."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        out = call()
    except FlowfieldsError:
        return None
    except _Hang:
        pytest.fail(f"the call did not return within {TIME_LIMIT_S} s")
    except Exception as err:  # the defect this suite exists to find
        pytest.fail(f"raised {type(err).__name__} instead of FlowfieldsError: {err}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    for t in _tensors_in(out):
        if t.is_floating_point() or t.is_complex():
            assert not torch.isnan(t).any(), "returned NaN without raising FlowfieldsError"
    return out


# ---------------------------------------------------------------------------- entries: integrate
@entry
def fz_odeint(data: Any) -> Any:
    from flowfields.integrate import SOLVERS, odeint

    x_0 = data.draw(tensors())
    t = good_or(data.draw, torch.tensor([0.0, 1.0]), tensors(max_dims=2))
    method = data.draw(st.sampled_from([*SOLVERS, "bogus", 3]))
    step = data.draw(st.one_of(st.none(), NUMBERS))
    rtol, atol = data.draw(NUMBERS), data.draw(NUMBERS)
    field = data.draw(
        st.sampled_from(
            [
                lambda s, x: -x,
                lambda s, x: x * float("nan"),
                lambda s, x: x.reshape(-1)[:1],
                lambda s, x: 3,
            ]
        )
    )
    kwargs = {"method": method, "step_size": step}
    if isinstance(rtol, float) and isinstance(atol, float):
        kwargs.update(rtol=rtol, atol=atol)
    return guarded(lambda: odeint(field, x_0, t, **kwargs))


@entry
def fz_ode_options(data: Any) -> Any:
    from flowfields.integrate import ODEOptions

    kw = {
        k: data.draw(NUMBERS)
        for k in data.draw(st.sets(st.sampled_from(["rtol", "atol", "step_size", "max_num_steps"])))
    }
    method = data.draw(st.sampled_from(["dopri5", "euler", "rk4", "nope"]))
    return guarded(lambda: ODEOptions(method, **kw))


@entry
def fz_sdeint(data: Any) -> Any:
    from flowfields.integrate import SDE_METHODS, sdeint

    x_0 = data.draw(tensors(max_dims=2))
    t = good_or(data.draw, torch.tensor([0.0, 0.5, 1.0]), tensors(max_dims=1))
    method = data.draw(st.sampled_from([*SDE_METHODS, "bogus"]))
    dt = data.draw(st.one_of(st.just(0.1), NUMBERS))

    class Toy(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, s: Any, x: Any) -> Any:
            return -x

        def g(self, s: Any, x: Any) -> Any:
            return 0.1 * torch.ones_like(x)

    return guarded(lambda: sdeint(Toy(), x_0, t, method=method, dt=dt))


@entry
def fz_gauss_legendre(data: Any) -> Any:
    from flowfields.integrate import gauss_legendre

    n, a, b = data.draw(NUMBERS), data.draw(NUMBERS), data.draw(NUMBERS)
    return guarded(lambda: gauss_legendre(n, a, b))


@entry
def fz_time_grid(data: Any) -> Any:
    from flowfields.integrate import time_grid

    t = data.draw(tensors(max_dims=1))
    return guarded(lambda: time_grid(t, data.draw(NUMBERS)))


# ---------------------------------------------------------------------------- divergence, linalg
@entry
def fz_divergence(data: Any) -> Any:
    from flowfields.divergence import divergence_exact, divergence_hutchinson, sample_probe

    x = data.draw(tensors())
    if data.draw(st.booleans()):
        return guarded(lambda: divergence_exact(lambda t, y: y.sin(), 0.0, x))
    kind = data.draw(st.sampled_from(["rademacher", "gaussian", "cauchy"]))
    return guarded(
        lambda: divergence_hutchinson(lambda t, y: y.sin(), 0.0, x, sample_probe(x, kind))
    )


@entry
def fz_kmeans(data: Any) -> Any:
    from flowfields.linalg import kmeans

    x = data.draw(tensors())
    return guarded(lambda: kmeans(x, data.draw(NUMBERS)))


@entry
def fz_linear_solve(data: Any) -> Any:
    from flowfields.linalg import solve

    n = data.draw(st.integers(0, 4))
    A = good_or(data.draw, torch.eye(n, dtype=torch.float64) * 2, tensors(max_dims=3))
    b = good_or(data.draw, torch.ones(n, dtype=torch.float64), tensors(max_dims=2))
    return guarded(lambda: solve(A, b))


# ---------------------------------------------------------------------------- paths, matching
@entry
def fz_paths(data: Any) -> Any:
    from flowfields.paths import get_path

    name = data.draw(st.sampled_from(["condot", "vp", "ve", "geodesic?"]))
    x_1 = data.draw(tensors(dtypes=[torch.float32, torch.float64, torch.int64]))
    x_0 = good_or(data.draw, torch.randn_like(x_1.double()).to(x_1.dtype), tensors())
    t = good_or(data.draw, torch.rand(x_1.shape[0] if x_1.ndim else 1), tensors(max_dims=1))

    def call() -> Any:
        return get_path(name).sample(x_0, x_1, t)

    return guarded(call)


@entry
def fz_cfm_loss(data: Any) -> Any:
    from flowfields.matching import cfm_loss
    from flowfields.nn import MLPField

    x_1 = data.draw(tensors())
    path = data.draw(st.sampled_from(["condot", "vp", "ve", "other", 5]))
    field = MLPField(2, hidden=8, depth=1)
    return guarded(lambda: cfm_loss(field, path, x_1))


@entry
def fz_cnf(data: Any) -> Any:
    from flowfields.integrate import ODEOptions
    from flowfields.matching import CNF
    from flowfields.nn import MLPField

    torch.manual_seed(0)
    cnf = CNF(MLPField(2, hidden=8, depth=1), dim=2, solver=ODEOptions(rtol=1e-3, atol=1e-3))
    if data.draw(st.booleans()):
        x = data.draw(tensors())
        return guarded(lambda: cnf.log_prob(x))
    return guarded(lambda: cnf.sample(data.draw(NUMBERS)))


@entry
def fz_cnf_constructor(data: Any) -> Any:
    from flowfields.matching import CNF
    from flowfields.nn import MLPField

    dim = data.draw(st.one_of(NUMBERS, st.lists(st.integers(-1, 3), max_size=3)))
    base = data.draw(st.sampled_from([None, "normal", 3]))
    return guarded(lambda: CNF(MLPField(2, hidden=4, depth=1), dim=dim, base=base))


@entry
def fz_normals(data: Any) -> Any:
    from flowfields.matching import IsotropicNormal

    shape = data.draw(st.one_of(NUMBERS, st.lists(st.integers(-1, 3), max_size=3)))
    std = data.draw(NUMBERS)
    return guarded(lambda: IsotropicNormal(shape, std=std).log_prob(data.draw(tensors())))


@entry
def fz_bits_per_dim(data: Any) -> Any:
    from flowfields.matching import FullCovarianceGaussian, bits_per_dim

    x = data.draw(tensors(dtypes=[torch.int64, torch.float32, torch.bool]))
    levels = data.draw(NUMBERS)
    model = FullCovarianceGaussian((2,))
    return guarded(lambda: bits_per_dim(model, x, levels))


# ---------------------------------------------------------------------------- nn, data
@entry
def fz_mlp(data: Any) -> Any:
    from flowfields.nn import mlp

    args = [data.draw(NUMBERS) for _ in range(4)]
    act = data.draw(st.sampled_from(["silu", "tanh", "relu", "softplus", "nope", 1]))
    return guarded(lambda: mlp(*args, activation=act))


@entry
def fz_fields(data: Any) -> Any:
    from flowfields.nn import DivFreeMatrixField, MLPField

    cls = data.draw(st.sampled_from([MLPField, DivFreeMatrixField]))
    dim = data.draw(st.integers(-1, 3))
    x = data.draw(tensors())
    t = good_or(data.draw, torch.tensor(0.5), tensors(max_dims=1))

    def call() -> Any:
        return cls(dim, hidden=4, depth=1)(t, x)

    return guarded(call)


@entry
def fz_toys(data: Any) -> Any:
    from flowfields.data import TOYS, get_toy

    name = data.draw(st.sampled_from([*TOYS, "swissroll"]))
    n = data.draw(NUMBERS)

    def call() -> Any:
        toy = get_toy(name)
        return toy.sample(n) if data.draw(st.booleans()) else toy.log_prob(data.draw(tensors()))

    return guarded(call)


@entry
def fz_metrics(data: Any) -> Any:
    from flowfields.data import sliced_wasserstein, support_fraction, wasserstein_1d

    a, b = data.draw(tensors()), data.draw(tensors())
    fn = data.draw(st.sampled_from([sliced_wasserstein, wasserstein_1d]))
    if data.draw(st.booleans()):
        return guarded(lambda: support_fraction(a))
    return guarded(lambda: fn(a, b))


@entry
def fz_dequantize(data: Any) -> Any:
    from flowfields.data import split_train_test, uniform_dequantize

    x = data.draw(tensors(dtypes=[torch.int64, torch.float32]))
    if data.draw(st.booleans()):
        return guarded(lambda: split_train_test(x, test_fraction=data.draw(NUMBERS)))
    return guarded(lambda: uniform_dequantize(x, data.draw(NUMBERS)))


# ---------------------------------------------------------------------------- conservation
@entry
def fz_conservation(data: Any) -> Any:
    from flowfields.conservation import HodgeDecomposition, PositiveDensityFlux

    dim = data.draw(st.integers(-1, 3))
    x = data.draw(tensors())
    t = data.draw(st.one_of(st.just(0.5), NUMBERS))

    def call() -> Any:
        if data.draw(st.booleans()):
            return HodgeDecomposition(dim, hidden=4, depth=1)(x)
        return PositiveDensityFlux(dim, n_components=2, hidden=4, depth=1).log_rho(t, x)

    return guarded(call)


# ---------------------------------------------------------------------------- quantum
@entry
def fz_steady_state(data: Any) -> Any:
    from flowfields.quantum import STEADY_METHODS, steady_state

    n = data.draw(st.integers(0, 3))
    L = data.draw(
        st.one_of(
            tensors((n * n, n * n), dtypes=[torch.complex128, torch.float64, torch.complex64]),
            tensors(),
        )
    )
    method = data.draw(st.sampled_from([*STEADY_METHODS, "auto", "exact?"]))
    return guarded(lambda: steady_state(L, method))


@entry
def fz_lindbladian(data: Any) -> Any:
    from flowfields.quantum import lindbladian

    H = data.draw(tensors(dtypes=[torch.complex128, torch.float64]))
    C = data.draw(tensors(dtypes=[torch.complex128, torch.float64]))
    rates = data.draw(st.one_of(tensors(max_dims=1), NUMBERS))
    return guarded(lambda: lindbladian(H, C, rates))


# ---------------------------------------------------------------------------- engine, report
@entry
def fz_fit(data: Any) -> Any:
    from flowfields.engine import fit

    net = torch.nn.Linear(2, 1)
    kw = {
        k: data.draw(NUMBERS)
        for k in data.draw(
            st.sets(
                st.sampled_from(
                    [
                        "steps",
                        "lr",
                        "ema_decay",
                        "grad_clip",
                        "eval_every",
                        "log_every",
                        "time_budget_s",
                    ]
                )
            )
        )
    }
    kw.setdefault("steps", 2)
    loss = data.draw(
        st.sampled_from(
            [
                lambda m, s: m(torch.ones(3, 2)).pow(2).mean(),
                lambda m, s: m(torch.ones(3, 2)),
                lambda m, s: "x",
            ]
        )
    )
    return guarded(lambda: fit(net, loss, progress=False, **kw))


@entry
def fz_claim_format(data: Any) -> Any:
    from flowfields.report import Claim, format_number

    value = data.draw(st.one_of(NUMBERS, st.floats(allow_nan=True)))
    return guarded(lambda: (format_number(value), Claim("a", "b", value, value, True).describe()))


# ---------------------------------------------------------------------------- sdebnn
@entry
def fz_sdebnn(data: Any) -> Any:
    from flowfields.sdebnn import SDEBNN

    kw = {
        k: data.draw(st.one_of(NUMBERS, st.sampled_from(["ckl", "stl", "classification"])))
        for k in data.draw(st.sets(st.sampled_from(["sigma", "steps", "estimator", "task"])))
    }
    x = good_or(data.draw, torch.randn(3, 2), tensors(max_dims=3))
    n = good_or(data.draw, 2, NUMBERS)

    def call() -> Any:
        model = SDEBNN(2, 1, width=4, hidden=4, drift_hidden=(4,), **kw)
        return model(x, n)


# ---------------------------------------------------------------------------- cpflow
@entry
def fz_conjugate_gradient(data: Any) -> Any:
    from flowfields.linalg import conjugate_gradient

    b = good_or(data.draw, torch.ones(2, 3, dtype=torch.float64), tensors(max_dims=3))
    tol = good_or(data.draw, 1e-8, NUMBERS)
    max_iter = good_or(data.draw, 10, NUMBERS)
    return guarded(lambda: conjugate_gradient(lambda v: 2 * v, b, tol=tol, max_iter=max_iter).x)


@entry
def fz_cpflow(data: Any) -> Any:
    from flowfields.cpflow import CPFlow

    torch.manual_seed(0)
    flow = CPFlow(2, blocks=1, hidden=4, depth=2).double()
    x = good_or(data.draw, torch.zeros(3, 2, dtype=torch.float64), tensors())
    tol = good_or(data.draw, 1e-8, NUMBERS)
    which = data.draw(st.sampled_from(["log_prob", "inverse", "sample"]))

    def call() -> Any:
        if which == "log_prob":
            return flow.log_prob(x)
        if which == "inverse":
            return flow.block(0).inverse(x, tol=tol).x
        return flow.sample(data.draw(NUMBERS))

    return guarded(call)


@entry
def fz_sdebnn_predictive(data: Any) -> Any:
    from flowfields.data import expected_calibration_error
    from flowfields.sdebnn import bayes_model_average, elbo_loss, predictive_interval

    out = data.draw(tensors(max_dims=3, dtypes=[torch.float32, torch.float64, torch.int64]))
    labels = data.draw(tensors(max_dims=1, dtypes=[torch.int64, torch.float32]))
    which = data.draw(st.sampled_from(["bma", "interval", "elbo", "ece"]))
    if which == "bma":
        return guarded(lambda: bayes_model_average(out))
    if which == "interval":
        return guarded(lambda: predictive_interval(out, data.draw(NUMBERS), data.draw(NUMBERS)))
    if which == "elbo":
        kl = data.draw(tensors(max_dims=1))
        task = data.draw(st.sampled_from(["regression", "classification", "x"]))
        return guarded(
            lambda: elbo_loss(out, kl, labels, task=task, n_data=data.draw(NUMBERS), noise_std=0.1)
        )
    return guarded(lambda: expected_calibration_error(out, labels, bins=data.draw(NUMBERS)))


# ---------------------------------------------------------------------------- the test
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_point_fails_only_with_flowfields_error(name: str) -> None:
    torch.set_num_threads(1)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: Any) -> None:
        ENTRIES[name](data)

    run()
