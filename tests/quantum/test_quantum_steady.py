"""Steady states against qutip.steadystate, physicality, batching and non-uniqueness."""

from __future__ import annotations

import numpy as np
import pytest
import qutip
import torch

from flowfields.errors import FlowfieldsError
from flowfields.quantum import (
    STEADY_METHODS,
    dissipator,
    expect,
    heat_current,
    kerr_cavity,
    lindbladian,
    qubit_chain,
    rectification,
    steady_state,
    v_system_heat,
    vec,
)

MODELS = {
    "kerr4": lambda: kerr_cavity(4),
    "kerr16": lambda: kerr_cavity(16),
    "chain3": lambda: qubit_chain(3),
    "vsystem": lambda: v_system_heat().lindbladian,
}


def qutip_steady(Lb) -> np.ndarray:
    H = qutip.Qobj(Lb.H.detach().numpy())
    cops = [qutip.Qobj(np.sqrt(float(g)) * C.numpy()) for C, g in zip(Lb.C, Lb.rates.detach())]
    return qutip.steadystate(H, cops).full()


@pytest.mark.parametrize("method", STEADY_METHODS)
@pytest.mark.parametrize("name", list(MODELS))
def test_steady_state_equals_qutip_and_is_physical(name: str, method: str) -> None:
    Lb = MODELS[name]()
    rho = steady_state(Lb, method)
    ref = qutip_steady(Lb)
    assert np.abs(rho.numpy() - ref).max() <= 1e-8
    assert abs(complex(torch.trace(rho)) - 1.0) <= 1e-12
    assert torch.allclose(rho, rho.mH, atol=1e-10)
    assert float(torch.linalg.eigvalsh(0.5 * (rho + rho.mH)).min()) >= -1e-10
    assert float(torch.linalg.vector_norm(Lb.matrix() @ vec(rho))) <= 1e-10


def test_dense_matrix_and_qobj_inputs() -> None:
    Lb = kerr_cavity(6)
    ref = steady_state(Lb)
    assert torch.allclose(steady_state(Lb.matrix()), ref, atol=1e-12)
    assert torch.allclose(steady_state(Lb.matrix(), "evolve"), ref, atol=1e-10)
    Lq = qutip.liouvillian(qutip.Qobj(Lb.H.numpy()), [qutip.Qobj(Lb.C[0].numpy())])
    assert torch.allclose(steady_state(Lq, "sparse"), ref, atol=1e-12)


def test_batched_steady_state_matches_loop() -> None:
    dets = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    base = kerr_cavity(5)
    Hs = torch.stack([kerr_cavity(5, detuning=float(d)).H for d in dets])
    Lb = lindbladian(Hs, base.C, base.rates)
    for method in ("dense", "sparse"):
        rho = steady_state(Lb, method)
        assert rho.shape == (3, 5, 5)
        for i, d in enumerate(dets):
            assert torch.allclose(
                rho[i], steady_state(kerr_cavity(5, detuning=float(d))), atol=1e-12
            )


def _two_steady_states():
    # qubit with pure dephasing only: every diagonal state is steady
    sz = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.complex128)
    return lindbladian(sz, [sz], [0.3])


@pytest.mark.parametrize("method", ["dense", "sparse", "krylov"])
def test_two_steady_states_raise(method: str) -> None:
    with pytest.raises(FlowfieldsError, match=r"not unique|singular"):
        steady_state(_two_steady_states(), method)
    with pytest.raises(FlowfieldsError, match=r"not unique|singular"):
        steady_state(_two_steady_states().matrix(), method)


def test_two_steady_states_evolve_raises_before_a_gradient() -> None:
    sz = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.complex128)
    g = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    Lb = lindbladian(sz, [sz], g)
    with pytest.raises(FlowfieldsError, match=r"not unique|singular"):
        steady_state(Lb, "evolve", check_unique=True)
    # without the forward check the solve converges (to the initial, maximally mixed state)
    rho = steady_state(Lb, "evolve", check_unique=False)
    with pytest.raises(FlowfieldsError, match=r"not unique|singular"):
        expect(sz, rho).backward()


def test_energy_conservation_of_heat_currents() -> None:
    dev = v_system_heat(eps_2=1.3, delta=0.1)
    rho = steady_state(dev.lindbladian)
    L = dev.lindbladian
    J_h = heat_current(dev.H, *dev.hot, rho)
    J_c = heat_current(dev.H, *dev.cold, rho)
    J_deph = expect(dev.H, dissipator(L.C[4:], L.rates[4:], rho))
    assert float(J_h) > 0 > float(J_c)  # heat flows from hot to cold
    assert abs(float(J_h + J_c + J_deph)) <= 1e-14


def test_mirror_symmetric_device_has_zero_rectification() -> None:
    fwd = v_system_heat(eps_1=1.0, eps_2=1.0, gamma_h=0.02, gamma_c=0.02, T_h=2.0, T_c=0.5)
    rev = v_system_heat(eps_1=1.0, eps_2=1.0, gamma_h=0.02, gamma_c=0.02, T_h=0.5, T_c=2.0)
    J_f, _ = fwd.currents()
    J_r, _ = rev.currents()
    assert float(rectification(J_f, J_r)) <= 1e-10
    # an asymmetric device does rectify (the test can fail)
    fwd = v_system_heat(eps_1=1.0, eps_2=1.6, gamma_h=0.05, gamma_c=0.005, T_h=2.0, T_c=0.5)
    rev = v_system_heat(eps_1=1.0, eps_2=1.6, gamma_h=0.05, gamma_c=0.005, T_h=0.5, T_c=2.0)
    assert float(rectification(fwd.currents()[0], rev.currents()[0])) > 1e-3


def test_bad_method_and_shape() -> None:
    with pytest.raises(FlowfieldsError, match="method"):
        steady_state(kerr_cavity(3), "newton")
    with pytest.raises(FlowfieldsError, match="L"):
        steady_state(torch.zeros(5, 5, dtype=torch.complex128))


def _hermitian_basis_unitary(d: int) -> torch.Tensor:
    from flowfields.quantum.steady import _S, _pair_indices

    n = d * d
    P, Q = _pair_indices(d)
    M = torch.zeros(n, n, dtype=torch.complex128)
    for k in range(d):
        M[k * d + k, k * d + k] = 1
    for p, q in zip(P.tolist(), Q.tolist()):
        M[p, p], M[p, q], M[q, q], M[q, p] = _S, _S, 1j * _S, -1j * _S
    return M


@pytest.mark.parametrize("name", ["kerr5", "chain2", "vsystem", "no_jumps", "batched"])
def test_real_generator_matches_explicit_unitary(name: str) -> None:
    # the dense path's real matrix is Re(M A M^H), A = L with row 0 replaced by the trace row
    from flowfields.quantum.steady import _real_generator

    g = torch.Generator().manual_seed(7)
    if name == "kerr5":
        Lb = kerr_cavity(5)
    elif name == "chain2":
        Lb = qubit_chain(2)
    elif name == "vsystem":
        Lb = v_system_heat(delta=0.1).lindbladian
    else:
        d = 4
        Hs = torch.randn(3, d, d, dtype=torch.complex128, generator=g)
        Hs = (Hs + Hs.mH) / 2
        if name == "no_jumps":
            Lb = lindbladian(Hs[0])
        else:  # random complex jumps, batch of Hamiltonians broadcast against one set of jumps
            C = torch.randn(2, d, d, dtype=torch.complex128, generator=g)
            Lb = lindbladian(Hs, C, torch.tensor([0.3, 1.7], dtype=torch.float64))
    d = Lb.dim
    M = _hermitian_basis_unitary(d)
    assert torch.allclose(M @ M.mH, torch.eye(d * d, dtype=torch.complex128), atol=1e-15)
    A = Lb.matrix().clone()
    A[..., 0, :] = vec(torch.eye(d, dtype=torch.complex128))
    ref = M @ A @ M.mH
    assert float(ref.imag.abs().max()) <= 1e-13  # a Lindbladian is real in this basis
    ours = _real_generator(Lb, Lb.batch_shape).reshape(ref.shape).clone()
    assert torch.allclose(ours, ref.real, atol=1e-13, rtol=0)


def test_dense_gradient_survives_later_solves() -> None:
    # the dense path reuses scratch buffers between calls: a factorisation kept for a backward
    # must not be overwritten by a later forward-only solve of another system
    kappa = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    base = kerr_cavity(4)
    n = base.C[0].mH @ base.C[0]
    ref_val = expect(n, steady_state(lindbladian(base.H, base.C, kappa)))
    (ref,) = torch.autograd.grad(ref_val, kappa)
    val = expect(n, steady_state(lindbladian(base.H, base.C, kappa)))
    other = steady_state(kerr_cavity(4, detuning=1.7, drive=0.9))  # same size, no grad
    assert not torch.allclose(other, steady_state(base), atol=1e-3)
    (g,) = torch.autograd.grad(val, kappa)
    assert torch.equal(g, ref)


def test_auto_method_matches_explicit_methods() -> None:
    small, large = kerr_cavity(6), kerr_cavity(20)  # d² = 36 (dense) and 400 (sparse)
    assert torch.allclose(steady_state(small), steady_state(small, "sparse"), atol=1e-12)
    assert torch.allclose(steady_state(large), steady_state(large, "dense"), atol=1e-11)


def test_complex64_dense_path() -> None:
    # the real-basis assembly and LU also run in single precision (float32 coefficients)
    for Lb in (kerr_cavity(6), qubit_chain(3)):
        L32 = lindbladian(Lb.H, Lb.C, Lb.rates, dtype=torch.complex64)
        rho32 = steady_state(L32, "dense")
        assert rho32.dtype == torch.complex64
        assert float((rho32.to(torch.complex128) - steady_state(Lb)).abs().max()) <= 1e-5
