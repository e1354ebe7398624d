"""The unit tier: in-process tests only. Every test here runs under `support.process_guard.no_process_starts`.

A unit test that starts a process (directly, or through a library: deepspeed compiling an op, a process pool,
a CLI run as a child) fails here, so the tier cannot slowly fill with tests that need processes, MPI, SLURM or
CUDA. Those live in tests/integration/, where every test is marked `slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.process_guard import no_process_starts

HERE = Path(__file__).parent
_REFUSED = pytest.StashKey[list]()  # the process starts a unit test attempted, kept on the test item


def _guarded(item: pytest.Item):
    return no_process_starts(item.nodeid, item.stash.setdefault(_REFUSED, []))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _guarded(item):
        result = yield
    if item.stash[_REFUSED]:  # the test caught the refusal; it still started a process
        pytest.fail(item.stash[_REFUSED][0], pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    with _guarded(item):
        return (yield)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` marks the integration tier (pyproject.toml): no unit test may carry it."""
    for item in items:
        if HERE in item.path.parents and item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} is marked slow but lives in the unit tier (tests/unit/)")
