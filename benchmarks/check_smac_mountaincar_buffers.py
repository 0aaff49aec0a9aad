"""What a finished ``smac-mountaincar`` run explored: its replay buffers, run by run.

Run: ``python benchmarks/check_smac_mountaincar_buffers.py RUN_DIR``. Reads every
``train_<algo>_seed<k>.pt`` checkpoint of the run directory (its train state holds the replay
buffer; the full preset's buffer holds all 50k transitions) and prints a markdown table: the
transitions that reached the flag (the +100 goal bonus: reward > 50; terminated), the range
of car positions visited, and the final deterministic return. A seed that never reached the
flag in training cannot be expected to reach it at evaluation: this separates "never found
the goal" from "found it and forgot".
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

__all__ = ["main", "summarize"]


def summarize(checkpoint: Path) -> dict[str, float]:
    """Goal transitions, terminations, position range and last evaluation of one run."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["train_state"]
    buf = state["extra"]["buffer"]
    n = int(buf["size"])
    data = {k: v[:n] for k, v in buf["data"].items()}
    x = data["obs"][:, 0]
    return {
        "transitions": n,
        "goal": int((data["reward"] > 50).sum()),
        "terminated": int(data["terminated"].sum()),
        "x_min": float(x.min()),
        "x_max": float(x.max()),
        "final_return": float(state["evals"][-1][1]["return"]) if state["evals"] else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    run_dir = Path(args[0]) if args else Path("runs/smac-mountaincar")
    paths = sorted(p for p in run_dir.glob("train_*_seed*.pt") if ".prev" not in p.name)
    if not paths:
        raise SystemExit(f"no train_<algo>_seed<k>.pt checkpoints in {run_dir}")
    print("| run | transitions | goal transitions | terminated | position range | final return |")
    print("|---|---:|---:|---:|---|---:|")
    for p in paths:
        s = summarize(p)
        print(f"| {p.stem.removeprefix('train_')} | {s['transitions']} | {s['goal']} | "
              f"{s['terminated']} | [{s['x_min']:.3f}, {s['x_max']:.3f}] | "
              f"{s['final_return']:.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
