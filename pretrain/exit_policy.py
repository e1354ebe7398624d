"""How a training launch ends on each rank: the exit status, and the one line it prints on stderr (if any).

Every rank of a launch runs `pretrain.train`, and the launcher stops them all once one exits, so who speaks
matters as much as what is said:

| what ended `main()`                 | status            | stderr                                              |
| ----------------------------------- | ----------------- | --------------------------------------------------- |
| a return                            | that status       | rank 0, for EXIT_BAD_STEPS: what happened            |
| a closed stdout (BrokenPipeError)   | 0                 | nothing (as in infra/cli.py: piping into head is normal) |
| RunLocked                           | EXIT_LOCKED (5)   | this rank: the holder (launch/restart.sh retries)    |
| a UserError                         | EXIT_USER_ERROR   | this rank, unless rank 0 printed the same one        |
| a peer lost in a collective         | 1                 | rank 0: the failed rank's recorded error; others: one line |
| anything else (a bug)               | 1                 | this rank: "failed:" and the traceback               |

Every rank's error is also recorded in RUN/errors/rank<r>.txt once training has started (pretrain/rank_errors.py).

The first four end with `os._exit` (see `leave`); the last two end as a normal interpreter exit (a bug under
mpirun ends with `os._exit`, its traceback printed first: mpi4py's MPI_Finalize would wait for the other ranks), so atexit still
writes the watchdog's last heartbeat and the rank that stopped first stays the oldest one (launch/restart.sh
names it).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from infra.cli import stdout_closed, stdout_reader_gone
from infra.errors import EXIT_USER_ERROR, UserError, one_line
from pretrain import rank_errors
from pretrain.errors import EXIT_BAD_STEPS, EXIT_LOCKED
from pretrain.run_lock import RunLocked

PROG = "pretrain.train"
EXIT_BUG = 1  # what the interpreter exits with after a traceback or sys.exit(message)
# what gloo/NCCL raise on the ranks that were waiting for a rank that died
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


@dataclass(frozen=True)
class Ending:
    """How this rank ends: its status, the line it prints on stderr first, and how it leaves the interpreter."""

    status: int
    line: str | None = None
    wait_s: float = 0.0  # sleep after printing: a rank that leaves rank 0 the time to report the shared error
    traceback: bool = False  # a bug: the line, then the exception's traceback (the interpreter's exit, status 1)
    interpreter_exit: bool = False  # sys.exit rather than os._exit: atexit handlers run
    stdout_closed: bool = False  # the reader of stdout went away: point stdout at /dev/null before exiting


def after_return(status: int, rank: int) -> Ending:
    """`main()` returned `status`."""
    if status == EXIT_BAD_STEPS and rank == 0:
        return Ending(status, f"{PROG}: train.max_bad_steps non-finite steps in a row; last good weights saved")
    return Ending(status)


def after_error(err: Exception, rank: int) -> Ending:
    """`main()` raised `err` (an Exception: Ctrl-C and SystemExit are not this policy's to handle)."""
    if isinstance(err, BrokenPipeError) and stdout_reader_gone():
        return Ending(0, stdout_closed=True)
    if isinstance(err, RunLocked):
        return Ending(EXIT_LOCKED, f"{PROG}: rank {rank}: error: {err}")
    if isinstance(err, UserError):  # printed unless rank 0 printed the same; recorded in RUN/errors/ (rank_errors)
        return Ending(EXIT_USER_ERROR, rank_errors.user_error(one_line(err), rank))
    if any(marker in str(err) for marker in PEER_LOST):  # a consequence: rank 0 relays the failed rank's record
        return Ending(EXIT_BUG, rank_errors.peer_lost(rank), interpreter_exit=True)
    printed = rank_errors.bug(rank)  # recorded; under mpirun printed here, and no interpreter exit (MPI_Finalize)
    if printed is not None:
        return Ending(EXIT_BUG, f"{PROG}: rank {rank} failed:\n{printed}")
    return Ending(EXIT_BUG, f"{PROG}: rank {rank} failed:", traceback=True, interpreter_exit=True)


def run(main: Callable[[], int], rank: int) -> NoReturn:
    """Run `main` and end this rank as the table in the module docstring says."""
    try:
        ending = after_return(main(), rank)
    except Exception as err:
        ending = after_error(err, rank)
        if ending.traceback:
            print(ending.line, file=sys.stderr)
            raise
    leave(ending)


def leave(ending: Ending) -> NoReturn:
    """Print the ending's line, wait if it says so, and exit with its status."""
    if ending.stdout_closed:
        stdout_closed()
    if ending.line is not None:
        print(ending.line, file=sys.stderr)
    if ending.wait_s:
        time.sleep(ending.wait_s)
    if ending.interpreter_exit:
        sys.exit(ending.status)
    hard_exit(ending.status)


def hard_exit(status: int) -> NoReturn:
    """Exit without running C++ static destructors: a gloo/DeepSpeed thread still joinable at interpreter teardown
    makes std::terminate abort a rank that finished cleanly ("terminate called without an active exception",
    about 1 launch in 20 on CPU). Everything the run wrote is closed or flushed by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
