"""Open quantum models: the paper's two devices and two standard benchmark systems.

All parameters may be Python floats or 0-d float64 tensors (then the model is differentiable
in them). Units: ħ = k_B = 1.

Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604).

1. :func:`v_system_heat` -- three-level V-system heat-transfer device: ground |g⟩ and two
   excited levels |1⟩, |2⟩ (energies ε₁, ε₂) coupled by tunnelling Δ; a hot bosonic bath drives
   g↔1 and a cold one g↔2 (rates γ (n+1) down, γ n up, n the Bose-Einstein occupation at the
   transition energy and the bath temperature; local Lindblad dissipators); pure dephasing
   γ_φ of each excited level. Default values (our choice where the paper's text was not
   available offline; see docs/quantum.md): ε₁ = ε₂ = 1, Δ = 0.05, γ_h = γ_c = 0.01,
   γ_φ = 0.005, T_h = 2, T_c = 0.5.
2. :func:`light_harvesting` -- donor–acceptor energy transfer under natural incoherent light:
   ground |g⟩, donor |1⟩, acceptor |2⟩, H = ε₁|1⟩⟨1| + ε₂|2⟩⟨2| + J(|1⟩⟨2| + h.c.); incoherent
   pumping of the donor (absorption and stimulated emission, rate 2r each), recombination of
   both excited sites to |g⟩ (rate 2Γ), site dephasing (rate 2γ_d each, so site coherences
   decay at 2γ_d), and trapping of the acceptor's exciton into the reaction centre (jump
   |g⟩⟨2|, rate 2Γ_RC; the reaction centre is recycled at once). Defaults follow the authors'
   public notebook (ps⁻¹): ε₁ - ε₂ = 1.3, J = 0.12, r = 6.34e-10, Γ = 5e-4, γ_d = 1,
   Γ_RC = 0.5. The factors of 2 reproduce the population / coherence decay rates of the
   paper's reduced equations.
3. :func:`kerr_cavity` and :func:`qubit_chain` -- benchmarks against QuTiP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowfields.errors import check
from flowfields.quantum.liouvillian import Lindbladian, lindbladian
from flowfields.quantum.observables import heat_current
from flowfields.quantum.steady import steady_state

__all__ = [
    "HeatDevice",
    "LightHarvester",
    "bose_einstein",
    "kerr_cavity",
    "light_harvesting",
    "qubit_chain",
    "transfer_efficiency",
    "v_system_heat",
]

C128 = torch.complex128


def _t(x: float | torch.Tensor, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)
    check(t.ndim == 0, name, t, "a scalar (Python float or 0-d tensor)")
    check(bool(torch.isfinite(t)), name, t, "a finite number")
    return t.to(torch.float64)


def _proj(d: int, i: int, j: int) -> torch.Tensor:
    P = torch.zeros(d, d, dtype=C128)
    P[i, j] = 1.0
    return P


def bose_einstein(omega: torch.Tensor | float, T: torch.Tensor | float) -> torch.Tensor:
    """Mean occupation ``1 / (exp(ω/T) - 1)`` of a bosonic mode (ω > 0, T > 0)."""
    omega, T = _t(omega, "omega"), _t(T, "T")
    check(float(omega.detach()) > 0, "omega", omega, "a positive transition energy")
    check(float(T.detach()) > 0, "T", T, "a positive temperature")
    return 1.0 / torch.expm1(omega / T)


@dataclass
class HeatDevice:
    """A V-system heat-transfer device (see :func:`v_system_heat`).

    Attributes:
        lindbladian: the full generator (both baths + dephasing).
        H: (3, 3) Hamiltonian.
        hot: (jump operators (K, 3, 3), rates (K,)) of the hot bath.
        cold: same for the cold bath.
    """

    lindbladian: Lindbladian
    H: torch.Tensor
    hot: tuple[torch.Tensor, torch.Tensor]
    cold: tuple[torch.Tensor, torch.Tensor]

    def currents(self, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """Steady-state heat currents ``(J_h, J_c)`` into the system from each bath."""
        rho = steady_state(self.lindbladian, method)
        return heat_current(self.H, *self.hot, rho), heat_current(self.H, *self.cold, rho)


def v_system_heat(
    eps_1: float | torch.Tensor = 1.0,
    eps_2: float | torch.Tensor = 1.0,
    delta: float | torch.Tensor = 0.05,
    gamma_h: float | torch.Tensor = 0.01,
    gamma_c: float | torch.Tensor = 0.01,
    gamma_phi: float | torch.Tensor = 0.005,
    T_h: float | torch.Tensor = 2.0,
    T_c: float | torch.Tensor = 0.5,
) -> HeatDevice:
    """Three-level V-system between a hot (g↔1) and a cold (g↔2) bosonic bath.

    ``H = ε₁|1⟩⟨1| + ε₂|2⟩⟨2| + Δ(|1⟩⟨2| + |2⟩⟨1|)``; hot bath: ``|g⟩⟨1|`` at
    ``γ_h (n_h + 1)``, ``|1⟩⟨g|`` at ``γ_h n_h`` with ``n_h = n_BE(ε₁, T_h)``; cold bath likewise
    on g↔2 with ``n_c = n_BE(ε₂, T_c)``; dephasing ``|1⟩⟨1|``, ``|2⟩⟨2|`` at ``γ_φ``. Swap
    ``T_h`` and ``T_c`` for the reversed bias. Level order (g, 1, 2).

    Returns:
        :class:`HeatDevice`; ``device.currents()`` gives ``(J_h, J_c)``.
    """
    e1, e2, de = _t(eps_1, "eps_1"), _t(eps_2, "eps_2"), _t(delta, "delta")
    gh, gc, gp = _t(gamma_h, "gamma_h"), _t(gamma_c, "gamma_c"), _t(gamma_phi, "gamma_phi")
    for name, v in (("gamma_h", gh), ("gamma_c", gc), ("gamma_phi", gp)):
        check(float(v.detach()) >= 0, name, v, "a non-negative rate")
    n_h, n_c = bose_einstein(e1, T_h), bose_einstein(e2, T_c)
    H = (
        e1.to(C128) * _proj(3, 1, 1)
        + e2.to(C128) * _proj(3, 2, 2)
        + de.to(C128) * (_proj(3, 1, 2) + _proj(3, 2, 1))
    )
    C_hot = torch.stack([_proj(3, 0, 1), _proj(3, 1, 0)])
    g_hot = torch.stack([gh * (n_h + 1), gh * n_h])
    C_cold = torch.stack([_proj(3, 0, 2), _proj(3, 2, 0)])
    g_cold = torch.stack([gc * (n_c + 1), gc * n_c])
    C_deph = torch.stack([_proj(3, 1, 1), _proj(3, 2, 2)])
    g_deph = torch.stack([gp, gp])
    Lb = lindbladian(H, torch.cat([C_hot, C_cold, C_deph]), torch.cat([g_hot, g_cold, g_deph]))
    return HeatDevice(Lb, H, (C_hot, g_hot), (C_cold, g_cold))


@dataclass
class LightHarvester:
    """Donor–acceptor system under incoherent light (see :func:`light_harvesting`).

    Attributes:
        lindbladian: full generator; H: (3, 3) Hamiltonian; trap_rate: 2Γ_RC;
        recombination_rate: 2Γ.
    """

    lindbladian: Lindbladian
    H: torch.Tensor
    trap_rate: torch.Tensor
    recombination_rate: torch.Tensor

    def efficiency(self, method: str = "auto") -> torch.Tensor:
        """Steady-state transfer efficiency (see :func:`transfer_efficiency`)."""
        return transfer_efficiency(self, steady_state(self.lindbladian, method))


def light_harvesting(
    eps_12: float | torch.Tensor = 1.3,
    J: float | torch.Tensor = 0.12,
    r: float | torch.Tensor = 6.34e-10,
    Gamma: float | torch.Tensor = 5e-4,
    gamma_d: float | torch.Tensor = 1.0,
    Gamma_RC: float | torch.Tensor = 0.5,
) -> LightHarvester:
    """Donor (|1⟩) – acceptor (|2⟩) V-type system pumped by incoherent light (levels g, 1, 2).

    Energies measured from the acceptor: ``ε₂ = 0`` is shifted to ``ε₁ - ε₂ = eps_12`` (the
    ground-state energy drops out of every rate here). Jumps: ``|1⟩⟨g|`` and ``|g⟩⟨1|`` at
    ``2r`` (pumping), ``|g⟩⟨1|``, ``|g⟩⟨2|`` at ``2Γ`` (recombination), ``|1⟩⟨1|``, ``|2⟩⟨2|`` at
    ``2γ_d`` (dephasing), ``|g⟩⟨2|`` at ``2Γ_RC`` (trapping into the reaction centre).
    """
    e12, Jt, rt = _t(eps_12, "eps_12"), _t(J, "J"), _t(r, "r")
    Gt, gd, GRC = _t(Gamma, "Gamma"), _t(gamma_d, "gamma_d"), _t(Gamma_RC, "Gamma_RC")
    for name, v in (("r", rt), ("Gamma", Gt), ("gamma_d", gd), ("Gamma_RC", GRC)):
        check(float(v.detach()) >= 0, name, v, "a non-negative rate")
    H = e12.to(C128) * _proj(3, 1, 1) + Jt.to(C128) * (_proj(3, 1, 2) + _proj(3, 2, 1))
    C = torch.stack(
        [
            _proj(3, 1, 0),  # absorption
            _proj(3, 0, 1),  # stimulated emission
            _proj(3, 0, 1),  # recombination of the donor
            _proj(3, 0, 2),  # recombination of the acceptor
            _proj(3, 1, 1),  # dephasing
            _proj(3, 2, 2),
            _proj(3, 0, 2),  # trapping into the reaction centre
        ]
    )
    g = torch.stack([2 * rt, 2 * rt, 2 * Gt, 2 * Gt, 2 * gd, 2 * gd, 2 * GRC])
    return LightHarvester(lindbladian(H, C, g), H, 2 * GRC, 2 * Gt)


def transfer_efficiency(model: LightHarvester, rho: torch.Tensor) -> torch.Tensor:
    """Fraction of absorbed excitations that reach the reaction centre.

    ``η = k_RC ρ₂₂ / (k_RC ρ₂₂ + k_rec (ρ₁₁ + ρ₂₂))`` with ``k_RC = 2Γ_RC``, ``k_rec = 2Γ``:
    in the steady state the net absorption flux equals trapping plus recombination, so η is
    trapping flux / net absorbed flux (the paper's "localization efficiency" in the weak-light
    limit, where stimulated emission is negligible).
    """
    p1, p2 = rho[..., 1, 1].real, rho[..., 2, 2].real
    trap = model.trap_rate * p2
    return trap / (trap + model.recombination_rate * (p1 + p2))


def kerr_cavity(
    N: int,
    detuning: float | torch.Tensor = 0.5,
    kerr: float | torch.Tensor = 0.1,
    drive: float | torch.Tensor = 0.4,
    kappa: float | torch.Tensor = 1.0,
) -> Lindbladian:
    """Driven Kerr cavity truncated at N photons (d = N).

    ``H = Δ a†a + K a†a†aa + F (a + a†)``, one jump ``a`` at rate κ.
    """
    check(isinstance(N, int) and N >= 2, "N", N, "an integer truncation >= 2")
    a = torch.diag(torch.arange(1, N, dtype=torch.float64).sqrt(), 1).to(C128)
    ad = a.mH
    n = ad @ a
    H = (
        _t(detuning, "detuning").to(C128) * n
        + _t(kerr, "kerr").to(C128) * (ad @ ad @ a @ a)
        + _t(drive, "drive").to(C128) * (a + ad)
    )
    return lindbladian(H, a.unsqueeze(0), _t(kappa, "kappa").reshape(1))


def qubit_chain(
    n_qubits: int,
    omega: float | torch.Tensor = 1.0,
    J: float | torch.Tensor = 0.5,
    drive: float | torch.Tensor = 0.3,
    gamma: float | torch.Tensor = 0.1,
    gamma_phi: float | torch.Tensor = 0.05,
) -> Lindbladian:
    """Open XY chain of qubits (d = 2^n) with local decay and dephasing, first qubit driven.

    ``H = Σ ω/2 σ_z^i + J Σ (σ_+^i σ_-^{i+1} + h.c.) + Ω σ_x^0``; jumps ``σ_-^i`` at γ and
    ``σ_z^i`` at γ_φ on every qubit. Qubit 0 is the most significant tensor factor.
    """
    check(isinstance(n_qubits, int) and n_qubits >= 1, "n_qubits", n_qubits, "an integer >= 1")
    I2 = torch.eye(2, dtype=C128)
    sm = torch.tensor([[0, 0], [1, 0]], dtype=C128)  # |1⟩⟨0|: |0⟩ is up (σ_z = +1), as QuTiP
    sz = torch.tensor([[1, 0], [0, -1]], dtype=C128)
    sx = torch.tensor([[0, 1], [1, 0]], dtype=C128)

    def site(op: torch.Tensor, i: int) -> torch.Tensor:
        out = torch.ones(1, 1, dtype=C128)
        for k in range(n_qubits):
            out = torch.kron(out, (op if k == i else I2).contiguous())
        return out

    w, Jt, Om = _t(omega, "omega").to(C128), _t(J, "J").to(C128), _t(drive, "drive").to(C128)
    H = sum(0.5 * w * site(sz, i) for i in range(n_qubits))
    for i in range(n_qubits - 1):
        hop = site(sm.mH, i) @ site(sm, i + 1)
        H = H + Jt * (hop + hop.mH)
    H = H + Om * site(sx, 0)
    C = torch.stack([site(sm, i) for i in range(n_qubits)] + [site(sz, i) for i in range(n_qubits)])
    g = torch.cat(
        [
            _t(gamma, "gamma").expand(n_qubits),
            _t(gamma_phi, "gamma_phi").expand(n_qubits),
        ]
    )
    return lindbladian(H, C, g)
