"""The ``flowfields`` command line: ``list``, ``run``, ``reproduce``, ``bench``, ``compress``,
``decompress``.

Examples::

    flowfields list
    flowfields run flow-matching-2d --quick --set toy=moons --set steps=500
    flowfields run flow-matching-2d --resume            # continue the latest run
    flowfields reproduce --quick                        # all experiments, one HTML report
    torchrun --standalone --nproc_per_node=2 -m flowfields run NAME --out runs/NAME/ddp
                                                        # DistributedDataParallel training

Errors caused by bad input print the message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flowfields.errors import FlowfieldsError

__all__ = ["build_parser", "main"]


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowfields`` command."""
    from flowfields import __version__
    from flowfields.engine.device import DEFAULT_THREADS

    parser = argparse.ArgumentParser(
        prog="flowfields",
        description="Continuous-time generative models and differentiable dynamics: "
        "run and reproduce the papers' experiments.",
    )
    parser.add_argument("--version", action="version", version=f"flowfields {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("list", help="list the experiments")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick", action="store_true", help="quick preset (about a minute each on 2 CPU cores)"
    )
    common.add_argument("--out", metavar="DIR", help="output directory")
    common.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N (default: config)")
    common.add_argument(
        "--threads",
        type=_threads,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"torch threads (default {DEFAULT_THREADS}, fastest measured for "
        "the small models here)",
    )
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="a fresh run into an --out directory that holds a previous run replaces it",
    )

    run = sub.add_parser("run", parents=[common], help="run one experiment")
    run.add_argument("name", metavar="NAME", help="experiment name (see `flowfields list`)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override Config fields, e.g. --set steps=500",
    )
    run.add_argument("--seed", type=int, metavar="N", help="random seed (overrides config)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint of --out DIR (default: the latest run)",
    )

    rep = sub.add_parser(
        "reproduce", parents=[common], help="run several experiments and write one summary report"
    )
    rep.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    rep.add_argument(
        "--jobs",
        type=_threads,
        default=None,
        metavar="N",
        help="experiments run side by side in N processes, one thread each (default: one per "
        "CPU core)",
    )

    sub.add_parser("bench", help="how to run the benchmarks")
    from flowfields.compression.cli import add_parsers

    add_parsers(sub)
    return parser


def _list() -> int:
    from flowfields.experiments import REGISTRY, describe, get, names

    present = names()
    width = max((len(n) for n in REGISTRY), default=10)
    for name in REGISTRY:
        if name not in present:
            continue
        try:
            paper, line = get(name).PAPER, describe(name)
        except Exception as err:  # a broken module must not hide the others
            paper, line = "", f"(cannot import: {type(err).__name__}: {err})"
        print(f"{name:<{width}}  {line}")
        if paper:
            print(f"{'':<{width}}  paper: {paper}")
    if not present:
        print("no experiments installed")
    return 0


def _print_result(result, run_dir) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    held = sum(bool(c.holds) for c in result.claims)
    print(f"{result.name}: {held} of {len(result.claims)} claims held ({result.wall_s:.1f} s)")
    for c in result.claims:
        print(f"  {c.describe()}")
    print(f"run directory: {run_dir}")
    print(f"report: {run_dir / 'report.html'}")


def _run(args: argparse.Namespace) -> int:
    from flowfields.experiments.runner import run_experiment

    result, run_dir = run_experiment(
        args.name,
        quick=args.quick,
        overrides=args.overrides,
        out=args.out,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    _print_result(result, run_dir)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from flowfields.experiments.runner import reproduce

    def on_done(name, entry, run_dir) -> None:
        if isinstance(entry, BaseException):
            print(f"{name}: CRASHED ({type(entry).__name__}: {entry})", file=sys.stderr)
        else:
            _print_result(entry, run_dir)

    entries, summary = reproduce(
        args.names,
        quick=args.quick,
        out=args.out,
        threads=args.threads,
        device=args.device,
        progress=not args.no_progress,
        jobs=args.jobs,
        overwrite=args.overwrite,
        on_done=on_done,
    )
    results = [e for e, _ in entries if not isinstance(e, BaseException)]
    n_claims = sum(len(r.claims) for r in results)
    n_held = sum(bool(c.holds) for r in results for c in r.claims)
    crashed = len(entries) - len(results)
    print(
        f"\n{len(entries)} experiments, {n_held} of {n_claims} claims held"
        + (f", {crashed} crashed" if crashed else "")
    )
    print(f"summary report: {summary}")
    return 1 if crashed else 0


def _bench() -> int:
    print(
        "Benchmarks compare flowfields with peer libraries, interleaved in one process.\n"
        "Run them with `make bench` (or `.venv/bin/python -m benchmarks.run_all` from a "
        "source checkout); results go to BENCHMARKS.md."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowfields`` command; returns the exit status.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "run":
            return _run(args)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command in ("compress", "decompress"):
            from flowfields.compression import cli as compression_cli

            return getattr(compression_cli, f"{args.command}_main")(args)
        return _bench()
    except FlowfieldsError as err:
        print(f"flowfields: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if args.command == "run":
            hint = f" Resume with: flowfields run {args.name} --resume" + (
                f" --out {args.out}" if args.out else ""
            )
        print(f"\nflowfields: interrupted.{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that closed early (`| head`)
        sys.stdout = open(os.devnull, "w")  # no flush error when Python exits
        return 0


if __name__ == "__main__":
    sys.exit(main())
