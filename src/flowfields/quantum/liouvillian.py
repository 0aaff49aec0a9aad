"""Lindblad generators (Liouvillians) as dense tensors, matrix-free operators and scipy matrices.

Master equation (ħ = 1)::

    dρ/dt = L ρ = -i [H, ρ] + Σ_k g_k ( C_k ρ C_k^† - ½ {C_k^† C_k, ρ} )

Vectorisation convention (the same as QuTiP's): **column stacking**. ``vec(ρ)`` stacks the
columns of ρ, so entry ``ρ[k, i]`` (row k, column i) sits at index ``i * d + k`` and
``vec(A X B) = (B^T ⊗ A) vec(X)``. Hence ``A ρ -> I ⊗ A``, ``ρ B -> B^T ⊗ I`` and
``C ρ C^† -> conj(C) ⊗ C``. :func:`vec` / :func:`unvec` convert (note ``unvec`` transposes,
it does not conjugate). Mixing up row and column stacking silently transposes every
superoperator: the tests compare against ``qutip.liouvillian`` to 1e-12.

Inputs may be torch tensors, numpy arrays or QuTiP ``Qobj`` (converted with ``.full()``);
everything is computed in complex128 unless a complex64 tensor is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from flowfields.errors import FlowfieldsError, check

__all__ = [
    "Lindbladian",
    "as_operator",
    "check_finite_operator",
    "lindbladian",
    "liouvillian",
    "unvec",
    "vec",
]

HERMITIAN_TOL = 1e-10


def as_operator(x: Any, argument: str, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    """Convert a tensor, numpy array or QuTiP ``Qobj`` to a complex tensor (keeps autograd)."""
    if hasattr(x, "full") and callable(x.full) and not isinstance(x, torch.Tensor):
        x = x.full()
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    check(isinstance(x, torch.Tensor), argument, x, "a torch.Tensor, numpy array or qutip.Qobj")
    check(
        x.is_complex() or x.is_floating_point() or x.dtype in _INTEGER_DTYPES,
        argument,
        x,
        "a numeric (complex, floating or integer) tensor",
    )
    check_finite_operator(x, argument)
    if not x.is_complex():
        x = x.to(torch.float64 if dtype == torch.complex128 else torch.float32)
    return x.to(dtype) if x.dtype != dtype else x


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_finite_operator(x: torch.Tensor, argument: str) -> None:
    """Raise FlowfieldsError if ``x`` (real or complex) holds NaN or Inf entries."""
    if x.numel() and not bool(torch.isfinite(x.detach()).all()):
        bad = int((~torch.isfinite(x.detach())).sum())
        raise FlowfieldsError(
            f"{argument}: got {tuple(x.shape)} entries with {bad} NaN or Inf, expected finite "
            "values (one would make every entry of a steady state NaN)."
        )


def vec(rho: torch.Tensor) -> torch.Tensor:
    """Column-stacking vectorisation: (..., d, d) -> (..., d*d), ``rho[k, i]`` at ``i*d + k``."""
    d = rho.shape[-1]
    return rho.transpose(-1, -2).reshape(*rho.shape[:-2], d * d)


def unvec(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`vec`: (..., d*d) -> (..., d, d)."""
    n = x.shape[-1]
    d = round(n**0.5)
    check(d * d == n, "x", x, "a last dimension that is a perfect square d*d")
    return x.reshape(*x.shape[:-1], d, d).transpose(-1, -2)


def _sprepost(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Superoperator of X -> A X B in column stacking: ``B^T ⊗ A``, batched."""
    d = A.shape[-1]
    S = torch.einsum("...ji,...kl->...ikjl", B, A)
    return S.reshape(*S.shape[:-4], d * d, d * d)


@dataclass
class Lindbladian:
    """A Lindblad generator kept as its parts ``(H, C, g)``: dense, matrix-free or sparse.

    Attributes:
        H: (..., d, d) Hermitian Hamiltonian.
        C: (..., K, d, d) jump operators (K may be 0).
        rates: (..., K) non-negative real rates ``g_k``.

    Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols
    for non-equilibrium steady states" (arXiv:2103.12604).
    """

    H: torch.Tensor
    C: torch.Tensor
    rates: torch.Tensor

    @property
    def dim(self) -> int:
        """Hilbert-space dimension d."""
        return int(self.H.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions (broadcast of H, C and rates)."""
        return tuple(
            np.broadcast_shapes(self.H.shape[:-2], self.C.shape[:-3], self.rates.shape[:-1])
        )

    def apply(self, rho: torch.Tensor) -> torch.Tensor:
        """L(ρ) for (..., d, d) ρ, without forming the d²×d² matrix (differentiable)."""
        H, C, g = self.H, self.C, self.rates
        out = -1j * (H @ rho - rho @ H)
        if C.shape[-3] == 0:
            return out
        Cd = C.conj().transpose(-1, -2)
        r = rho.unsqueeze(-3)
        term = C @ r @ Cd - 0.5 * (Cd @ C @ r + r @ Cd @ C)
        return out + (g.to(term.dtype)[..., None, None] * term).sum(-3)

    def matrix(self) -> torch.Tensor:
        """Dense Liouvillian (..., d², d²) in column stacking (differentiable).

        Assembled as ``-i (I ⊗ H_eff) + i (conj(H_eff) ⊗ I) + Σ_k g_k conj(C_k) ⊗ C_k`` with
        ``H_eff = H - (i/2) Σ_k g_k C_k^† C_k``; the jump sum is one matrix product over k.
        """
        H, C, g = self.H, self.C, self.rates
        d = self.dim
        n = d * d
        eye = torch.eye(d, dtype=H.dtype, device=H.device)
        if C.shape[-3] == 0:
            return -1j * (_sprepost(H, eye) - _sprepost(eye, H))
        gc = g.to(H.dtype)[..., None, None]
        Cd = C.conj().transpose(-1, -2)
        Heff = H - 0.5j * (gc * (Cd @ C)).sum(-3)
        K = C.shape[-3]
        batch = np.broadcast_shapes(H.shape[:-2], C.shape[:-3], g.shape[:-1])
        left = (gc * C.conj()).reshape(*C.shape[:-3], K, n).transpose(-1, -2)  # (.., n, K)
        right = C.reshape(*C.shape[:-3], K, n)  # (.., K, n)
        L = (left @ right).reshape(*left.shape[:-2], d, d, d, d)  # [i, j, a, b]
        L = L.permute(*range(L.ndim - 4), -4, -2, -3, -1).expand(*batch, d, d, d, d)
        L = L.contiguous()  # [i, a, j, b]: conj(C)[i, j] C[a, b] = (conj(C) ⊗ C)[i d + a, j d + b]
        Heff = Heff.expand(*batch, d, d)
        # I ⊗ H_eff: δ_ij H_eff[a, b]; conj(H_eff) ⊗ I: conj(H_eff)[i, j] δ_ab (in place on views)
        blocks = torch.diagonal(L, dim1=-4, dim2=-2)  # (.., a, b, i)
        blocks.add_(-1j * Heff.unsqueeze(-1))
        inner = torch.diagonal(L, dim1=-3, dim2=-1)  # (.., i, j, a)
        inner.add_(1j * Heff.conj().unsqueeze(-1))
        return L.reshape(*batch, n, n)

    def scipy(self, index: tuple[int, ...] = ()) -> sp.csr_matrix:
        """Sparse scipy Liouvillian of one batch element (no autograd), column stacking."""
        H = self.H.detach()
        C = self.C.detach()
        g = self.rates.detach()
        shape = self.batch_shape
        if shape:
            H = H.expand(*shape, *H.shape[-2:])[index]
            C = C.expand(*shape, *C.shape[-3:])[index]
            g = g.expand(*shape, g.shape[-1])[index]
        d = self.dim
        # L = -i (I ⊗ H_eff) + i (conj(H_eff) ⊗ I) + Σ g_k conj(C_k) ⊗ C_k,
        # H_eff = H - (i/2) Σ g_k C_k^† C_k  (fewer sparse products than term by term)
        Cn = C.cpu().numpy()
        gn = g.cpu().numpy()
        Heff = H.cpu().numpy() - 0.5j * np.einsum("k,kji,kjl->il", gn, Cn.conj(), Cn)
        Hs = sp.csr_matrix(Heff)
        eye = sp.identity(d, dtype=complex, format="csr")
        L = -1j * sp.kron(eye, Hs, format="csr") + 1j * sp.kron(Hs.conj(), eye, format="csr")
        for k in range(Cn.shape[0]):
            if gn[k] != 0.0:
                Ck = sp.csr_matrix(Cn[k])
                L = L + gn[k] * sp.kron(Ck.conj(), Ck, format="csr")
        return sp.csr_matrix(L)

    def detach(self) -> Lindbladian:
        """Copy without autograd history."""
        return Lindbladian(self.H.detach(), self.C.detach(), self.rates.detach())


def lindbladian(
    H: Any,
    c_ops: Sequence[Any] | torch.Tensor | None = None,
    rates: Any = None,
    *,
    dtype: torch.dtype = torch.complex128,
    hermitian_tol: float = HERMITIAN_TOL,
) -> Lindbladian:
    """Validate and bundle ``H``, jump operators and rates into a :class:`Lindbladian`.

    Args:
        H: (..., d, d) Hermitian Hamiltonian (tensor, array or Qobj).
        c_ops: a sequence of (..., d, d) operators, or a (..., K, d, d) tensor, or None.
        rates: None (all ones), a sequence of K numbers, or a (..., K) real tensor >= 0.
        dtype: complex dtype (complex128 default).
        hermitian_tol: ``max|H - H^†| <= hermitian_tol * max(1, max|H|)`` is required.

    Raises:
        FlowfieldsError: non-square or non-Hermitian H, mismatched dimensions, negative or
            complex rates, non-finite entries.
    """
    H = as_operator(H, "H", dtype)
    check(H.ndim >= 2 and H.shape[-1] == H.shape[-2], "H", H, "a square (..., d, d) matrix")
    check(H.shape[-1] >= 1, "H", H, "a (..., d, d) matrix with d >= 1")
    d = H.shape[-1]
    scale = max(1.0, float(H.detach().abs().max())) if H.numel() else 1.0
    herm = float((H.detach() - H.detach().conj().transpose(-1, -2)).abs().max()) if H.numel() else 0
    check(
        herm <= hermitian_tol * scale,
        "H",
        H,
        f"a Hermitian matrix (max|H - H^†| = {herm:.2e} > {hermitian_tol:.0e})",
        "Build H as (M + M^†)/2, or put non-Hermitian (lossy) parts into c_ops.",
    )
    if c_ops is None:
        C = torch.zeros(0, d, d, dtype=dtype, device=H.device)
    elif isinstance(c_ops, torch.Tensor):
        C = as_operator(c_ops, "c_ops", dtype)
        check(C.ndim >= 3, "c_ops", C, "a (..., K, d, d) tensor or a list of (d, d) operators")
    else:
        ops = [as_operator(c, f"c_ops[{i}]", dtype) for i, c in enumerate(c_ops)]
        for i, c in enumerate(ops):
            check(
                c.ndim >= 2 and tuple(c.shape[-2:]) == (d, d),
                f"c_ops[{i}]",
                c,
                f"a ({d}, {d}) operator matching H",
            )
        if ops:
            shape = np.broadcast_shapes(*(c.shape[:-2] for c in ops))
            C = torch.stack([c.expand(*shape, d, d) for c in ops], dim=-3)
        else:
            C = torch.zeros(0, d, d, dtype=dtype, device=H.device)
    check(
        tuple(C.shape[-2:]) == (d, d),
        "c_ops",
        C,
        f"jump operators of size ({d}, {d}) matching H",
    )
    check(bool(torch.isfinite(C).all()), "c_ops", C, "finite entries")
    K = C.shape[-3]
    if rates is None:
        g = torch.ones(K, dtype=torch.float64, device=H.device)
    else:
        check(
            isinstance(rates, (int, float, list, tuple, torch.Tensor))
            and not isinstance(rates, bool),
            "rates",
            rates,
            "None, a sequence of K numbers or a (..., K) real tensor >= 0",
        )
        if isinstance(rates, (list, tuple)):
            rates = (
                torch.stack([torch.as_tensor(r, dtype=torch.float64) for r in rates])
                if (rates)
                else torch.zeros(0, dtype=torch.float64)
            )
        g = torch.as_tensor(rates) if not isinstance(rates, torch.Tensor) else rates
        check(not g.is_complex(), "rates", g, "real non-negative rates")
        g = g.to(torch.float64) if g.dtype != torch.float64 else g
        check(g.ndim >= 1 and g.shape[-1] == K, "rates", g, f"{K} rates (one per jump operator)")
        check(bool(torch.isfinite(g).all()), "rates", g, "finite rates")
        neg = float(g.detach().min()) if g.numel() else 0.0
        check(
            neg >= 0.0,
            "rates",
            g,
            f"non-negative rates (smallest is {neg:.3g})",
            "A negative rate breaks complete positivity; absorb signs into the operators.",
        )
    try:
        np.broadcast_shapes(H.shape[:-2], C.shape[:-3], g.shape[:-1])
    except ValueError as e:
        raise FlowfieldsError(
            f"H, c_ops, rates: batch shapes {tuple(H.shape[:-2])}, {tuple(C.shape[:-3])}, "
            f"{tuple(g.shape[:-1])} do not broadcast; expected matching leading dimensions."
        ) from e
    return Lindbladian(H, C, g)


def liouvillian(
    H: Any,
    c_ops: Sequence[Any] | torch.Tensor | None = None,
    rates: Any = None,
    *,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """Dense Lindblad superoperator in column stacking (QuTiP's convention).

    ``dL/dt = -i[H, ρ] + Σ_k g_k (C_k ρ C_k^† - ½{C_k^† C_k, ρ})`` with
    ``vec(A X B) = (B^T ⊗ A) vec(X)``; equals ``qutip.liouvillian(H, [sqrt(g_k) C_k])``.

    Args:
        H: (..., d, d) Hermitian; c_ops: K operators (..., d, d) or (..., K, d, d);
        rates: None (ones) or (..., K) non-negative.

    Returns:
        (..., d², d²) complex tensor, differentiable in H, c_ops and rates.

    Example:
        >>> a = torch.diag(torch.arange(1, 4.0).sqrt(), 1).to(torch.complex128)
        >>> L = liouvillian(a.mH @ a, [a], [0.1])   # damped cavity, d = 4 -> (16, 16)
    """
    return lindbladian(H, c_ops, rates, dtype=dtype).matrix()
