"""A collective that hangs: one rank stopped with SIGSTOP mid-run. The job must fail within
train.collective_timeout_s (plus the launcher's own grace period for stopping the other ranks), with a message
that names the collective the live rank is blocked in and the rank that stopped answering.

A stopped process cannot act on the SIGTERM the launcher sends it when rank 0 has failed, so torch elastic would
wait out its grace period before its SIGKILL. The test gives that SIGKILL itself as soon as the SIGTERM is pending
on the stopped rank (the launcher has decided to end the job); no clock is involved, and a job that never fails
never gets that far.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.fault_support import kill_rank, logged_steps, output, start_train, wait_for

from pretrain.errors import EXIT_COLLECTIVE_TIMEOUT

pytestmark = pytest.mark.slow

TIMEOUT_S = 8
LAUNCHER_GRACE_S = 30  # torch elastic sends SIGTERM, waits 30 s, then SIGKILL to the ranks still there


def sigterm_pending(pid: int) -> bool:
    """SIGTERM is queued for the process (/proc/PID/status ShdPnd/SigPnd: bit 14 is signal 15)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("ShdPnd:", "SigPnd:"))]
    return any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks)


def kill_once_told_to_stop(launcher: subprocess.Popen, stopped: int, timeout_s: float) -> None:
    """SIGKILL the stopped rank once the launcher's SIGTERM is pending on it (what the launcher does after its grace
    period), or return when the launcher has exited by itself."""
    wait_for(lambda: launcher.poll() is not None or sigterm_pending(stopped), timeout_s, "the launcher's SIGTERM")
    if launcher.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the launcher's own SIGKILL came first
            os.kill(stopped, signal.SIGKILL)


def test_stopped_rank_fails_the_job_naming_collective_and_rank(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = (
        "train.micro_batch_size=2",
        "train.global_batch_tokens=256",
        "train.max_steps=100000",
        f"train.collective_timeout_s={TIMEOUT_S}",
    )
    launcher = start_train(tiny_dataset, run, sets)
    stopped = None
    try:
        wait_for(lambda: logged_steps(run) >= 2 or launcher.poll() is not None, 240, "step 2")
        assert launcher.poll() is None, output(run)[-3000:]
        stopped = kill_rank(launcher, 1, signal.SIGSTOP)
        start = time.monotonic()
        kill_once_told_to_stop(launcher, stopped, TIMEOUT_S + LAUNCHER_GRACE_S + 30)
        status = launcher.wait(timeout=TIMEOUT_S + LAUNCHER_GRACE_S + 60)
        elapsed = time.monotonic() - start
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if stopped is not None and psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGKILL)
    log = output(run)
    assert status != 0, log[-3000:]
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + LAUNCHER_GRACE_S + 30, f"took {elapsed:.0f} s"
    assert re.search(r"rank 0: collective timeout after \d+ s", log), log[-3000:]
    assert "ranks not responding (stale heartbeat): [1]" in log, log[-3000:]
    # the watchdog names the innermost frame of torch.distributed / deepspeed's comm or ZeRO code (a fixed list of
    # op names missed ZeRO-3's _allgather_params_coalesced once)
    line = next(x for x in log.splitlines() if "rank 0: collective timeout after" in x)
    assert re.search(
        r" in \w+ \((torch/distributed|deepspeed/comm|deepspeed/runtime/zero)/\S+:\d+\) called from", line
    ), line
    assert f"exitcode  : {EXIT_COLLECTIVE_TIMEOUT}" in log, log[-3000:]
