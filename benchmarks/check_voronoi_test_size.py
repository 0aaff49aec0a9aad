"""Test NLL of a ``voronoi-mixture`` run's models against the test size.

Run: ``python -m benchmarks.check_voronoi_test_size RUN_DIR TOY... [--sizes 1000 4000 ...]``.
For each toy, the saved flow and flow + Voronoi layer are scored on the first n points of
one test draw (the experiment's test seed, ``seed + 2``), for every n in ``--sizes``: mean
and median NLL (nats), the share of the points at ``1 - alpha < 1e-2`` from a face, and the
maximum NLL. With a normal base in the cells the mixture's mean grows with n (its expected
NLL is infinite); with the Student-t base it should settle like the flow's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flowfields.experiments.runner import config_from_dict
from flowfields.experiments.voronoi_mixture import VoronoiMixtureExperiment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("toys", nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 20_000, 100_000])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    raw = json.loads((Path(args.run_dir) / "config.json").read_text())
    cfg = config_from_dict(VoronoiMixtureExperiment.Config, raw)
    exp = VoronoiMixtureExperiment(cfg, args.run_dir, progress=False)
    n_max = max(args.sizes)
    for toy in args.toys:
        flow = exp.load_model(args.run_dir, f"{toy}-flow")
        mix = exp.load_model(args.run_dir, f"{toy}-mixture")
        test = exp._data(toy, n_max, cfg.seed + 2)
        with torch.no_grad():
            lp_f = torch.cat([flow().log_prob(p) for p in test.split(20_000)]).double()
            lp_m = torch.cat([mix.log_prob(p) for p in test.split(20_000)]).double()
        gap = torch.cat([exp._face_gap(mix, p) for p in test.split(20_000)])
        df = float(mix.mixture.df.detach()) if mix.mixture.base == "student" else float("nan")
        print(f"{toy} (base {mix.mixture.base}, df {df:.3f}):")
        for n in args.sizes:
            f, m = -lp_f[:n], -lp_m[:n]
            share = float((gap[:n] < 1e-2).double().mean())
            print(
                f"  n={n:>6}: flow {float(f.mean()):.3f} (median {float(f.median()):.3f}); "
                f"mixture {float(m.mean()):.4g} (median {float(m.median()):.3f}, "
                f"max {float(m.max()):.3g}); face share {share:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
