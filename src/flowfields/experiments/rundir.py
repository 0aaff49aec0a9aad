"""Run directories: where runs go, which directory is a run, and who owns it.

A run directory holds ``run.json`` (experiment, preset, status, versions, times),
``config.json`` (the ``Config`` fields), both checksummed (:mod:`flowfields.report.records`),
and, once the run has finished, ``metrics.json``, ``report.html``, figures and ``checkpoint.pt``
(every trained model); ``train_<name>.pt`` are the training checkpoints a resume continues
from. While a run works in it, the directory holds ``run.lock`` naming the owning process: a
second run into the same directory is refused (a lock whose process is gone is stale and taken
over).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from flowfields.errors import FlowfieldsError
from flowfields.report.records import read_json

__all__ = [
    "LOCK_FILE",
    "RUNS_ENV",
    "RunLock",
    "check_out_dir",
    "clear_run_dir",
    "is_run_dir",
    "latest_run_dir",
    "new_run_dir",
    "read_run_info",
    "runs_root",
]

#: Environment variable naming the default root of run directories (default ``./runs``).
RUNS_ENV = "FLOWFIELDS_RUNS"
#: The lock file a running run keeps in its directory.
LOCK_FILE = "run.lock"


def runs_root() -> Path:
    """Where run directories go by default: ``$FLOWFIELDS_RUNS`` or ``./runs``.

    Raises:
        FlowfieldsError: ``$FLOWFIELDS_RUNS`` is set but empty, or names a file.
    """
    value = os.environ.get(RUNS_ENV)
    if value is not None and not value.strip():
        raise FlowfieldsError(
            f"{RUNS_ENV}: got an empty value, expected a directory for run directories "
            f"(unset it to use ./runs)."
        )
    root = Path(value) if value is not None else Path("runs")
    if root.exists() and not root.is_dir():
        raise FlowfieldsError(
            f"{RUNS_ENV}: got {str(root)!r}, which is a file, expected a directory."
        )
    return root


def new_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """A fresh ``root/NAME/<YYYYmmdd-HHMMSS>[-k]`` path (not created: the lock creates it)."""
    base = Path(root) if root is not None else runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / name / stamp
    k = 2
    while path.exists():
        path = base / name / f"{stamp}-{k}"
        k += 1
    return path


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by ``flowfields run`` (has run.json)."""
    return (Path(path) / "run.json").is_file()


def latest_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The most recent run directory of ``name`` under ``root`` (for ``--resume``).

    Raises:
        FlowfieldsError: when there is none.
    """
    base = (Path(root) if root is not None else runs_root()) / name
    dirs = sorted((p for p in base.iterdir() if is_run_dir(p)), key=_run_sort_key) if (
        base.is_dir()
    ) else []  # fmt: skip
    if not dirs:
        raise FlowfieldsError(
            f"--resume: no run of {name!r} found under {str(base)!r}; expected a directory "
            "written by `flowfields run` (pass --out DIR to resume a specific run)."
        )
    return dirs[-1]


def _run_sort_key(p: Path) -> tuple[str, int]:
    tail = p.name[16:]
    return (p.name[:15], int(tail) if tail.isdigit() else 0)


def read_run_info(run_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``run.json`` of a run directory (verified), or raise if it is not one.

    Raises:
        FlowfieldsError: ``run_dir`` is missing, not a directory written by ``flowfields run``,
            or its ``run.json`` / ``config.json`` is damaged.
    """
    if run_dir is None or not isinstance(run_dir, (str, os.PathLike)):
        raise FlowfieldsError(
            f"run_dir: got {run_dir!r}, expected the path of a run directory "
            "(runs/NAME/<timestamp> written by `flowfields run`)."
        )
    path = Path(run_dir)
    if not path.is_dir():
        raise FlowfieldsError(
            f"run_dir: got {str(path)!r}, expected an existing run directory "
            "(runs/NAME/<timestamp> written by `flowfields run`)."
        )
    if not is_run_dir(path):
        raise FlowfieldsError(
            f"run_dir: got {str(path)!r}, which is not a flowfields run directory: expected "
            "run.json naming the experiment and config.json, as written by `flowfields run`."
        )
    info = read_json(path / "run.json")
    if not (path / "config.json").is_file():
        raise FlowfieldsError(
            f"run_dir: {str(path)!r} has no config.json: not a flowfields run directory, or a "
            "damaged one."
        )
    if not isinstance(info.get("experiment"), str):
        raise FlowfieldsError(f"run.json: {str(path / 'run.json')!r} names no experiment.")
    return info


def check_out_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` directory the run may not write into.

    A file is never a run directory; ``resume`` needs an existing run; a fresh run needs an
    empty or missing directory, unless ``overwrite`` (which replaces a previous run, never a
    directory of other files).

    Raises:
        FlowfieldsError: naming the directory and what to do instead.
    """
    if path.exists() and not path.is_dir():
        raise FlowfieldsError(f"--out: got {str(path)!r}, which is a file, expected a directory.")
    RunLock(path).refuse_if_owned()
    if resume:
        read_run_info(path)  # raises unless it is a run directory
        return
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not is_run_dir(path):
        raise FlowfieldsError(
            f"--out: {str(path)!r} is not empty and not a run directory; expected a new or "
            "empty directory (flowfields does not write into other files' directories)."
        )
    if not overwrite:
        raise FlowfieldsError(
            f"--out: {str(path)!r} already holds a run; continue it with --resume, or replace "
            "it with --overwrite."
        )


def clear_run_dir(path: Path) -> None:
    """Delete the files of a previous run in ``path`` (``--overwrite``), keeping the lock."""
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive ownership of a run directory by this process (``run.lock`` with its pid).

    Entering creates the directory and the lock; leaving removes the lock. A lock held by a
    live process on this host is refused; one whose process has ended (a killed run) is stale
    and taken over.

    Args:
        path: the run directory.
        enabled: take the lock (False under torchrun for ranks above 0).

    Raises:
        FlowfieldsError: another live process owns the directory, or it cannot be created.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.file = self.path / LOCK_FILE

    def __enter__(self) -> RunLock:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FlowfieldsError(
                f"--out: could not create {str(self.path)!r} ({err.strerror or err})."
            ) from None
        if self.enabled:
            self._acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.enabled:
            try:
                self.file.unlink(missing_ok=True)
            except OSError:
                pass

    def refuse_if_owned(self) -> None:
        """Raise the "in use" error when a live process other than this one holds the lock."""
        if not self.file.is_file():
            return
        owner = self._owner()
        if owner is not None and owner.get("pid") != os.getpid() and self._live(owner):
            raise FlowfieldsError(
                f"--out: {str(self.path)!r} is in use by another run (pid {owner.get('pid')} on "
                f"{owner.get('host')}); wait for it to finish or choose another directory."
            )

    def _acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        tmp = self.path / f".{LOCK_FILE}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(me))
            for _ in range(3):
                try:
                    os.link(tmp, self.file)  # atomic: fails if a lock exists, never half-written
                    return
                except FileExistsError:
                    owner = self._owner()
                    if owner is not None and owner.get("pid") != os.getpid() and self._live(owner):
                        raise FlowfieldsError(
                            f"--out: {str(self.path)!r} is in use by another run (pid "
                            f"{owner.get('pid')} on {owner.get('host')}); wait for it to finish "
                            "or choose another directory."
                        ) from None
                    self.file.unlink(missing_ok=True)  # stale: its process is gone
        except OSError as err:
            raise FlowfieldsError(
                f"--out: cannot write in {str(self.path)!r} ({err.strerror or err})."
            ) from None
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise FlowfieldsError(f"--out: could not take the lock {str(self.file)!r}.")

    def _owner(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # garbage (locks are written whole): stale
        return data if isinstance(data, dict) else None

    def _live(self, owner: dict[str, Any]) -> bool:
        if owner.get("host") != socket.gethostname():
            return True  # another machine's process: we cannot tell, so respect it
        pid = owner.get("pid")
        return isinstance(pid, int) and _pid_alive(pid)
