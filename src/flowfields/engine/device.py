"""Device and thread-count selection."""

from __future__ import annotations

import os

import torch

from flowfields.errors import FlowfieldsError, check

__all__ = ["DEFAULT_THREADS", "resolve_device", "set_threads"]

#: Torch intra-op threads the CLI uses unless ``--threads`` says otherwise. Measured on the
#: project's 2-core machine (torch 2.13 CPU, interleaved, 15 rounds, other jobs running), time
#: with 1 thread / time with 2 threads: MLPField 2->256x4 training step at batch 512: median
#: 0.49 (IQR 0.16-1.53); 8 Euler sampling steps of 4,096 points: 0.21 (IQR 0.12-0.26).
#: Script: ``benchmarks``-style ``compare`` of the two thread counts (see the engine report).
DEFAULT_THREADS = 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a usable device.

    Args:
        device: ``"auto"`` picks CUDA when available, else CPU. Under ``torchrun``
            (``WORLD_SIZE > 1``) ``"cuda"`` means this process's GPU, ``cuda:$LOCAL_RANK``.

    Returns:
        The ``torch.device``.

    Raises:
        FlowfieldsError: for an unknown name or a device that is not available here.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        check(isinstance(device, str), "device", device, "a string such as 'auto', 'cpu', 'cuda'")
        name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun each process drives the GPU of its local rank.
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise FlowfieldsError(
            f"device: got {device!r}, expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FlowfieldsError(
                f"device: got {device!r}, but CUDA is not available on this machine. "
                "Use --device cpu or --device auto."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FlowfieldsError(
                f"device: got {device!r}, expected an index below {torch.cuda.device_count()} "
                "(the number of CUDA devices here)."
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise FlowfieldsError(f"device: got {device!r}, but MPS is not available here.")
    elif dev.type != "cpu":
        raise FlowfieldsError(f"device: got {device!r}, expected 'auto', 'cpu', 'cuda' or 'mps'.")
    return dev


_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (``None``: :data:`DEFAULT_THREADS`), and the BLAS
    thread pools of numpy / SciPy to the same count.

    SciPy ships its own OpenBLAS, which starts its own threads even for tiny systems: on
    this shared 2-core machine a SciPy solve of a 9x9 system took 15 ms with two BLAS threads
    against 1.4 ms with one. Pools already loaded are limited through ``threadpoolctl`` (a
    scikit-learn dependency); pools loaded later read the ``*_NUM_THREADS`` environment
    variables set here (only where the user has not set them).

    Args:
        n: a positive integer.

    Returns:
        The thread count now in effect.

    Raises:
        FlowfieldsError: if ``n`` is not a positive integer.
    """
    if n is None:
        n = DEFAULT_THREADS
    check(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1,
        "threads",
        n,
        "a positive integer",
    )
    torch.set_num_threads(n)
    for var in _BLAS_ENV:
        os.environ.setdefault(var, str(n))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        pass
    else:
        threadpool_limits(limits=n, user_api="blas")
    return torch.get_num_threads()
