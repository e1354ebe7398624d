"""The integration tier: tests that start processes (the CLIs, torchrun/deepspeed ranks, mpiexec, SLURM, CUDA).

Every test here is `slow` (pyproject.toml's markers), so `-m "not slow"` selects the unit tier anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
