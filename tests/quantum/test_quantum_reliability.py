"""Non-finite and empty input refused at every numeric entry point of quantum/, and the
``evolve`` method's uniqueness check, dtype-aware tolerance, stall detection and polish."""

from __future__ import annotations

import math
import time

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.linalg import SingularSystemError
from flowfields.quantum import (
    Box,
    Lindbladian,
    dissipator,
    evolve_default_tol,
    expect,
    kerr_cavity,
    lindbladian,
    projected_ascent,
    steady_state,
)

C128 = torch.complex128
SZ = torch.tensor([[1, 0], [0, -1]], dtype=C128)
SM = torch.tensor([[0, 0], [1, 0]], dtype=C128)


def _qubit(n: float = 0.1) -> Lindbladian:
    """A qubit in a thermal bath with mean occupation n: excited population n / (2n + 1)."""
    return lindbladian(0.5 * SZ, [SM, SM.mH], torch.tensor([n + 1.0, n], dtype=torch.float64))


@pytest.mark.parametrize("method", ["dense", "sparse", "krylov", "evolve"])
def test_a_nan_entry_in_a_dense_liouvillian_is_refused(method: str) -> None:
    """Used to return an all-NaN rho (dense) or blame non-uniqueness (sparse)."""
    L = _qubit().matrix().clone()
    L[1, 2] = float("nan")
    with pytest.raises(FlowfieldsError, match="NaN or Inf") as info:
        steady_state(L, method)
    assert not isinstance(info.value, SingularSystemError)


@pytest.mark.parametrize("part", ["H", "C", "rates"])
def test_a_directly_built_lindbladian_with_nan_is_refused(part: str) -> None:
    q = _qubit()
    parts = {"H": q.H.clone(), "C": q.C.clone(), "rates": q.rates.clone()}
    parts[part].view(-1)[0] = float("inf")
    with pytest.raises(FlowfieldsError, match=f"L.{part}"):
        steady_state(Lindbladian(**parts))


def test_empty_liouvillian_and_hamiltonian_are_refused() -> None:
    with pytest.raises(FlowfieldsError, match="non-empty"):
        steady_state(torch.zeros(0, 0, dtype=C128))
    with pytest.raises(FlowfieldsError, match="d >= 1"):
        lindbladian(torch.zeros(0, 0, dtype=C128))


@pytest.mark.parametrize(
    "call",
    [
        lambda: lindbladian(torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]])),
        lambda: lindbladian(0.5 * SZ, [SM * float("inf")]),
        lambda: expect(SZ, torch.full((2, 2), float("nan"), dtype=C128)),
        lambda: expect(SZ * float("nan"), torch.eye(2, dtype=C128) / 2),
        lambda: dissipator(SM[None], torch.tensor([float("nan")]), torch.eye(2, dtype=C128)),
        lambda: Box(("a",), (0.0,), (float("inf"),), (False,)),
        lambda: projected_ascent(lambda u: u.sum(), [torch.tensor([float("nan")])], steps=1),
        lambda: lindbladian(torch.ones(2, 2, dtype=torch.bool)),
    ],
)
def test_non_finite_or_non_numeric_input_is_refused(call) -> None:
    with pytest.raises(FlowfieldsError):
        call()


def test_evolve_checks_uniqueness_by_default() -> None:
    """Two steady states: used to return one of them silently (the check was opt-in)."""
    Lb = lindbladian(SZ, [SZ], torch.tensor([0.3], dtype=torch.float64))
    with pytest.raises(SingularSystemError, match="not unique"):
        steady_state(Lb, "evolve")


def test_evolve_tolerance_follows_the_dtype() -> None:
    """complex64 with the complex128 tolerance (1e-13) used to square the propagator 200
    times until it overflowed, then blame slow relaxation; the dtype's default converges, and
    an unattainable tolerance stops as soon as the residual stalls, saying so."""
    assert evolve_default_tol(torch.complex128) == 1e-13
    assert evolve_default_tol(torch.complex64) == 1e-5
    L = kerr_cavity(10)
    ref = steady_state(L, "sparse")
    L64 = lindbladian(L.H, L.C, L.rates, dtype=torch.complex64)
    rho = steady_state(L64, "evolve")
    assert rho.dtype == torch.complex64
    assert float((rho.to(C128) - ref).abs().max()) < 1e-5
    start = time.process_time()
    with pytest.raises(FlowfieldsError, match=r"stalled at the rounding floor of complex64"):
        steady_state(L64, "evolve", tol=1e-13)
    assert time.process_time() - start < 30
    with pytest.raises(FlowfieldsError, match="tol"):
        steady_state(L, "evolve", tol=-1.0)


@pytest.mark.parametrize("n", [1e-8, 1e-12])
def test_evolve_small_populations_are_accurate_to_rounding(n: float) -> None:
    """Excited population n / (2n + 1) of a cold thermal qubit: stopping at the tolerance
    (1e-13 of ||L||) left relative errors of 1e-6 (n = 1e-8) and 1e-2 (n = 1e-12); the polish
    (keep doubling while the residual halves) brings both to rounding."""
    exact = n / (2 * n + 1)
    rho = steady_state(_qubit(n), "evolve")
    assert abs(float(rho[0, 0].real) - exact) / exact < 1e-12


def test_evolve_still_waits_for_slow_relaxation() -> None:
    """A slowly relaxing cavity (kappa = 1e-4) sits on a residual plateau for ~17 doublings
    before it decays: that is not a stall."""
    L = kerr_cavity(6, kappa=1e-4)
    torch.testing.assert_close(
        steady_state(L, "evolve"), steady_state(L, "sparse"), rtol=0, atol=1e-9
    )
    assert math.isfinite(float(steady_state(L, "evolve").real.sum()))
