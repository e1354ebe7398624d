"""Collective watchdog: a rank blocked in a collective longer than `train.collective_timeout_s` fails the job.

Why: when one rank stops (SIGSTOP, a hung NFS read, a dead NIC) the others wait in their next all-reduce or
all-gather forever; gloo's own timeout (set from the same key in `init_distributed`) is the backstop but its
message names neither the operation nor the silent rank. This thread samples the main thread's Python stack
once a second. When the innermost frame has not moved for the timeout it prints which collective the rank is
blocked in (the innermost torch.distributed / deepspeed.comm / ZeRO frame), at which step, and which ranks'
heartbeats went silent, then exits with EXIT_COLLECTIVE_TIMEOUT so the launcher ends the job.

Heartbeats are files RUN/heartbeat/rank{r} (holding the rank's pid and host) touched every second by each
rank's watchdog thread; a stopped or dead process stops touching its file. launch/restart.sh lists them,
oldest first, when a job fails, which names the rank that died first even under launchers that report only
a pid (mpiexec, srun). The run folder is shared by all ranks already (checkpoints live there).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType

from infra import launcher_env
from pretrain.errors import EXIT_COLLECTIVE_TIMEOUT

COLLECTIVE_PATHS = ("torch/distributed/", "deepspeed/comm/", "deepspeed/runtime/zero/")
BEAT_S = 1.0


def heartbeat_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "heartbeat"


def silent_ranks(run_dir: str | os.PathLike, world_size: int, older_than_s: float) -> list[int]:
    """Ranks whose heartbeat file is missing or older than `older_than_s` seconds."""
    now, silent = time.time(), []
    for rank in range(world_size):
        path = heartbeat_dir(run_dir) / f"rank{rank}"
        if not path.is_file() or now - path.stat().st_mtime > older_than_s:
            silent.append(rank)
    return silent


def blocked_operation(frame: FrameType) -> str:
    """'all_reduce (torch/distributed/distributed_c10d.py:123) called from pretrain/train.py:88 train_step'."""
    stack = traceback.extract_stack(frame)
    inner = next((f for f in reversed(stack) if any(p in f.filename for p in COLLECTIVE_PATHS)), None)
    ours = next((f for f in reversed(stack) if "/pretrain/" in f.filename), stack[-1])
    if inner is None:
        return f"{ours.name} ({_short(ours.filename)}:{ours.lineno}; no collective on the stack)"
    return f"{inner.name} ({_short(inner.filename)}:{inner.lineno}) called from {_short(ours.filename)}:{ours.lineno}"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/pretrain/", "/data_pipeline/"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1] if marker == "site-packages/" else marker[1:] + filename.split(marker)[1]
            )
    return filename


def current_step(frame: FrameType | None) -> int | None:
    """The Trainer's step if a Trainer method is on the stack (for the message only)."""
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "Trainer" and isinstance(getattr(owner, "step", None), int):
            return owner.step
        frame = frame.f_back
    return None


def main_thread_position(main_id: int) -> tuple[int, ...] | None:
    """Where the main thread is: its innermost code, line and stack depth (None once it has ended).

    No frame object is kept between samples. A frame held while its function returns keeps every local of it and
    of its callers alive; DeepSpeed 0.19.8's ZeRO-3 gradient hooks create autograd nodes of partitioned parameters
    in such locals (`count_used_parameters_in_backward`), and one that outlives its call is reused by the next
    recomputation of that parameter's block, which then aborts with "LinearFunctionForZeroStage3Backward returned
    an invalid gradient ... expected shape compatible with [0]" (RELIABILITY.md). The depth tells a call that
    stays blocked from the same line reached again by a later call at another depth; one at the same depth in a
    loop counts as blocked only if every sample for `train.collective_timeout_s` lands on that line.
    """
    frame = sys._current_frames().get(main_id)
    if frame is None:
        return None
    where, depth = (id(frame.f_code), frame.f_lineno), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return (*where, depth)


class CollectiveWatchdog(threading.Thread):
    """Daemon thread: heartbeat + stuck-main-thread detection for one rank."""

    def __init__(self, timeout_s: float, run_dir: str | os.PathLike, rank: int, world_size: int) -> None:
        super().__init__(name="collective-watchdog", daemon=True)
        self.timeout_s, self.run_dir, self.rank, self.world_size = timeout_s, Path(run_dir), rank, world_size
        self.main_id = threading.main_thread().ident
        heartbeat_dir(run_dir).mkdir(parents=True, exist_ok=True)
        # pid and host: mpiexec/srun report a dead process by pid and host only; this maps it to a rank
        (heartbeat_dir(run_dir) / f"rank{rank}").write_text(f"pid {os.getpid()} host {launcher_env.node_name()}\n")

    def run(self) -> None:
        last, since = None, time.monotonic()
        while True:
            (heartbeat_dir(self.run_dir) / f"rank{self.rank}").touch()
            where = main_thread_position(self.main_id)
            if where is None:
                return
            if where != last:
                last, since = where, time.monotonic()
            elif time.monotonic() - since > self.timeout_s:
                self.fail(time.monotonic() - since)
            time.sleep(BEAT_S)

    def fail(self, stuck_s: float) -> None:
        silent = [r for r in silent_ranks(self.run_dir, self.world_size, max(3 * BEAT_S, self.timeout_s / 2))]
        frame = sys._current_frames()[self.main_id]  # held from here on: the process exits below
        step = current_step(frame)
        print(
            f"rank {self.rank}: collective timeout after {stuck_s:.0f} s (train.collective_timeout_s="
            f"{self.timeout_s:g}) in {blocked_operation(frame)}"
            + (f" during step {step + 1}" if step is not None else "")
            + f"; ranks not responding (stale heartbeat): {silent or 'none (all alive: a deadlock or a slow rank)'}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_COLLECTIVE_TIMEOUT)


def install(timeout_s: float, run_dir: str | os.PathLike, rank: int, world_size: int) -> CollectiveWatchdog:
    """Start the watchdog for this rank (call after the process group exists)."""
    watchdog = CollectiveWatchdog(timeout_s, run_dir, rank, world_size)
    watchdog.start()
    # a last beat when the interpreter exits (an error after a peer died): a SIGKILLed rank never gets one,
    # so it stays the oldest heartbeat even if it had beaten just before it was killed
    atexit.register((heartbeat_dir(run_dir) / f"rank{rank}").touch)
    return watchdog
