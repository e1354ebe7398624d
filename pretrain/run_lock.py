"""The run folder's lock, `RUN/LOCK`: one job at a time writes a run folder.

Why: a second launch into a folder a live job held waited minutes for the rendezvous port and died with
EADDRINUSE, and two jobs writing one folder would interleave their checkpoints.

The lock is a file created with O_CREAT|O_EXCL (atomic on local disks and on NFS, Lustre, GPFS, unlike flock,
which is per node on most of them) that holds host, pid, start time and a random token. A thread touches it every
`HEARTBEAT_S`; a launch that finds a lock refuses, naming the holder, unless the holder is dead: its heartbeat is
older than `train.lock_stale_s`, it ran on this host and its process is gone, or it was an earlier attempt of the
same SLURM job or launch/restart.sh loop (requeued or restarted after a crash that left the lock behind). A dead
holder's lock is taken over with a warning (moved aside by rename, so of two launches racing for it only one
wins). A holder that finds its lock gone or replaced stops its job (exit 5): two jobs never write one folder. The
staleness test compares the file's mtime with this node's clock: node clocks must agree to well within
`train.lock_stale_s` (NTP does).

pretrain/run_folder.py takes this lock before it checks a launch against the folder's checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from infra import launcher_env
from pretrain.errors import EXIT_LOCKED, PretrainError

LOCK = "LOCK"
HEARTBEAT_S = 10.0


class RunLocked(PretrainError):
    """Another live job holds the run folder (or took it over from this one); the message names the holder.

    Told apart from other errors: the trainer exits EXIT_LOCKED for it, which launch/restart.sh retries.
    """


@dataclass
class Holder:
    """Who holds a lock, as its file says (`None` fields: the file was empty or unreadable)."""

    host: str | None
    pid: int | None
    started: str | None
    token: str | None
    mtime: float
    attempt: dict | None = None  # {"of": SLURM job id or restart loop id, "number": its restart count}

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def dead_reason(self, stale_s: float, now: float) -> str | None:
        """Why this holder is dead (a stale heartbeat, or a vanished process on this host); None if alive."""
        age = now - self.mtime
        if age > stale_s:
            return f"its heartbeat is {age:.0f} s old (train.lock_stale_s={stale_s:g})"
        if (
            self.host == launcher_env.node_name()
            and self.pid is not None
            and not _process_alive(self.pid, self.started)
        ):
            return f"process {self.pid} no longer runs on this host"
        mine = launcher_env.launch_attempt()
        if self.attempt and mine and self.attempt["of"] == mine["of"] and self.attempt["number"] < mine["number"]:
            return f"it was attempt {self.attempt['number']} of {mine['of']}, this is attempt {mine['number']}"
        return None


def _process_alive(pid: int, started: str | None) -> bool:
    """pid runs and is not a later process that reused the number (it started no later than the lock)."""
    try:
        created = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    if started is None:
        return True
    return created <= datetime.fromisoformat(started).timestamp() + 1.0


def read_holder(path: Path) -> Holder | None:
    """The lock's holder; None when there is no lock file. Opening it revalidates NFS's cached attributes."""
    try:
        with open(path) as f:
            mtime = os.fstat(f.fileno()).st_mtime
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = {}  # killed between create and write: judged by its age alone
    return Holder(data.get("host"), data.get("pid"), data.get("started"), data.get("token"), mtime, data.get("attempt"))


@dataclass
class RunLock:
    """This job's lock on a run folder; `release()` removes it only while it is still ours."""

    path: Path
    token: str
    _stop: threading.Event = field(default_factory=threading.Event)

    def heartbeat(self, interval_s: float = HEARTBEAT_S) -> None:
        """Touch the lock every `interval_s` from a daemon thread; if it is gone or someone else's, stop the job."""

        def beat() -> None:
            while not self._stop.wait(interval_s):
                try:
                    if not self.still_ours():
                        self._lost()
                    os.utime(self.path)
                except FileNotFoundError:  # removed between the two calls
                    self._lost()

        threading.Thread(target=beat, name="run-folder-lock", daemon=True).start()

    def still_ours(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self.token

    def _lost(self) -> None:
        holder = read_holder(self.path)
        who = f"now held by {holder.describe()}" if holder else "deleted"
        print(
            f"pretrain.train: rank 0: lost the run folder's lock {self.path} ({who}); stopping so that two jobs never "
            "write one folder",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_LOCKED)

    def release(self) -> None:
        self._stop.set()
        if self.still_ours():
            self.path.unlink(missing_ok=True)


def acquire_lock(run_dir: Path, stale_s: float) -> RunLock:
    """Create RUN/LOCK exclusively; take over a dead holder's lock with a warning; RunLocked if a live job holds it."""
    path = Path(run_dir) / LOCK
    token = uuid.uuid4().hex
    for _ in range(3):  # a lock that vanishes or is taken over while we look: look again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None:
                continue
            reason = holder.dead_reason(stale_s, time.time())
            if reason is None:
                raise RunLocked(_held_message(path, holder)) from None
            warnings.warn(f"{path}: taking over the lock of a dead job ({holder.describe()}): {reason}", stacklevel=2)
            _move_aside(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_lock_contents(token), f)
            f.flush()
            os.fsync(f.fileno())
        return RunLock(path, token)
    holder = read_holder(path)
    raise RunLocked(_held_message(path, holder) if holder else f"{path}: could not take the lock; launch again")


def _lock_contents(token: str) -> dict:
    return {
        "host": launcher_env.node_name(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": token,
        "attempt": launcher_env.launch_attempt(),
        "argv": sys.argv,
    }


def _move_aside(path: Path, holder: Holder) -> None:
    """Rename the dead holder's lock away; if what got renamed is not that lock (another launch took over first),
    put it back and let the caller see the new holder."""
    aside = path.with_name(f"{LOCK}.dead.{launcher_env.node_name()}.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_holder(aside)
    if moved is not None and moved.token != holder.token:
        os.rename(aside, path)
        return
    aside.unlink(missing_ok=True)


def _held_message(path: Path, holder: Holder) -> str:
    return (
        f"{path.parent}: another job is using this run folder ({holder.describe()}; lock {path}, heartbeat "
        f"{time.time() - holder.mtime:.0f} s ago). Wait for it to finish or stop it, or use another --output. If that "
        "job is dead, its lock is taken over once its heartbeat is older than train.lock_stale_s"
    )
