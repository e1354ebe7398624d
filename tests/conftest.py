"""Fixtures both tiers share. The helpers behind them live in tests/support/ (on sys.path via pyproject.toml).

This file imports neither torch nor the trainer: a pipeline-only test run loads neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.datasets import build_tiny_dataset

# Tiny matmuls gain nothing from threads; on a loaded 2-core runner OpenMP spinning makes them ~20x slower.
# Set before any test imports torch (torch reads it when it starts); children inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test`'s two workers share the tests by support/worker_groups.py's units."""
    from support.worker_groups import WorkerGroups

    return WorkerGroups(config, log)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder the trainer accepts (support/datasets.py) with ~40k train tokens, vocab 256."""
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))
