"""Every CLI exits quietly when the reader of its stdout has gone (`pipeline inspect DIR | head`).

The reader is closed before the command starts, so its first write meets a closed pipe whatever the timing:
the check is deterministic, unlike a real `| head` that may or may not exit before the writer's last write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "plan", "--preset", "gpt3-1.3b"],
        ["pipeline", "inspect", "{data}"],
    ],
    ids=["pretrain-plan", "pipeline-inspect"],
)
def test_a_closed_stdout_ends_the_command_quietly_with_status_0(argv, tiny_dataset) -> None:
    command = [str(BIN / argv[0]), *(a.format(data=tiny_dataset) for a in argv[1:])]
    done = run_into_closed_pipe(command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
