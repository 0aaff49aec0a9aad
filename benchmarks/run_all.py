"""Run every benchmark, each in its own process, then rebuild BENCHMARKS.md.

Usage::

    python -m benchmarks.run_all [--quick] [--assemble-only] [NAME ...]

Each ``benchmarks/bench_<name>.py`` writes ``benchmarks/results/<name>.md``; this script runs
them one after another (never in parallel: they time things) and concatenates the results,
in a fixed order, under the header of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

__all__ = ["BENCHES", "assemble", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHES = (
    "matching",
    "conservation",
    "quantum",
    "ppd",
    "cpflow",
    "voronoi",
    "sdebnn",
    "rl",
    "gflownet",
    "compression",
)

HEADER = """# Benchmarks

Side-by-side timings against peer libraries, measured in one process with the two candidates
interleaved round by round (`benchmarks/timing.py`). Ratios are ours / peer: below 1 means
flowfields is faster; the bracket is the interquartile range over rounds. Each section names
the command that produced it and the machine it ran on. Regenerate everything with
`make bench` (or `python -m benchmarks.run_all`), one section with
`python -m benchmarks.bench_<name>`.
"""


def _as_section(text: str) -> str:
    """A result file's text with its headings demoted so that its title is level 2."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = ["#" + line if line.startswith("#") else line for line in lines]
    return "\n".join(lines) + "\n"


def assemble() -> str:
    """BENCHMARKS.md text from the per-benchmark result files present."""
    parts = [HEADER]
    for name in BENCHES:
        path = RESULTS / f"{name}.md"
        if path.exists():
            parts.append(_as_section(path.read_text()))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--assemble-only",
        action="store_true",
        help="only rebuild BENCHMARKS.md from the existing benchmarks/results/*.md",
    )
    args = parser.parse_args(argv)
    failed = []
    for name in [] if args.assemble_only else args.names:
        if not (ROOT / "benchmarks" / f"bench_{name}.py").is_file():
            print(f"skip {name}: no benchmarks/bench_{name}.py", flush=True)
            continue
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}"]
        cmd += ["--quick"] if args.quick else []
        print("$", " ".join(cmd), flush=True)
        if subprocess.call(cmd, cwd=ROOT) != 0:
            failed.append(name)
    (ROOT / "BENCHMARKS.md").write_text(assemble())
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
