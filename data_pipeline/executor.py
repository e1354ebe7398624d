"""How the pipeline's steps are executed: local worker pools, signals, and ending a multi-rank job on a failure.

The steps (data_pipeline/steps.py) know nothing of processes or ranks; this module runs them.

- `worker_pool` / `ordered_map`: a fork pool of local workers fed batches in order with at most `ahead` batches in
  flight, so memory is bounded by the batch size, not by the input. Workers ignore SIGINT (the main process owns
  Ctrl-C), die with their parent (PR_SET_PDEATHSIG, so a SIGKILLed rank leaves no orphan), and the pool is
  terminated, not joined, when the main process leaves it with an error or an interrupt.
- `install_signal_handlers`: SIGTERM raises `Terminated` (a KeyboardInterrupt) so `finally` blocks and pools
  clean up the same way as for Ctrl-C; the process exits 130 (SIGINT) or 143 (SIGTERM).
- `job_failed`: what the CLI does with any exception. Under several MPI ranks, an error that every rank raised
  together (a `collective` step) is printed once by rank 0 and every rank exits 2; any other error is printed
  by the rank that had it, with its rank number, and that rank calls MPI_Abort, which ends every rank of the
  job within seconds instead of leaving them waiting in a collective.
- `peak_rss_bytes`: the accounting stats.json records per rank.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from multiprocessing.pool import Pool
from typing import Any, TypeVar

from infra import launcher_env
from infra.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR, UserError

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
# mpich's proxy may handle the abort before it has read the failing rank's last stderr lines from the pipe (seen
# once in ~150 runs under heavy load: the error line was lost); a pause before MPI_Abort lets it drain them
ABORT_GRACE_S = 1.0


class Terminated(KeyboardInterrupt):
    """SIGTERM (scheduler preemption, `kill`): unwinds like Ctrl-C so pools and temporary files are cleaned up."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM")


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 10


def return_large_frees_to_the_os() -> None:
    """Fix glibc's mmap threshold at 256 KiB: every larger array is its own mapping, unmapped when freed.

    glibc otherwise raises the threshold after each large free (up to 32 MiB), so the band-sized arrays of the
    dedup phase land on the heap and fragment it: measured 17 MiB more peak RSS at 400k documents on one rank.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def install_signal_handlers() -> None:
    """SIGTERM unwinds the stack (default: die at once, leaving pool workers behind); SIGINT already does."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans after a SIGKILL of the rank)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: terminate() still covers errors, interrupts
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _init_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Pool.terminate() sends SIGTERM
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def worker_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator:
    """A fork pool of `workers` processes, or None for one worker (the caller then runs inline).

    Leaving the block normally closes and joins the pool; leaving it with any exception (KeyboardInterrupt and
    Terminated included) terminates the workers at once, so nothing waits on a pool that will never finish.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield None
        return
    pool: Pool = get_context("fork").Pool(workers, initializer=_init_worker, initargs=(initializer, initargs))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def ordered_map(pool: Pool | None, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """fn over items, results in input order, with at most `ahead` items submitted and not yet consumed."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def workers_for_rank(
    setting: int, *, usable_cores: int | None = None, node_cores: int | None = None, ranks_on_node: int | None = None
) -> int:
    """How many worker processes or threads this rank may use: `setting` if > 0; 0 means this rank's fair share.

    The share: when the launcher pinned this rank to fewer cores than the node has (srun --cpus-per-task, an
    affinity mask), those cores are its own; otherwise every rank on the node sees all of them, and each takes
    1/ranks_on_node, so N ranks on a node do not oversubscribe it. The one worker count of the pipeline (dedup's
    worker pool, MinHash signatures, tokenizer encoding threads). The keyword arguments default to this
    process's affinity mask, the node's core count and the launcher's ranks per node.
    """
    if setting < 0:
        raise ValueError(f"a worker count must be >= 0 (0 = this rank's share of the node's cores), got {setting}")
    if setting > 0:
        return setting
    if usable_cores is None:
        usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    node_cores = node_cores or os.cpu_count() or usable_cores
    if usable_cores < node_cores:
        return usable_cores
    return max(1, usable_cores // (ranks_on_node or launcher_env.local_size()))


def peak_rss_bytes() -> dict[str, int]:
    """Peak resident memory of this rank's process and of its largest worker process so far (bytes)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"rank": own, "worker": workers}


# --------------------------------------------------------------------------------------------- ending the job


def mark_every_rank(err: BaseException) -> BaseException:
    """Record that every rank raised this error together (see comm.collective): no abort is needed."""
    err.every_rank = True  # type: ignore[attr-defined]
    return err


def _mpi_world() -> Any:
    """COMM_WORLD when this process initialised MPI (and has not finalised it), else None."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return None
    return mpi.COMM_WORLD


def exit_code(err: BaseException) -> int:
    if isinstance(err, Terminated):
        return EXIT_TERMINATED
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, (UserError, OSError)):
        return EXIT_USER_ERROR
    return 1


def job_failed(command: str, err: BaseException) -> int:
    """Print `err` (with the rank under MPI) and end this rank, aborting the whole job when it failed alone."""
    rank, size = launcher_env.global_rank(), launcher_env.world_size()
    world = _mpi_world()
    ranks = world.Get_size() if world is not None else size
    code = exit_code(err)
    where = f"rank {rank} of {ranks}: " if ranks > 1 else ""
    if getattr(err, "every_rank", False) and world is not None:
        if rank == 0:  # every rank raised this together and knows it; one line is enough
            print(f"pipeline {command}: error: {err}", file=sys.stderr, flush=True)
        return code
    if isinstance(err, KeyboardInterrupt):
        print(f"pipeline {command}: {where}interrupted ({str(err) or 'SIGINT'})", file=sys.stderr, flush=True)
    elif isinstance(err, (UserError, OSError)):
        print(f"pipeline {command}: {where}error: {err}", file=sys.stderr, flush=True)
    else:  # a bug or a resource failure (MemoryError): the traceback says where
        traceback.print_exception(err, file=sys.stderr)
        print(f"pipeline {command}: {where}error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    if world is not None and ranks > 1:
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)  # let the launcher's proxy forward the message before it tears the job down
        world.Abort(code)  # ends every rank of the job; the others may be waiting in a collective
    return code
