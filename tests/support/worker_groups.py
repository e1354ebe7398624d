"""How `make test` shares the tests between its two pytest-xdist workers: which must run on one worker, in order.

A unit test may run anywhere. An integration file runs whole on one worker, so a module fixture (a run several of
its tests read) is built once. Files that share more than a module share one unit: the SLURM tests (one SLURM
cluster at a time on a host) and the readers of the session fixture `deepspeed_launcher_launch`.

xdist's own `--dist loadgroup` cannot do this under pytest 9 (it renames `item._nodeid`, which pytest 9 no longer
reads), so tests/conftest.py hands xdist this scheduler. xdist orders the units by their number of tests, largest
first, so the many one-test unit units fill the end of the run.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

SHARED_UNITS = {
    "tests/integration/test_slurm.py": "slurm",
    "tests/integration/test_rank_errors_launchers.py": "slurm",  # its srun test starts a SLURM cluster too
    "tests/integration/test_train.py": "deepspeed_launcher",
    "tests/integration/test_wandb_run.py": "deepspeed_launcher",
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test: its own id (unit tier), its file, or the shared unit its file belongs to."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/integration/"):
        return nodeid
    return SHARED_UNITS.get(path, path)


class WorkerGroups(LoadScopeScheduling):
    """xdist's scope scheduler with `unit_of` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
