"""Refuse every way a Python test can start a process, so the unit tier stays in-process and fast.

`tests/unit/conftest.py` wraps each unit test's setup, call and teardown in `no_process_starts`. A test that
starts a process (subprocess, os.fork/posix_spawn/system, multiprocessing and the pools built on it,
asyncio's subprocesses, deepspeed compiling an op) fails naming the call; it belongs in tests/integration/.
The refusal is also recorded, so a test that catches the exception still fails.
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import subprocess
from collections.abc import Iterator

# (owner, attribute): the calls every other way of starting a process goes through (subprocess.run/check_output
# and asyncio build a Popen, os.spawn* and pty.fork call os.fork, every multiprocessing context and
# concurrent.futures.ProcessPoolExecutor call BaseProcess.start).
PROCESS_STARTS = (
    (subprocess.Popen, "__init__"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
    (os, "popen"),
    (multiprocessing.process.BaseProcess, "start"),
)


class ProcessStartInUnitTest(RuntimeError):
    """A unit test started a process."""


@contextlib.contextmanager
def no_process_starts(test: str, refused: list[str]) -> Iterator[None]:
    """Within the block each process start raises and is appended to `refused`."""
    originals = [(owner, name, getattr(owner, name)) for owner, name in PROCESS_STARTS if hasattr(owner, name)]

    def refuse(call: str):
        def start(*args, **kwargs):
            message = (
                f"{test} started a process ({call}); the unit tier runs in-process only: "
                "move the test to tests/integration/"
            )
            refused.append(message)
            raise ProcessStartInUnitTest(message)

        return start

    for owner, name, _ in originals:
        setattr(owner, name, refuse(f"{getattr(owner, '__name__', owner)}.{name}"))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
