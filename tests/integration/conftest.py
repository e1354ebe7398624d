"""The integration tier: tests that start processes (the CLIs, torchrun/deepspeed ranks, mpiexec, SLURM, CUDA).

Every test here is `slow` (pyproject.toml's markers), so `-m "not slow"` selects the unit tier anywhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.runs import deepspeed_launcher_run

HERE = Path(__file__).parent


# Under `make test` (pytest-xdist, --dist loadgroup) a group runs whole on one worker. Each file is its own group,
# so its module fixtures (a run several tests read) are built once; files that share more than that share a group.
SHARED_GROUPS = {
    "test_slurm.py": "slurm",  # one SLURM cluster at a time on this host (slurmctld, slurmd, munged)
    "test_rank_errors_launchers.py": "slurm",  # its srun test starts one too
    "test_train.py": "deepspeed_launcher",  # both read the session fixture deepspeed_launcher_launch
    "test_wandb_run.py": "deepspeed_launcher",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(item.path.name, item.path.name)))


@pytest.fixture(scope="session")
def deepspeed_launcher_launch(tmp_path_factory, tiny_dataset: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """One 2-rank launch through the deepspeed launcher with offline W&B (support/runs.py), read by the launcher's
    parity test (test_train.py) and the W&B test (test_wandb_run.py); a failed launch fails both without a rerun."""
    return deepspeed_launcher_run(tmp_path_factory.mktemp("deepspeed_launcher"), tiny_dataset)
