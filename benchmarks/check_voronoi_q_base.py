"""ELBO and IWAE gaps of the Voronoi models of finished ``voronoi-discrete2d`` runs.

    python -m benchmarks.check_voronoi_q_base RUN [RUN ...] [--k 32] [--elbo-draws 256]

For every PMF of each run: the gap to the entropy (bits per variable) of the Voronoi model's
ELBO (``-sum_x P(x) E_q[log p - log q]``, ``--elbo-draws`` draws per class) and of its
IWAE_k, with ``sum_x P_hat(x)``, and the q law of the run (``q_base``, ``q_df``). The ELBO
gap is the bound itself (KL(q || p(. | x)) plus the model's own error); the IWAE gap adds
the estimator's tightening, which the weights' tail limits.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def main() -> None:
    from flowfields.experiments.voronoi_discrete2d import VoronoiDiscrete2d, class_weights
    from flowfields.voronoi import entropy_bits, grid_pmf

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--elbo-draws", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | q | PMF | ELBO gap | IWAE gap | sum P_hat |")
    print("|---|---|---|---:|---:|---:|")
    for run in args.runs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        cfg = cfg.get("config", cfg)
        q = cfg.get("q_base", "normal")
        if q == "student":
            q += f" df {cfg['q_df']:g}" + (" learned" if cfg.get("q_learn_df") else "")
        K = cfg["n_classes"]
        xs = torch.cartesian_prod(torch.arange(K), torch.arange(K))
        for pmf_name in cfg["pmfs"]:
            model = VoronoiDiscrete2d.load_model(run, f"{pmf_name}-voronoi")
            pmf = grid_pmf(pmf_name, K).reshape(-1).double()
            h = entropy_bits(pmf.reshape(K, K)) / 2
            w = class_weights(model, xs, args.elbo_draws, seed=1, device="cpu")
            elbo = -(pmf * w.mean(0)).sum() / (2 * math.log(2)) - h
            wk = class_weights(model, xs, args.k, seed=2, device="cpu")
            iw = torch.logsumexp(wk, 0) - math.log(args.k)
            iwae = -(pmf * iw).sum() / (2 * math.log(2)) - h
            total = float(w.exp().mean(0).sum())
            print(
                f"| {Path(run).name} | {q} | {pmf_name} | {float(elbo):.3f} | "
                f"{float(iwae):.3f} | {total:.3f} |"
            )


if __name__ == "__main__":
    main()
