"""benchmarks/gpu_stage.sh: a stage that runs out of time ends with its whole process tree, and says it was cut.

The bug it fixes, reproduced first: a child started in a new session (as train_throughput.py starts each
measurement) outlives `timeout`, which signals only its own process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.launch import ROOT

pytestmark = pytest.mark.slow

# a stage command whose child escapes into a session of its own and would sleep for 5 minutes
ESCAPING_CHILD = "setsid sleep 300 & echo $! > {pidfile}; wait"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"


def _stage(tmp_path: Path, budget: int, command: str) -> subprocess.CompletedProcess:
    script = (
        f"source {ROOT / 'benchmarks' / 'gpu_stage.sh'}; DEADLINE=600 START=$SECONDS SLOW=1 "
        f"RESULTS={tmp_path} LOG={tmp_path / 'log'}; stage demo {budget} bash -c '{command}'"
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)


def _pid(pidfile: Path) -> int:
    for _ in range(100):
        if pidfile.is_file() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{pidfile}: the stage command never started its child")


def test_timeout_alone_leaves_a_new_session_child_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    subprocess.run(["timeout", "2", "bash", "-c", ESCAPING_CHILD.format(pidfile=pidfile)], timeout=60)
    pid = _pid(pidfile)
    try:
        assert _alive(pid), "the child died with timeout: the bug this stage runner fixes is not reproduced"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_cut_stage_kills_its_whole_tree_and_says_cut(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    proc = _stage(tmp_path, 15, ESCAPING_CHILD.format(pidfile=pidfile))
    assert proc.returncode == 0, proc.stderr
    pid = _pid(pidfile)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the stage's grandchild in its own session outlived the stage"
    record = json.loads((tmp_path / "stage__demo.json").read_text())
    assert record["status"] == "cut" and record["rc"] == 124 and record["limit_s"] == 15
    assert record["leftover_processes_killed"] == 1
    assert time.monotonic() - started < 60


def test_a_stage_that_ends_in_time_says_finished(tmp_path: Path) -> None:
    proc = _stage(tmp_path, 15, "true")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "stage__demo.json").read_text())
    assert (record["status"], record["rc"], record["leftover_processes_killed"]) == ("finished", 0, 0)
