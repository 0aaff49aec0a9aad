"""Shared pytest options and fixtures.

Options:
    --dtype: floating dtype for numerics tests (default float64).
    --device: torch device for tests that take the ``device`` fixture (default cpu).

Markers: ``slow`` (longer, still run by ``make test``), ``gpu`` (skipped without CUDA).
"""

from __future__ import annotations

import os

import pytest
import torch

# Small models: one thread is faster on a 2-core machine, and pytest-xdist runs two workers.
torch.set_num_threads(int(os.environ.get("FLOWFIELDS_TEST_THREADS", "1")))
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"])
    parser.addoption("--device", default="cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return dev


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
