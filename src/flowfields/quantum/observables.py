"""Observables of (steady) states: expectation values, bath heat currents, rectification.

Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604).
"""

from __future__ import annotations

from typing import Any

import torch

from flowfields.errors import check
from flowfields.quantum.liouvillian import Lindbladian, as_operator, check_finite_operator

__all__ = ["dissipator", "expect", "heat_current", "rectification"]


def expect(O: Any, rho: torch.Tensor, *, real: bool = True) -> torch.Tensor:
    """``Tr[O ρ]`` for (..., d, d) O and ρ; the real part when ``real`` (Hermitian O).

    Returns:
        (...,) real (or complex) tensor, differentiable in both.
    """
    check(isinstance(rho, torch.Tensor) and rho.ndim >= 2, "rho", rho, "a (..., d, d) tensor")
    check_finite_operator(rho, "rho")
    O = as_operator(O, "O", rho.dtype)
    check(O.shape[-1] == rho.shape[-1], "O", O, f"an operator of size {rho.shape[-1]}")
    val = torch.einsum("...ij,...ji->...", O, rho)
    return val.real if real else val


def dissipator(C: torch.Tensor, rates: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``D(ρ) = Σ_k g_k (C_k ρ C_k^† - ½{C_k^† C_k, ρ})`` for (..., K, d, d) C, (..., K) g."""
    for name, value in (("C", C), ("rates", rates), ("rho", rho)):
        check(isinstance(value, torch.Tensor), name, value, "a tensor")
        check_finite_operator(value, name)
    return Lindbladian(torch.zeros_like(rho), C, rates).apply(rho)


def heat_current(
    H: torch.Tensor, C: torch.Tensor, rates: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Heat current delivered by one bath: ``J = Tr[H D_bath(ρ)]``.

    Positive when energy flows from the bath into the system. In a steady state the currents
    of all baths (and dephasing, which carries energy when it does not commute with H) sum to 0.

    Args:
        H: (..., d, d) system Hamiltonian; C: (..., K, d, d) the bath's jump operators;
        rates: (..., K) their rates; rho: (..., d, d).

    Returns:
        (...,) real tensor.
    """
    return expect(H, dissipator(C, rates, rho))


def rectification(J_forward: torch.Tensor, J_reverse: torch.Tensor) -> torch.Tensor:
    """Rectification coefficient ``R = |J_f + J_r| / max(|J_f|, |J_r|)``.

    ``J_f`` is the current (from one chosen bath, e.g. the left one) with the temperature bias
    forward (left hot), ``J_r`` the same bath's current with the temperatures swapped. A linear
    (harmonic) or mirror-symmetric device has ``J_r = -J_f`` so ``R = 0``; a perfect diode
    (``J_r = 0``) has ``R = 1``. The literature also uses ``(|J_f| - |J_r|)/(|J_f| + |J_r|)``
    and ``|J_f/J_r|``; this one is symmetric in the two directions and bounded by 2.
    """
    return (J_forward + J_reverse).abs() / torch.maximum(J_forward.abs(), J_reverse.abs())
