"""Stopping a run cleanly: checkpoint at the next step boundary, then exit 0.

Three things ask for it, and all ranks agree (max all-reduce at the step boundary) so they save together even if
only one rank was asked:

- SIGTERM / SIGUSR1: SLURM (`--signal=USR1@120`, or SIGTERM before a kill), `kill PID` of a rank, or a launcher
  passing the signal on (torch elastic, the deepspeed per-node launcher, launch/*.sh).
- Ctrl-C (SIGINT): the first one; a second Ctrl-C aborts at once (exit 130) without a checkpoint. The terminal
  sends SIGINT to every process of the job and torch elastic relays it to its ranks again within milliseconds,
  so a second SIGINT less than `SAME_PRESS_S` (2 s) after the first counts as the same key press.
- the launcher process that started this rank exits (`LauncherWatch`): the `deepspeed` command runs the per-node
  launcher as a child and ignores SIGTERM itself (it dies, the ranks train on), so `kill PID` of the launcher
  the user sees reaches the ranks this way.

Saving inside a handler would interrupt a collective halfway, so handlers only record the request. They are
installed when the training loop starts; until then SIGTERM, SIGINT and SIGUSR1 keep their default action and end
the process at once: there is nothing to save yet, and a rank blocked in a collective during start-up (waiting for
a rank that failed) would never run a Python handler, so a launcher's SIGTERM would wait 30 s for its SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

import psutil
import torch
import torch.distributed as dist

from infra.errors import EXIT_INTERRUPTED
from pretrain.engine import device

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SAME_PRESS_S = 2.0
# why a run stops, by code; ranks agree on the highest code, and one that was not asked itself logs its text
PREEMPTION, INTERRUPT, LAUNCHER_GONE = 1, 2, 3
REASONS = {PREEMPTION: "preemption signal", INTERRUPT: "Ctrl-C", LAUNCHER_GONE: "a launcher process exited"}


def default_actions_until_the_loop() -> None:
    """SIGTERM/SIGINT/SIGUSR1 end the process at once (no KeyboardInterrupt traceback) until `install`."""
    for sig in (*PREEMPT_SIGNALS, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1/the first Ctrl-C (or `request`); read at step boundaries."""

    def __init__(self, rank: int = 0, clock=time.monotonic) -> None:
        self.rank, self.clock = rank, clock
        self.code = 0  # 0: not requested, else PREEMPTION / INTERRUPT / LAUNCHER_GONE
        self.reason: str | None = None
        self.interrupted_at: float | None = None

    def install(self) -> PreemptionFlag:
        for sig in PREEMPT_SIGNALS:
            signal.signal(sig, self._handle)
        signal.signal(signal.SIGINT, self._interrupt)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request(PREEMPTION)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        now = self.clock()
        if self.interrupted_at is None:
            self.interrupted_at = now
            self.request(INTERRUPT)
            self._say("Ctrl-C: saving a checkpoint at the end of this step, then exiting; Ctrl-C again to abort")
        elif now - self.interrupted_at >= SAME_PRESS_S:
            self._say("second Ctrl-C: aborting without a checkpoint")
            os._exit(EXIT_INTERRUPTED)

    def request(self, code: int, reason: str | None = None) -> None:
        """Ask for a save-and-exit at the next step boundary; the first request's reason is kept."""
        if not self.code:
            self.code, self.reason = code, reason or REASONS[code]

    def _say(self, message: str) -> None:
        if self.rank == 0:  # os.write: print() is not safe inside a signal handler
            os.write(2, f"pretrain.train: rank 0: {message}\n".encode())

    @property
    def requested(self) -> bool:
        return self.code != 0


def any_rank_requested(flag: PreemptionFlag) -> str | None:
    """On every rank: why the run stops if any rank was asked to (this rank's own words if it was asked for that
    reason, else the reason's name), None if none was."""
    value = torch.tensor([flag.code], dtype=torch.int32, device=device())
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    code = int(value.item())
    if not code:
        return None
    return flag.reason if flag.code == code else REASONS[code]


# What a launcher process looks like on the command line (an argument, or its basename).
LAUNCHER_ARGS = ("deepspeed.launcher.launch", "deepspeed.launcher.runner", "torch.distributed.run")
LAUNCHER_NAMES = ("deepspeed", "torchrun", "mpiexec", "mpiexec.hydra", "mpirun", "hydra_pmi_proxy")


class LauncherWatch:
    """The chain of launcher processes above this rank (e.g. `deepspeed` -> its per-node launcher); `gone()` is
    True once any of them has exited. Shells, restart loops and schedulers above the chain are not watched."""

    def __init__(self, processes: list) -> None:
        self.processes = processes

    @classmethod
    def of_this_process(cls) -> LauncherWatch:
        chain, proc = [], psutil.Process().parent()
        while proc is not None and _is_launcher(proc):
            chain.append(proc)
            proc = proc.parent()
        return cls(chain)

    def gone(self) -> bool:
        return any(not p.is_running() for p in self.processes)  # is_running also catches a reused pid

    def describe(self) -> str:
        dead = [p for p in self.processes if not p.is_running()]
        return ", ".join(f"pid {p.pid}" for p in dead) or "none"


def _is_launcher(proc: psutil.Process) -> bool:
    try:
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(a in LAUNCHER_ARGS or os.path.basename(a) in LAUNCHER_NAMES for a in args)
