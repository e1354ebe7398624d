"""The unit tier's guard: every way to start a process is refused (and recorded), and this tier runs under it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import subprocess

import pytest
from support.process_guard import ProcessStartInUnitTest, no_process_starts


def start_with_asyncio() -> None:
    async def child() -> None:
        await asyncio.create_subprocess_exec("true")

    asyncio.run(child())


def start_with_a_process_pool() -> None:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(print).result()


STARTS = {  # each looks its function up when called: the guard replaces os.fork & co. on the module
    "subprocess.run": lambda: subprocess.run(["true"], check=True),
    "subprocess.check_output": lambda: subprocess.check_output(["true"]),
    "os.fork": lambda: os.fork(),
    "os.system": lambda: os.system("true"),
    "os.popen": lambda: os.popen("true"),
    "os.posix_spawn": lambda: os.posix_spawn("/bin/true", ["true"], dict(os.environ)),
    "multiprocessing.Process": lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    "ProcessPoolExecutor": start_with_a_process_pool,
    "asyncio subprocess": start_with_asyncio,
}


@pytest.mark.parametrize("start", list(STARTS))
def test_every_way_to_start_a_process_is_refused_and_recorded(start: str) -> None:
    """Nested inside this tier's own guard, so the refusal is recorded here and not against this test."""
    refused: list[str] = []
    with no_process_starts("the test", refused), pytest.raises(ProcessStartInUnitTest, match="tests/integration/"):
        STARTS[start]()
    assert len(refused) == 1 and refused[0].startswith("the test started a process")


def test_this_tier_runs_under_the_guard() -> None:
    assert "no_process_starts" in subprocess.Popen.__init__.__qualname__
    assert "no_process_starts" in os.fork.__qualname__
