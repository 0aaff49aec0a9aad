"""Gradients of steady-state observables: gradcheck, central finite differences on parameters
of H, of the rates and of a complex jump-operator coefficient, and agreement across methods."""

from __future__ import annotations

import pytest
import torch

from flowfields.quantum import (
    STEADY_METHODS,
    expect,
    kerr_cavity,
    lindbladian,
    steady_state,
    v_system_heat,
)

C128 = torch.complex128


def _kerr_observable(params: torch.Tensor, method: str = "dense") -> torch.Tensor:
    det, kerr, drive, kappa = params
    Lb = kerr_cavity(5, detuning=det, kerr=kerr, drive=drive, kappa=kappa)
    rho = steady_state(Lb, method)
    a = Lb.C[0]
    return expect(a.mH @ a, rho) + 0.3 * expect(a + a.mH, rho)


def _central_fd(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    out = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e.view(-1)[i] = h
        out.view(-1)[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_gradcheck_small_system() -> None:
    p = torch.tensor([0.4, 0.15, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: _kerr_observable(q), (p,), eps=1e-6, atol=1e-7)


def test_gradcheck_dense_liouvillian_matrix_input() -> None:
    L0 = kerr_cavity(3).matrix()
    L = L0.clone().requires_grad_()
    O = torch.randn(3, 3, dtype=C128)
    O = O + O.mH
    # perturbations of a valid generator keep the steady state unique; gradcheck on the matrix
    assert torch.autograd.gradcheck(
        lambda M: expect(O, steady_state(M)), (L,), eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_finite_differences_hamiltonian_and_rates() -> None:
    p = torch.tensor([0.4, 0.15, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_kerr_observable(p), p)
    fd = _central_fd(lambda q: _kerr_observable(q).detach(), p.detach())
    assert _rel_err(g, fd) <= 1e-6


def test_finite_differences_complex_jump_coefficient() -> None:
    # V-system-like 3 levels with a jump operator c |0><1| + |0><2| (c complex)
    H = torch.tensor([[0, 0, 0], [0, 1.0, 0.1], [0, 0.1, 1.2]], dtype=C128)
    P01 = torch.zeros(3, 3, dtype=C128)
    P01[0, 1] = 1
    P02 = torch.zeros(3, 3, dtype=C128)
    P02[0, 2] = 1
    P10 = P01.mH.contiguous()
    O = torch.diag(torch.tensor([0.0, 1.0, 2.0], dtype=C128))
    O[1, 2] = O[2, 1] = 0.5

    def loss(c: torch.Tensor) -> torch.Tensor:
        C = torch.stack([c * P01 + P02, P10, P02.mH.contiguous()])
        Lb = lindbladian(H, C, torch.tensor([0.3, 0.05, 0.02], dtype=torch.float64))
        return expect(O, steady_state(Lb, "sparse"))

    c = torch.tensor(0.7 + 0.4j, dtype=C128, requires_grad=True)
    (g,) = torch.autograd.grad(loss(c), c)
    h = 1e-6
    d_re = (loss(c.detach() + h) - loss(c.detach() - h)) / (2 * h)
    d_im = (loss(c.detach() + 1j * h) - loss(c.detach() - 1j * h)) / (2 * h)
    fd = torch.complex(d_re, d_im)  # PyTorch convention: dℓ/dRe + i dℓ/dIm for real ℓ
    assert abs(complex(g - fd)) / abs(complex(fd)) <= 1e-6


def _heat(th: torch.Tensor, method: str) -> torch.Tensor:
    dev = v_system_heat(
        eps_1=th[0], eps_2=th[1], delta=th[2], gamma_h=th[3], gamma_c=th[4], gamma_phi=th[5]
    )
    return dev.currents(method)[0]


def test_same_gradient_whatever_forward_method() -> None:
    th = torch.tensor([1.0, 1.2, 0.05, 0.02, 0.01, 0.01], dtype=torch.float64, requires_grad=True)
    grads = {m: torch.autograd.grad(_heat(th, m), th)[0] for m in STEADY_METHODS}
    ref = grads["dense"]
    for m in STEADY_METHODS:
        assert float((grads[m] - ref).abs().max()) <= 1e-8 * max(1.0, float(ref.abs().max())), m
    fd = _central_fd(lambda q: _heat(q, "dense").detach(), th.detach())
    assert _rel_err(ref, fd) <= 1e-6


@pytest.mark.parametrize("method", ["sparse", "krylov", "evolve"])
def test_batched_gradients_match_dense(method: str) -> None:
    det = torch.tensor([0.2, 0.9], dtype=torch.float64, requires_grad=True)
    base = kerr_cavity(4)
    a = base.C[0]
    n = (a.mH @ a).to(C128)
    H = base.H - 0.5 * n + det.to(C128)[:, None, None] * n  # detuning 0.5 -> det

    def f(m: str) -> torch.Tensor:
        return expect(n, steady_state(lindbladian(H, base.C, base.rates), m)).sum()

    (g_ref,) = torch.autograd.grad(f("dense"), det, retain_graph=True)
    (g,) = torch.autograd.grad(f(method), det)
    assert torch.allclose(g, g_ref, atol=1e-9)


@pytest.mark.parametrize("method", STEADY_METHODS)
def test_backward_saves_only_the_solution_and_the_generator(method: str) -> None:
    # nothing from the forward algorithm's iterations is kept for the backward: autograd saves
    # the steady state x and the generator's parts (H, C, rates), whatever the method
    base = kerr_cavity(6)
    kappa = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        Lb = lindbladian(base.H, base.C, kappa)
        rho = steady_state(Lb, method)
    allowed = sum(t.untyped_storage().nbytes() for t in (rho, Lb.H, Lb.C, Lb.rates))
    assert 0 < sum(storages.values()) <= allowed
    a = base.C[0]
    expect(a.mH @ a, rho).backward()  # and the gradient is still there
    assert kappa.grad is not None and float(kappa.grad.abs()) > 0


def test_qutip_operators_with_torch_parameters() -> None:
    # Qobj operators mixed with differentiable torch rates: the gradient equals the one from
    # torch operators, and matches central finite differences through qutip.steadystate
    import numpy as np
    import qutip

    base = kerr_cavity(5)
    a = base.C[0]
    Hq, aq = qutip.Qobj(base.H.numpy()), qutip.Qobj(a.numpy())
    kappa = torch.tensor([0.6], dtype=torch.float64, requires_grad=True)
    n_op = a.mH @ a
    (g_q,) = torch.autograd.grad(expect(n_op, steady_state(lindbladian(Hq, [aq], kappa))), kappa)
    (g_t,) = torch.autograd.grad(expect(n_op, steady_state(lindbladian(base.H, [a], kappa))), kappa)
    assert torch.allclose(g_q, g_t, rtol=1e-12, atol=0)
    h = 1e-6
    nq = qutip.Qobj(n_op.numpy())

    def n_ss(k: float) -> float:
        return float(np.real(qutip.expect(nq, qutip.steadystate(Hq, [np.sqrt(k) * aq]))))

    fd = (n_ss(0.6 + h) - n_ss(0.6 - h)) / (2 * h)
    assert abs(float(g_q) - fd) <= 1e-6 * abs(fd)
