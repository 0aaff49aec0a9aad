"""Atomic, checksummed training checkpoints that keep the previous good one.

A checkpoint is a plain ``torch.save`` dict (so ``torch.load(path, weights_only=False)`` reads
it) with a ``"sha256"`` entry: a digest of every other entry (tensor bytes, dtypes, shapes and
the ``repr`` of plain values). Saving writes a temporary file in the same directory, fsyncs it,
moves the existing checkpoint to ``<stem>.prev<suffix>`` and renames the temporary file into
place, so a crash at any moment leaves at least one complete checkpoint behind. Loading detects
truncated or corrupted files (``torch.load`` failure or digest mismatch) with
:class:`~flowfields.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from flowfields.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "save_checkpoint",
    "state_digest",
]

#: Value of the ``"format"`` entry of checkpoints written by this module.
CHECKPOINT_FORMAT = "flowfields.engine/1"


def previous_path(path: str | os.PathLike) -> Path:
    """Where the previous good checkpoint of ``path`` is kept (``ckpt.pt`` -> ``ckpt.prev.pt``)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def _update(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            _update(h, k)
            _update(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{type(obj).__name__}{len(obj)}".encode())
        for v in obj:
            _update(h, v)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict's content, ignoring its ``"sha256"`` entry."""
    h = hashlib.sha256()
    _update(h, {k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    state: dict[str, Any], path: str | os.PathLike, *, keep_previous: bool = True
) -> Path:
    """Write ``state`` atomically to ``path``, keeping the old file as the previous checkpoint.

    Args:
        state: a dict of tensors / plain values (``"sha256"`` and ``"format"`` are added).
        path: destination, e.g. ``run/checkpoint.pt``; its directory is created.
        keep_previous: move an existing ``path`` to :func:`previous_path` first.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    state = dict(state)
    state["format"] = CHECKPOINT_FORMAT
    state.pop("sha256", None)
    state["sha256"] = state_digest(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        kept = [str(p) for p in (path, previous_path(path)) if p.exists()]
        raise CheckpointError(
            f"checkpoint: could not write {str(path)!r} ({err.strerror or err}); "
            + (f"the previous checkpoint(s) {kept} are intact. " if kept else "")
            + "Free disk space or make the directory writable, then resume."
        ) from None
    _fsync_dir(path.parent)
    return path


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.

    Returns:
        The state dict.

    Raises:
        CheckpointError: if the file is missing, truncated, unreadable or its digest does not
            match its content.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: got {str(path)!r}, expected an existing file.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is truncated or corrupt and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]})." + _previous_hint(path)
        ) from err
    if not isinstance(state, dict) or "sha256" not in state:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is not a flowfields training checkpoint "
            "(expected a dict with a 'sha256' entry written by flowfields.engine)."
        )
    digest = state_digest(state)
    if digest != state["sha256"]:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is corrupt: its content digest {digest[:12]} does not "
            f"match the stored {str(state['sha256'])[:12]}." + _previous_hint(path)
        )
    return state


def _previous_hint(path: Path) -> str:
    """Where the previous checkpoint is, said only when it exists."""
    prev = previous_path(path)
    if path.name.endswith(f".prev{path.suffix}") or not prev.is_file():
        return ""
    return f" The previous checkpoint {str(prev)!r} is tried next when resuming."


def load_latest_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """Load ``path``, falling back to its previous checkpoint if ``path`` is missing or corrupt.

    A corrupt ``path`` is renamed to ``<name>.corrupt`` (kept for inspection) with a warning, so
    that the next save does not push the good previous checkpoint out.

    Returns:
        ``(state, path_read)``, or ``None`` when neither file exists.

    Raises:
        CheckpointError: when the files that exist are all corrupt.
    """
    path = Path(path)
    prev = previous_path(path)
    errors: list[str] = []
    if path.exists():
        try:
            return load_checkpoint(path, map_location), path
        except CheckpointError as err:
            errors.append(str(err))
    if prev.exists():
        try:
            state = load_checkpoint(prev, map_location)
        except CheckpointError as err:
            errors.append(str(err))
        else:
            if errors:
                bad = path.with_name(path.name + ".corrupt")
                os.replace(path, bad)
                warnings.warn(
                    f"{errors[0]} Moved it to {str(bad)!r}; resuming from {str(prev)!r}.",
                    stacklevel=2,
                )
            return state, prev
    if errors:
        raise CheckpointError(
            " ".join(errors)
            + " No readable checkpoint is left: start a fresh run (without resume)."
        )
    return None
