"""Running experiments: configs from presets and ``--set`` overrides, run directories, resume.

The CLI (``flowfields run`` / ``reproduce``) is a thin layer over :func:`run_experiment` and
:func:`reproduce`; both are usable from Python too.

A run directory holds ``run.json`` (experiment name, preset, status, versions, times),
``config.json`` (the ``Config`` fields, written before the run starts, so ``--resume`` and
:func:`flowfields.load` can rebuild it), and after the run ``metrics.json``, ``report.html``,
the experiment's figures and ``checkpoint.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowfields.errors import FlowfieldsError, check
from flowfields.report.html import write_json, write_run, write_summary
from flowfields.report.result import Result

__all__ = [
    "RUNS_ENV",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_types",
    "latest_run_dir",
    "new_run_dir",
    "parse_value",
    "read_run_info",
    "reproduce",
    "run_experiment",
    "runs_root",
]

#: Environment variable naming the default root of run directories (default ``./runs``).
RUNS_ENV = "FLOWFIELDS_RUNS"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null"}


def runs_root() -> Path:
    """Where run directories go by default: ``$FLOWFIELDS_RUNS`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ENV, "runs"))


def config_types(cfg_cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a ``Config`` dataclass."""
    check(dataclasses.is_dataclass(cfg_cls), "Config", cfg_cls, "a dataclass")
    module = sys.modules.get(cfg_cls.__module__)
    try:
        hints = typing.get_type_hints(cfg_cls, vars(module) if module else None)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cfg_cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_value(text: str, tp: Any, key: str = "value") -> Any:
    """Parse the command-line string ``text`` as type ``tp``.

    Supports ``int``, ``float``, ``bool`` (true/false/yes/no/1/0/on/off), ``str``, ``Path``,
    ``X | None`` (``none``/``null``), ``Literal[...]``, ``tuple[T, ...]``, ``tuple[A, B]`` and
    ``list[T]`` (comma-separated, brackets optional: ``1,2,3`` or ``(1, 2, 3)``).

    Raises:
        FlowfieldsError: naming ``key``, the text given and the type expected.
    """
    text = text.strip()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str | None = None) -> FlowfieldsError:
        want = expected or f"a value of type {_type_name(tp)}"
        return FlowfieldsError(f"--set {key}: got {text!r}, expected {want}.")

    if tp is Any or tp is None:
        return _strip_quotes(text)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return parse_value(text, option, key)
            except FlowfieldsError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == _strip_quotes(text):
                return choice
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if origin in (tuple, list) or tp in (tuple, list):
        inner = text
        if inner[:1] in "([" and inner[-1:] in ")]":
            inner = inner[1:-1]
        parts = [p for p in (s.strip() for s in inner.split(",")) if p != ""]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise fail(f"{len(args)} comma-separated values ({_type_name(tp)})")
            return tuple(parse_value(p, a, key) for p, a in zip(parts, args))
        elem = args[0] if args else str
        values = [parse_value(p, elem, key) for p in parts]
        return list(values) if (origin is list or tp is list) else tuple(values)
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise fail("a boolean (true/false, yes/no, 1/0, on/off)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise fail("an integer") from None
            if as_float.is_integer():
                return int(as_float)
            raise fail("an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise fail("a number") from None
    if tp is str:
        return _strip_quotes(text)
    if isinstance(tp, type):
        try:
            return tp(_strip_quotes(text))
        except Exception:
            raise fail() from None
    return _strip_quotes(text)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a JSON-loaded value (lists for tuples, ...) back to the field's type."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], key) if len(options) == 1 else value
    if (origin is tuple or tp is tuple) and isinstance(value, list):
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, key) for v in value)
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def _valid_keys(cfg_cls: type) -> str:
    return ", ".join(f"{k} ({_type_name(t)})" for k, t in config_types(cfg_cls).items())


def apply_overrides(cfg: Any, overrides: Mapping[str, Any] | Sequence[str]) -> Any:
    """Return a copy of ``cfg`` with ``overrides`` applied.

    Args:
        cfg: a ``Config`` dataclass instance.
        overrides: ``["key=value", ...]`` (strings parsed by the field's type) or a mapping
            ``{key: value}`` (strings parsed, other values used as they are).

    Raises:
        FlowfieldsError: for an unknown key (listing the valid ones), a malformed
            ``key=value`` or a value that does not parse as the field's type.
    """
    types_ = config_types(type(cfg))
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise FlowfieldsError(
                    f"--set: got {item!r}, expected key=value (e.g. --set steps=2000)."
                )
            k, v = item.split("=", 1)
            items.append((k.strip(), v))
    changes: dict[str, Any] = {}
    for key, value in items:
        if key not in types_:
            raise FlowfieldsError(
                f"--set: got unknown key {key!r} for {type(cfg).__module__}.Config, expected one "
                f"of: {_valid_keys(type(cfg))}."
            )
        changes[key] = parse_value(value, types_[key], key) if isinstance(value, str) else value
    return dataclasses.replace(cfg, **changes)


def config_from_dict(cfg_cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a ``Config`` from ``config.json`` content (unknown keys are ignored)."""
    types_ = config_types(cfg_cls)
    kwargs = {k: _coerce(v, types_[k], k) for k, v in data.items() if k in types_}
    return cfg_cls(**kwargs)


def build_config(
    module: types.ModuleType,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    seed: int | None = None,
    device: str | None = None,
    base: Any = None,
) -> Any:
    """The experiment's preset (``quick()`` or ``full()``, or ``base``) with overrides applied.

    ``seed`` and ``device`` (when given) are applied after ``overrides``; ``device`` is
    checked with :func:`flowfields.engine.resolve_device` (``"auto"`` is resolved).
    """
    from flowfields.engine.device import resolve_device

    cfg_cls = getattr(module, "Config", None)
    check(
        cfg_cls is not None and dataclasses.is_dataclass(cfg_cls),
        "experiment",
        module.__name__,
        "a module defining a Config dataclass",
    )
    if base is None:
        base = cfg_cls.quick() if quick else cfg_cls.full()
    cfg = apply_overrides(base, overrides)
    extra: dict[str, Any] = {}
    names = config_types(cfg_cls)
    if seed is not None:
        check(isinstance(seed, int) and seed >= 0, "--seed", seed, "a non-negative integer")
        extra["seed"] = seed
    if device is not None:
        extra["device"] = device
    if extra:
        cfg = apply_overrides(cfg, {k: v for k, v in extra.items() if k in names})
    if "device" in names and isinstance(cfg.device, str):
        cfg = dataclasses.replace(cfg, device=str(resolve_device(cfg.device)))
    return cfg


def new_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """A fresh ``root/NAME/<YYYYmmdd-HHMMSS>[-k]`` directory (created)."""
    base = Path(root) if root is not None else runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / name / stamp
    k = 2
    while path.exists():
        path = base / name / f"{stamp}-{k}"
        k += 1
    path.mkdir(parents=True)
    return path


def latest_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The most recent run directory of ``name`` under ``root`` (for ``--resume``).

    Raises:
        FlowfieldsError: when there is none.
    """
    base = (Path(root) if root is not None else runs_root()) / name
    dirs = (
        sorted((p for p in base.iterdir() if (p / "config.json").is_file()), key=_run_sort_key)
        if base.is_dir()
        else []
    )
    if not dirs:
        raise FlowfieldsError(
            f"--resume: no run of {name!r} found under {str(base)!r}; expected a directory "
            "written by `flowfields run` (pass --out DIR to resume a specific run)."
        )
    return dirs[-1]


def _run_sort_key(p: Path) -> tuple[str, int]:
    tail = p.name[16:]
    return (p.name[:15], int(tail) if tail.isdigit() else 0)


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a run directory (with ``"experiment"``), or raise if it is not one.

    Raises:
        FlowfieldsError: when ``run_dir`` is not a directory written by ``flowfields run``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FlowfieldsError(
            f"run_dir: got {str(run_dir)!r}, expected an existing run directory "
            "(runs/NAME/<timestamp> written by `flowfields run`)."
        )
    info: dict[str, Any] = {}
    for fname in ("run.json", "metrics.json"):
        f = run_dir / fname
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise FlowfieldsError(
                    f"run_dir: {str(f)!r} is unreadable ({err}); the run directory is damaged."
                ) from err
            if isinstance(data, dict) and "experiment" in data:
                info = {**data, **info} if info else data
                break
    if "experiment" not in info or not (run_dir / "config.json").is_file():
        raise FlowfieldsError(
            f"run_dir: got {str(run_dir)!r}, which is not a flowfields run directory: expected "
            "run.json (or metrics.json) naming the experiment and config.json, as written by "
            "`flowfields run`."
        )
    return info


def _versions() -> dict[str, str]:
    import torch

    import flowfields

    return {
        "flowfields": flowfields.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


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
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> tuple[Result, Path]:
    """Run one experiment end to end and write its run directory.

    Args:
        name: registered experiment name (``flowfields list``).
        quick: use ``Config.quick()`` (about a minute on 2 CPU cores) instead of ``full()``.
        overrides: ``--set`` values, ``["key=value", ...]`` or a mapping.
        out: run directory; default a new ``root/NAME/<timestamp>``; with ``resume`` and no
            ``out``, the latest run directory of ``name``.
        seed: overrides ``Config.seed``.
        device: overrides ``Config.device`` (``auto``, ``cpu``, ``cuda``, ...).
        threads: torch intra-op threads (default :data:`flowfields.engine.DEFAULT_THREADS`).
        resume: continue the run in ``out`` from its checkpoint, with its saved config (plus
            any ``overrides`` / ``seed`` / ``device`` given now).
        progress: show progress bars.
        root: root of run directories (default ``$FLOWFIELDS_RUNS`` or ``./runs``).

    Returns:
        ``(result, run_dir)``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this with the same ``out``
    (required); only rank 0 writes ``run.json``, ``config.json``, ``metrics.json`` and the report.

    Raises:
        FlowfieldsError: unknown experiment, bad overrides, nothing to resume, ...
    """
    from flowfields.engine.device import set_threads
    from flowfields.engine.seeding import seed_everything
    from flowfields.experiments import get

    module = get(name)
    n_threads = set_threads(threads)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if ranks > 1 and out is None:
        raise FlowfieldsError(
            f"--out: got none under torchrun (WORLD_SIZE={ranks}), expected a run directory "
            "shared by all ranks, e.g. --out runs/NAME/ddp-1."
        )
    base = None
    if resume:
        run_dir = Path(out) if out is not None else latest_run_dir(name, root)
        cfg_file = run_dir / "config.json"
        if cfg_file.is_file():
            info = read_run_info(run_dir)
            if info.get("experiment") != name:
                raise FlowfieldsError(
                    f"--resume: {str(run_dir)!r} is a run of {info.get('experiment')!r}, "
                    f"expected a run of {name!r}."
                )
            base = config_from_dict(module.Config, json.loads(cfg_file.read_text()))
            quick = bool(info.get("quick", quick))
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = Path(out) if out is not None else new_run_dir(name, root)
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg = build_config(
        module, quick=quick, overrides=overrides, seed=seed, device=device, base=base
    )
    cfg_dict = dataclasses.asdict(cfg)
    info = {
        "experiment": name,
        "paper": getattr(module, "PAPER", ""),
        "quick": quick,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed": resume,
        "threads": n_threads,
        "argv": sys.argv,
        "versions": _versions(),
    }
    if main_rank:
        write_json(info, run_dir / "run.json")
        write_json(cfg_dict, run_dir / "config.json")
    if hasattr(cfg, "seed") and isinstance(cfg.seed, int):
        seed_everything(cfg.seed)
    t0 = time.perf_counter()
    try:
        result = module.run(cfg, run_dir, resume=resume, progress=progress)
    except KeyboardInterrupt:
        info["status"] = "interrupted"
        if main_rank:
            write_json(info, run_dir / "run.json")
        raise
    except BaseException as err:
        info["status"] = "failed"
        info["error"] = f"{type(err).__name__}: {err}"
        if main_rank:
            write_json(info, run_dir / "run.json")
        raise
    wall = time.perf_counter() - t0
    if not isinstance(result, Result):
        raise FlowfieldsError(
            f"experiment {name!r}: run() returned {type(result).__name__}, expected a "
            "flowfields.report.Result."
        )
    if not result.wall_s:
        result.wall_s = wall
    if not result.config:
        result.config = cfg_dict
    if main_rank:  # under torchrun only rank 0 writes the run's records
        paths = write_run(result, run_dir)
        write_json(cfg_dict, run_dir / "config.json")  # the loadable config, whatever run() put
        info.update(
            status="finished",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            wall_s=wall,
            report=str(paths["report"]),
        )
        write_json(info, run_dir / "run.json")
    return result, run_dir


def reproduce(
    names: Iterable[str] | None = None,
    *,
    quick: bool = False,
    out: str | os.PathLike | None = None,
    threads: int | None = None,
    device: str | None = None,
    progress: bool = True,
    on_done: Any = None,
) -> tuple[list[tuple[Result | BaseException, Path]], Path]:
    """Run several experiments (default: all registered) and write one summary report.

    A run that raises is recorded as crashed in the summary and the others still run.

    Args:
        names: experiment names; default every registered experiment present.
        quick: quick presets.
        out: directory holding one sub-directory per experiment and ``report.html``;
            default ``runs/reproduce/<timestamp>``.
        threads, device, progress: as in :func:`run_experiment`.
        on_done: optional callback ``(name, result_or_exception, run_dir)`` after each run.

    Returns:
        ``(entries, summary_path)`` with ``entries`` the ``(result_or_exception, run_dir)``
        pairs in order.
    """
    from flowfields.experiments import REGISTRY, get
    from flowfields.experiments import names as registered

    chosen = list(names) if names else registered()
    for n in chosen:
        if n not in REGISTRY:
            get(n)  # raises the FlowfieldsError listing the valid names
    base = Path(out) if out is not None else new_run_dir("reproduce")
    base.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[Result | BaseException, Path]] = []
    for n in chosen:
        run_dir = base / n
        try:
            result, run_dir = run_experiment(
                n, quick=quick, out=run_dir, threads=threads, device=device, progress=progress
            )
            entry: Result | BaseException = result
        except KeyboardInterrupt:
            raise
        except Exception as err:
            entry = err
        entries.append((entry, run_dir))
        if on_done is not None:
            on_done(n, entry, run_dir)
    title = "flowfields: reproduction report" + (" (quick presets)" if quick else "")
    summary = write_summary(entries, base / "report.html", title=title)
    return entries, summary
