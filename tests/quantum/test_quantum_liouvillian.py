"""Liouvillian construction against QuTiP, the column-stacking convention, inputs, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import qutip
import torch

from flowfields.errors import FlowfieldsError
from flowfields.quantum import (
    Lindbladian,
    kerr_cavity,
    light_harvesting,
    lindbladian,
    liouvillian,
    qubit_chain,
    unvec,
    v_system_heat,
    vec,
)


def to_qutip(Lb: Lindbladian) -> tuple[qutip.Qobj, list[qutip.Qobj]]:
    H = qutip.Qobj(Lb.H.detach().numpy())
    cops = [
        qutip.Qobj(np.sqrt(float(g)) * C.detach().numpy()) for C, g in zip(Lb.C, Lb.rates.detach())
    ]
    return H, cops


MODELS = {
    "kerr4": lambda: kerr_cavity(4),
    "kerr16": lambda: kerr_cavity(16),
    "chain3": lambda: qubit_chain(3),
    "vsystem": lambda: v_system_heat().lindbladian,
    "light": lambda: light_harvesting().lindbladian,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_liouvillian_equals_qutip(name: str) -> None:
    Lb = MODELS[name]()
    H, cops = to_qutip(Lb)
    ref = qutip.liouvillian(H, cops).full()
    ours = liouvillian(Lb.H, Lb.C, Lb.rates).numpy()
    assert np.abs(ours - ref).max() <= 1e-12
    # Qobj inputs give the same, with rates folded into the operators
    from_qobj = liouvillian(H, cops).numpy()
    assert np.abs(from_qobj - ref).max() <= 1e-12


def test_column_stacking_convention() -> None:
    g = torch.Generator().manual_seed(1)
    A, X, B = (torch.randn(3, 3, dtype=torch.complex128, generator=g) for _ in range(3))
    lhs = vec(A @ X @ B)
    rhs = torch.kron(B.T.contiguous(), A) @ vec(X)
    assert torch.allclose(lhs, rhs, atol=1e-13)
    assert torch.allclose(unvec(vec(X)), X)
    # vec stacks columns: the second entry is X[1, 0]
    assert vec(X)[1] == X[1, 0]


def test_matrix_free_apply_matches_matrix() -> None:
    Lb = qubit_chain(2)
    rho = torch.randn(4, 4, dtype=torch.complex128)
    assert torch.allclose(vec(Lb.apply(rho)), Lb.matrix() @ vec(rho), atol=1e-13)
    assert np.allclose(Lb.scipy().toarray(), Lb.matrix().numpy(), atol=1e-14)


def test_batched_liouvillian_matches_loop() -> None:
    Hs = torch.stack([kerr_cavity(5, detuning=d).H for d in (0.1, 0.7, 1.3)])
    a = kerr_cavity(5).C
    L = liouvillian(Hs, a, torch.tensor([1.0]))
    assert L.shape == (3, 25, 25)
    for i, d in enumerate((0.1, 0.7, 1.3)):
        assert torch.allclose(L[i], kerr_cavity(5, detuning=d).matrix(), atol=1e-14)


def test_numpy_inputs() -> None:
    Lb = kerr_cavity(4)
    L = liouvillian(Lb.H.numpy(), [Lb.C[0].numpy()], [1.0])
    assert torch.allclose(L, Lb.matrix(), atol=1e-14)


def test_bad_input_raises_actionable_errors() -> None:
    H = torch.eye(3, dtype=torch.complex128)
    with pytest.raises(FlowfieldsError, match=r"H: .*square"):
        lindbladian(torch.zeros(3, 4))
    with pytest.raises(FlowfieldsError, match=r"H: .*Hermitian"):
        lindbladian(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(FlowfieldsError, match=r"c_ops\[0\]"):
        lindbladian(H, [torch.zeros(2, 2)])
    with pytest.raises(FlowfieldsError, match=r"rates: .*non-negative"):
        lindbladian(H, [torch.eye(3)], [-0.1])
    with pytest.raises(FlowfieldsError, match=r"rates: .*2 rates"):
        lindbladian(H, [torch.eye(3), torch.eye(3)], [0.1])
    with pytest.raises(FlowfieldsError, match="rates"):
        lindbladian(H, [torch.eye(3)], torch.tensor([0.1j]))
    with pytest.raises(FlowfieldsError, match="H"):
        lindbladian("not an operator")
    with pytest.raises(FlowfieldsError, match="T"):
        v_system_heat(T_h=-1.0)
    # mismatched batch dimensions: H batch 2, jump operators batch 3
    Hb = torch.eye(3, dtype=torch.complex128).expand(2, 3, 3)
    with pytest.raises(FlowfieldsError, match=r"batch shapes \(2,\), \(3,\)"):
        lindbladian(Hb, torch.zeros(3, 1, 3, 3, dtype=torch.complex128), torch.ones(1))


def test_bad_input_messages_are_actionable() -> None:
    # each message names the argument, shows what was given and says what was expected
    cases = [
        (lambda: lindbladian(torch.zeros(3, 4)), "H", "(3, 4)"),
        (lambda: lindbladian(torch.tensor([[0.0, 1.0], [0.0, 0.0]])), "H", "Hermitian"),
        (lambda: lindbladian(torch.eye(2), [torch.eye(2)], [-0.5]), "rates", "-0.5"),
    ]
    for make, arg, detail in cases:
        with pytest.raises(FlowfieldsError) as info:
            make()
        msg = str(info.value)
        assert msg.startswith(arg) and detail in msg and "expected" in msg, msg
