"""Run records on disk: strict JSON, written atomically with a checksum, verified on reading.

Every JSON file flowfields writes and later reads back (``run.json``, ``config.json``,
``metrics.json``) carries a ``"sha256"`` entry: the digest of its other content in canonical
form (sorted keys, no spaces). :func:`read_json` recomputes it, so a damaged, truncated or
hand-edited file raises :class:`~flowfields.errors.FlowfieldsError` naming the file instead of
feeding a wrong value to a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowfields.errors import FlowfieldsError

__all__ = [
    "CHECKSUM_KEY",
    "json_digest",
    "json_safe",
    "read_json",
    "write_json",
    "write_text_atomic",
]

#: The entry holding a record's checksum.
CHECKSUM_KEY = "sha256"


def json_safe(value: Any) -> Any:
    """Convert ``value`` to strict-JSON types: tensors / NumPy scalars to numbers or lists,
    tuples to lists, paths to strings, NaN / Inf to the strings ``"nan"``, ``"inf"``, ``"-inf"``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # torch tensors, NumPy scalars and arrays
    if callable(item):
        size = getattr(value, "size", None)
        numel = getattr(value, "numel", None)
        n = numel() if callable(numel) else (size if isinstance(size, int) else None)
        if n == 1:
            return json_safe(item())
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return json_safe(tolist())
    return str(value)


def json_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON object's content without its checksum entry (canonical form)."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(data: Any, path: str | os.PathLike, *, checksum: bool = True) -> Path:
    """Write ``json_safe(data)`` to ``path``: indented, fsynced, atomically renamed.

    Args:
        data: the record; a mapping gets a ``"sha256"`` entry when ``checksum`` is set.
        path: destination (its directory is created).
        checksum: add the checksum :func:`read_json` verifies.

    Raises:
        FlowfieldsError: the file cannot be written (read-only or full disk, ...); no
            temporary file is left behind.
    """
    path = Path(path)
    record = json_safe(data)
    if checksum and isinstance(record, dict):
        record[CHECKSUM_KEY] = json_digest(record)
    return write_text_atomic(path, json.dumps(record, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path``: temporary file, fsync, atomic rename (directory created).

    Raises:
        FlowfieldsError: the file cannot be written (read-only or full disk, ...); no
            temporary file is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise FlowfieldsError(
            f"{path.name}: could not write {str(path)!r} ({err.strerror or err}); check that "
            "the directory is writable and the disk has space."
        ) from None
    return path


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json` and verify its checksum.

    Raises:
        FlowfieldsError: naming the file when it is missing, unreadable, not a JSON object,
            without a checksum, or damaged (checksum mismatch).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FlowfieldsError(
            f"{path.name}: {str(path)!r} is unreadable ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(record, dict):
        raise FlowfieldsError(f"{path.name}: {str(path)!r} is not a JSON object.")
    stored = record.get(CHECKSUM_KEY)
    if stored is None:
        raise FlowfieldsError(
            f"{path.name}: {str(path)!r} has no checksum: it was not written by flowfields "
            "(or was edited by hand). Use --set to change a run's settings."
        )
    if stored != json_digest(record):
        raise FlowfieldsError(
            f"{path.name}: {str(path)!r} is damaged: its content does not match its checksum."
        )
    del record[CHECKSUM_KEY]
    return record
