"""N simulated ranks in one process: threads that meet in every collective, for fast multi-rank unit tests.

`run_ranks(n, fn)` calls fn(comm) on n threads, each with a `ThreadComm` of that rank, and returns their
results in rank order. Each comm logs what its rank received per collective (`log`), so tests can assert that a
rank never gets data it should not. A failure on any thread breaks the barrier, so no thread waits forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np


class _Meeting:
    def __init__(self, size: int) -> None:
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list[Any] = [None] * size


class ThreadComm:
    """The collectives of `data_pipeline.comm.MPIComm`, between threads (a `Comm`; traffic is not counted)."""

    def __init__(self, rank: int, size: int, meeting: _Meeting) -> None:
        self.rank, self.size, self._meeting = rank, size, meeting
        self.bytes_sent = self.bytes_received = 0
        self.log: list[tuple[str, Any]] = []  # (collective, what this rank received)

    def _everyone(self, obj: Any) -> list[Any]:
        meeting = self._meeting
        meeting.slots[self.rank] = obj
        meeting.barrier.wait()
        seen = list(meeting.slots)
        meeting.barrier.wait()
        return seen

    def allgather(self, obj: Any) -> list[Any]:
        seen = self._everyone(obj)
        self.log.append(("allgather", seen))
        return seen

    def bcast(self, obj: Any, root: int = 0) -> Any:
        value = self._everyone(obj)[root]
        self.log.append(("bcast", value))
        return value

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        seen = self._everyone(obj)
        self.log.append(("gather", seen if self.rank == root else None))
        return seen if self.rank == root else None

    def alltoall(self, objs: list[Any]) -> list[Any]:
        assert len(objs) == self.size
        received = [sent[self.rank] for sent in self._everyone(list(objs))]
        self.log.append(("alltoall", received))
        return received

    def alltoallv_array(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        assert len(counts) == self.size and int(np.sum(counts)) == len(rows)
        parts = np.split(np.asarray(rows), np.cumsum(counts)[:-1])
        received = np.concatenate([sent[self.rank] for sent in self._everyone(list(parts))])
        self.log.append(("alltoallv", received))
        return received

    def allreduce_sum(self, value: int | float) -> int | float:
        seen = self._everyone(value)
        self.log.append(("allreduce", seen))
        return sum(seen[1:], seen[0])

    def barrier(self) -> None:
        self._everyone(None)


def run_ranks(size: int, fn: Callable[[ThreadComm], Any]) -> list[Any]:
    """fn(comm) on `size` simulated ranks; the results in rank order (any rank's exception is raised)."""
    meeting = _Meeting(size)
    comms = [ThreadComm(rank, size, meeting) for rank in range(size)]
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def body(rank: int) -> None:
        try:
            results[rank] = fn(comms[rank])
        except BaseException as err:  # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(err)
            meeting.barrier.abort()

    threads = [threading.Thread(target=body, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return results
