"""Mass of a trained Voronoi mixture layer by float64 polar quadrature, cell by cell.

Run: ``python -m benchmarks.check_voronoi_layer_mass RUN_DIR [--phi N] [--alpha M] TOY...``
for a ``voronoi-mixture`` run directory. Each component's density is integrated over its own
cell by :func:`flowfields.voronoi.polar_component_masses` (polar coordinates about the
anchor, nodes packed at the faces). Each component's mass should be 1, and so should the
layer's ``sum_k pi_k m_k``. This resolves the sharp shells of a trained layer that a midpoint
grid in float32 can miss; runs saved before the experiment used it can be checked this way.
"""

from __future__ import annotations

import argparse

import torch

from flowfields.experiments.voronoi_mixture import VoronoiMixtureExperiment
from flowfields.voronoi import polar_component_masses

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("toys", nargs="+")
    parser.add_argument("--phi", type=int, default=2000, help="angles per cell")
    parser.add_argument("--alpha", type=int, default=300, help="radial nodes per angle")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for toy in args.toys:
        mix = VoronoiMixtureExperiment.load_model(args.run_dir, f"{toy}-mixture").mixture
        masses = polar_component_masses(mix, args.phi, args.alpha)
        with torch.no_grad():
            pi = mix.log_pi().exp().double().cpu()
        print(
            f"{toy}: component masses in [{float(masses.min()):.6f}, "
            f"{float(masses.max()):.6f}]; layer mass {float((pi * masses).sum()):.6f}; "
            f"max |pi_k m_k - pi_k| {float((pi * (masses - 1)).abs().max()):.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
