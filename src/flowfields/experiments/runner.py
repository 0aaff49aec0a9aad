"""Running experiments: one run into its own directory, or several into one report.

The CLI (``flowfields run`` / ``reproduce``) is a thin layer over :func:`run_experiment` and
:func:`reproduce`; both are usable from Python too.

:func:`run_experiment` validates everything before it writes anything: the experiment name,
the run directory (:func:`~flowfields.experiments.rundir.check_out_dir`), the configuration
(preset, saved config, ``--set`` overrides, the experiment's own ``check_config``). Only then
does it take the directory's lock, write ``run.json`` and ``config.json`` (atomically, with
checksums) and run; the run's status (running, finished, failed, interrupted) is kept in
``run.json``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowfields.errors import FlowfieldsError
from flowfields.experiments.base import Experiment
from flowfields.experiments.config import build_config, config_from_dict
from flowfields.experiments.rundir import (
    RunLock,
    check_out_dir,
    clear_run_dir,
    latest_run_dir,
    new_run_dir,
    read_run_info,
)
from flowfields.report.html import write_run, write_summary
from flowfields.report.records import read_json, write_json
from flowfields.report.result import Result

__all__ = ["reproduce", "run_experiment"]


def _versions() -> dict[str, str]:
    import torch

    import flowfields

    return {
        "flowfields": flowfields.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


def _saved_config(cls: type[Experiment], name: str, run_dir: Path) -> tuple[Any, bool]:
    """The config and preset a run directory was run with (for ``--resume``)."""
    info = read_run_info(run_dir)
    if info.get("experiment") != name:
        raise FlowfieldsError(
            f"--resume: {str(run_dir)!r} is a run of {info.get('experiment')!r}, "
            f"expected a run of {name!r}."
        )
    cfg_file = run_dir / "config.json"
    return config_from_dict(cls.Config, read_json(cfg_file), str(cfg_file)), bool(info["quick"])


def _best_effort(info: dict[str, Any], path: Path) -> None:
    """Record a run's status; a read-only or full disk must not hide the run's own error."""
    try:
        write_json(info, path)
    except FlowfieldsError:
        pass


def run_experiment(
    name: str,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> tuple[Result, Path]:
    """Run one experiment end to end and write its run directory.

    Args:
        name: registered experiment name (``flowfields list``).
        quick: use ``Config.quick()`` (well under a minute on one CPU core) instead of ``full()``.
        overrides: ``--set`` values, ``["key=value", ...]`` or a mapping.
        out: run directory; default a new ``root/NAME/<timestamp>``; with ``resume`` and no
            ``out``, the latest run directory of ``name``.
        seed: overrides ``Config.seed``.
        device: overrides ``Config.device`` (``auto``, ``cpu``, ``cuda``, ...).
        threads: torch intra-op threads (default :data:`flowfields.engine.DEFAULT_THREADS`).
        resume: continue the run in ``out`` from its checkpoints, with its saved config (plus
            any ``overrides`` / ``seed`` / ``device`` given now).
        overwrite: a fresh run into ``out`` that holds a previous run replaces it.
        progress: show progress bars.
        root: root of run directories (default ``$FLOWFIELDS_RUNS`` or ``./runs``).

    Returns:
        ``(result, run_dir)``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this with the same ``out``
    (required); only rank 0 checks and locks the directory and writes its records.

    Raises:
        FlowfieldsError: unknown experiment, bad overrides, a directory that is not a run (with
            ``resume``), holds another run or is in use, a file that cannot be written, ...
    """
    from flowfields.engine.device import set_threads
    from flowfields.experiments import get

    cls = get(name)
    n_threads = set_threads(threads)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if ranks > 1 and out is None:
        raise FlowfieldsError(
            f"--out: got none under torchrun (WORLD_SIZE={ranks}), expected a run directory "
            "shared by all ranks, e.g. --out runs/NAME/ddp-1."
        )
    if resume:
        run_dir = Path(out) if out is not None else latest_run_dir(name, root)
    else:
        run_dir = Path(out) if out is not None else new_run_dir(name, root)
    if main_rank:
        check_out_dir(run_dir, resume=resume, overwrite=overwrite)
    base = None
    if resume:
        base, quick = _saved_config(cls, name, run_dir)
    cfg = build_config(
        cls.Config, quick=quick, overrides=overrides, seed=seed, device=device, base=base
    )
    experiment = cls(cfg, run_dir, resume=resume, progress=progress)
    experiment.check_config()  # everything is validated before anything is written
    info: dict[str, Any] = {
        "experiment": name,
        "paper": cls.PAPER,
        "quick": quick,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed": resume,
        "threads": n_threads,
        "pid": os.getpid(),
        "argv": sys.argv,
        "versions": _versions(),
    }
    with RunLock(run_dir, enabled=main_rank):
        if main_rank:
            if overwrite and not resume:
                clear_run_dir(run_dir)
            write_json(info, run_dir / "run.json")
            write_json(dataclasses.asdict(cfg), run_dir / "config.json")
        result = _execute(experiment, info, main_rank)
    return result, run_dir


def _execute(experiment: Experiment, info: dict[str, Any], main_rank: bool) -> Result:
    run_dir = experiment.run_dir
    t0 = time.perf_counter()
    try:
        result = experiment.execute()
        if main_rank:  # under torchrun only rank 0 writes the run's records
            paths = write_run(result, run_dir)
            info.update(report=str(paths["report"]))
    except KeyboardInterrupt:
        info["status"] = "interrupted"
        if main_rank:
            _best_effort(info, run_dir / "run.json")
        raise
    except BaseException as err:
        info["status"] = "failed"
        info["error"] = f"{type(err).__name__}: {err}"
        if main_rank:
            _best_effort(info, run_dir / "run.json")
        if isinstance(err, OSError):
            where = f" {str(err.filename)!r}" if err.filename else ""
            raise FlowfieldsError(
                f"run_dir: could not write{where} in {str(run_dir)!r} ({err.strerror or err}); "
                "check that the directory is writable and the disk has space."
            ) from None
        raise
    wall = time.perf_counter() - t0
    result.wall_s = result.wall_s or wall
    if main_rank:
        info.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_s=wall)
        write_json(info, run_dir / "run.json")
    return result


def _run_one(name: str, run_dir: str, quick: bool, threads: int | None, device: str | None,
             overwrite: bool, progress: bool) -> Result:  # fmt: skip
    """One experiment of :func:`reproduce` (module level: picklable for worker processes)."""
    return run_experiment(
        name,
        quick=quick,
        out=run_dir,
        threads=threads,
        device=device,
        overwrite=overwrite,
        progress=progress,
    )[0]


def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def reproduce(
    names: Iterable[str] | None = None,
    *,
    quick: bool = False,
    out: str | os.PathLike | None = None,
    threads: int | None = None,
    device: str | None = None,
    progress: bool = True,
    jobs: int | None = None,
    overwrite: bool = False,
    on_done: Callable[[str, Result | BaseException, Path], Any] | None = None,
) -> tuple[list[tuple[Result | BaseException, Path]], Path]:
    """Run several experiments (default: all registered) and write one summary report.

    With ``jobs > 1`` the experiments run side by side in that many worker processes, one torch
    thread each (on 2 cores, two small experiments at once finish sooner than one after the
    other with two threads each: BENCHMARKS.md). A run that raises is recorded as crashed in
    the summary and the others still run.

    Args:
        names: experiment names; default every registered experiment present.
        quick: quick presets.
        out: directory holding one sub-directory per experiment and ``report.html``;
            default ``runs/reproduce/<timestamp>``.
        threads, device, progress: as in :func:`run_experiment` (workers show no bars).
        jobs: worker processes (default: the CPU cores this process may use; 1: in-process).
        overwrite: replace the runs a previous ``reproduce`` left in ``out``.
        on_done: optional callback ``(name, result_or_exception, run_dir)`` after each run.

    Returns:
        ``(entries, summary_path)`` with ``entries`` the ``(result_or_exception, run_dir)``
        pairs in the order of ``names``.
    """
    from flowfields.experiments import REGISTRY, get
    from flowfields.experiments import names as registered
    from flowfields.experiments.rundir import runs_root

    chosen = list(names) if names else registered()
    for n in chosen:
        if n not in REGISTRY:
            get(n)  # raises the FlowfieldsError listing the valid names
    jobs = _default_jobs() if jobs is None else jobs
    if not (isinstance(jobs, int) and jobs >= 1):
        raise FlowfieldsError(f"--jobs: got {jobs!r}, expected a positive integer.")
    base = Path(out) if out is not None else new_run_dir("reproduce", runs_root())
    base.mkdir(parents=True, exist_ok=True)
    results: dict[str, Result | BaseException] = {}
    args = {n: (n, str(base / n), quick, threads, device, overwrite) for n in chosen}
    if jobs == 1 or len(chosen) <= 1:
        for n in chosen:
            results[n] = _guarded(_run_one, *args[n], progress)
            if on_done is not None:
                on_done(n, results[n], base / n)
    else:
        _run_parallel(args, min(jobs, len(chosen)), 1 if threads is None else threads, results,
                      base, on_done)  # fmt: skip
    entries = [(results[n], base / n) for n in chosen]
    title = "flowfields: reproduction report" + (" (quick presets)" if quick else "")
    return entries, write_summary(entries, base / "report.html", title=title)


def _guarded(fn: Callable[..., Result], *args: Any) -> Result | BaseException:
    try:
        return fn(*args)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        return err


def _run_in_worker(registry: dict[str, str], path: list[str], *args: Any) -> Result:
    """:func:`_run_one` in a spawned worker, with the parent's registry and ``sys.path`` (so
    experiments registered at run time, e.g. by plugins or tests, are found there too)."""
    from flowfields.experiments import REGISTRY

    REGISTRY.update(registry)
    sys.path[:] = path + [p for p in sys.path if p not in path]
    return _run_one(*args)


def _run_parallel(
    args: dict[str, tuple[Any, ...]],
    jobs: int,
    threads: int,
    results: dict[str, Result | BaseException],
    base: Path,
    on_done: Callable[[str, Result | BaseException, Path], Any] | None,
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from flowfields.experiments import REGISTRY

    ctx = multiprocessing.get_context("spawn")  # no inherited torch thread pools or locks
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {
            pool.submit(
                _run_in_worker,
                dict(REGISTRY),
                list(sys.path),
                n,
                run_dir,
                quick,
                threads,
                device,
                overwrite,
                False,
            ): n
            for n, (_, run_dir, quick, _t, device, overwrite) in args.items()
        }
        for future in as_completed(futures):
            n = futures[future]
            err = future.exception()
            results[n] = err if err is not None else future.result()
            if on_done is not None:
                on_done(n, results[n], base / n)
