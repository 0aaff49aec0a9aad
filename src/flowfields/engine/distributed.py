"""Process-group set-up for runs under ``torchrun`` (DistributedDataParallel).

Nothing home-made: ``torch.distributed`` with the ``gloo`` backend on CPU and ``nccl`` on CUDA,
initialised from the environment variables ``torchrun`` sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "is_main_process", "rank", "world_size"]


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that writes checkpoints and shows progress)."""
    return rank() == 0


def init_distributed(device: torch.device | None = None) -> bool:
    """Initialise the default process group from the environment when ``WORLD_SIZE > 1``.

    Args:
        device: the training device; CUDA selects ``nccl`` (and this rank's local GPU),
            anything else ``gloo``.

    Returns:
        Whether the run is distributed (a group of more than one process is active).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    use_cuda = device is not None and torch.device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_world_size() > 1
