"""Mass of a trained Voronoi mixture layer by float64 polar quadrature, cell by cell.

Run: ``python -m benchmarks.check_voronoi_layer_mass RUN_DIR [--phi N] [--alpha M] TOY...``
for a ``voronoi-mixture`` run directory. For each cell k, the component density
``p(f_k^{-1}(y) | k) |det df_k^{-1}/dy|`` is integrated over cell k in polar coordinates
about the anchor, ``y = a_k + alpha lam*(phi) (cos phi, sin phi)``: Gauss-Legendre in u with
``alpha = 1 - (1 - u)^4`` (nodes packed at the faces) and the midpoint rule in phi. Each
component's mass should be 1, the layer's ``sum_k pi_k m_k`` too. This resolves the sharp
shells of a trained layer that the experiment's midpoint grid (``mass_cells`` per side, in
float32) can miss.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from flowfields.experiments.voronoi_mixture import VoronoiMixtureExperiment
from flowfields.voronoi import cell_map_inverse, ray_length

__all__ = ["component_masses", "main"]

F64 = torch.float64


def component_masses(mix: torch.nn.Module, n_phi: int, n_alpha: int) -> torch.Tensor:
    """Mass of every component of a float64 :class:`~flowfields.voronoi.VoronoiMixture` over
    its own cell, (K,)."""
    m: object = mix
    t = m.tess  # type: ignore[attr-defined]
    a, lo, hi = t.anchors.detach(), t.lower.detach(), t.upper.detach()
    theta = m.theta.detach()  # type: ignore[attr-defined]
    u_np, w_np = np.polynomial.legendre.leggauss(n_alpha)
    u, w = torch.tensor((u_np + 1) / 2, dtype=F64), torch.tensor(w_np / 2, dtype=F64)
    alpha, dalpha = 1 - (1 - u) ** 4, 4 * (1 - u) ** 3 * w
    phi = (torch.arange(n_phi, dtype=F64) + 0.5) * 2 * math.pi / n_phi
    d = torch.stack([phi.cos(), phi.sin()], -1)
    out = []
    with torch.no_grad():
        for k in range(t.n_cells):
            kk = torch.full((n_phi,), k)
            lam = ray_length(d, kk, a, lo, hi)
            y = (a[k] + (alpha[None, :, None] * lam[:, None, None]) * d[:, None, :]).reshape(-1, 2)
            ks = torch.full((y.shape[0],), k)
            x, ld = cell_map_inverse(y, ks, a, lo, hi, theta[ks])
            dens = (m._dist(ks).log_prob(x) + ld).exp().reshape(n_phi, n_alpha)  # type: ignore[attr-defined]
            inner = (dens * lam[:, None] ** 2 * alpha[None] * dalpha[None]).sum(1)
            out.append(float(inner.sum()) * 2 * math.pi / n_phi)
    return torch.tensor(out, dtype=F64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("toys", nargs="+")
    parser.add_argument("--phi", type=int, default=2000, help="angles per cell")
    parser.add_argument("--alpha", type=int, default=300, help="radial nodes per angle")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for toy in args.toys:
        model = VoronoiMixtureExperiment.load_model(args.run_dir, f"{toy}-mixture").double()
        mix = model.mixture
        masses = component_masses(mix, args.phi, args.alpha)
        pi = mix.log_pi().exp().detach()
        print(
            f"{toy}: component masses in [{float(masses.min()):.6f}, "
            f"{float(masses.max()):.6f}]; layer mass {float((pi * masses).sum()):.6f}; "
            f"max |pi_k m_k - pi_k| {float((pi * (masses - 1)).abs().max()):.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
