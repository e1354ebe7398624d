"""The run folder's lock (pretrain/run_lock.py) in one process: what a lock file says, how a holder is judged
dead, the heartbeat, and the take-over race. Refusals and take-overs through `acquire_lock` are in
test_run_folder.py; the 2-rank launches that hold a lock are there too."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from pretrain import run_lock
from pretrain.run_lock import Holder, acquire_lock, read_holder


def lock_file(run: Path, token: str, host: str = "gpu-node-07", age_s: float = 0.0) -> Path:
    """A lock file as another job would have left it, its heartbeat `age_s` seconds old."""
    path = run / run_lock.LOCK
    path.write_text(json.dumps({"host": host, "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "token": token}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_the_lock_file_names_this_process_and_only_its_token_releases_it(tmp_path: Path) -> None:
    lock = acquire_lock(tmp_path, stale_s=60)
    written = json.loads((tmp_path / run_lock.LOCK).read_text())
    assert (written["host"], written["pid"], written["token"]) == (socket.gethostname(), os.getpid(), lock.token)
    assert written["argv"] == sys.argv and len(lock.token) == 32
    holder = read_holder(lock.path)
    assert holder is not None and holder.token == lock.token and holder.describe().startswith("host ")
    lock.release()
    assert read_holder(lock.path) is None
    lock.release()  # twice: nothing left to remove, no error


def test_a_lock_killed_between_create_and_write_is_judged_by_its_age(tmp_path: Path) -> None:
    path = tmp_path / run_lock.LOCK
    path.write_text("")
    stamp = time.time() - 120
    os.utime(path, (stamp, stamp))
    holder = read_holder(path)
    assert holder == Holder(None, None, None, None, pytest.approx(stamp))
    assert holder.dead_reason(stale_s=3600, now=time.time()) is None  # young enough: treated as alive
    assert holder.dead_reason(stale_s=60, now=time.time()).startswith("its heartbeat is 120 s old")


def test_a_fresh_holder_of_another_host_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("PRETRAIN_RESTART_ID", raising=False)
    now = time.time()
    holder = Holder("gpu-node-07", 4242, "2026-01-01T00:00:00+00:00", "theirs", mtime=now - 5)
    assert holder.dead_reason(stale_s=60, now=now) is None
    assert holder.dead_reason(stale_s=4, now=now) == "its heartbeat is 5 s old (train.lock_stale_s=4)"


def test_the_heartbeat_touches_the_lock_until_release(tmp_path: Path) -> None:
    lock = acquire_lock(tmp_path, stale_s=60)
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    lock.heartbeat(interval_s=0.05)
    deadline = time.time() + 10
    while lock.path.stat().st_mtime < old + 500 and time.time() < deadline:
        time.sleep(0.05)
    assert lock.path.stat().st_mtime > old + 500, "the heartbeat thread never touched the lock"
    lock.release()
    assert not lock.path.exists()


def test_moving_a_dead_lock_aside_never_removes_the_lock_another_launch_took_first(tmp_path: Path) -> None:
    path = lock_file(tmp_path, "dead", age_s=600)
    dead = read_holder(path)
    lock_file(tmp_path, "winner")  # another launch took it over between our look and our rename
    run_lock._move_aside(path, dead)
    assert read_holder(path).token == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_lock.LOCK]


def test_moving_the_dead_lock_aside_removes_it(tmp_path: Path) -> None:
    path = lock_file(tmp_path, "dead", age_s=600)
    run_lock._move_aside(path, read_holder(path))
    assert list(tmp_path.iterdir()) == []
