"""The collectives the pipeline stages use, for one process or for N MPI ranks.

Stages are written once against the `Comm` protocol (the collectives they use, nothing more): `LocalComm` is the
single-process case (every collective is the identity), `MPIComm` wraps an mpi4py communicator, and the tests'
`ThreadComm` (tests/support/sim_comm.py) runs N ranks as threads. `get_comm()` picks MPI only when the process was started by
`mpiexec`/`srun` with more than one rank, so a plain `pipeline run` never needs an MPI library at all.

`MPIComm` counts the bytes this rank sends to and receives from other ranks (raw buffers exactly, pickled
objects by their pickled size), which stats.json reports per rank.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from data_pipeline.errors import RankFailed
from data_pipeline.executor import mark_every_rank
from infra import launcher_env

T = TypeVar("T")


@runtime_checkable
class Comm(Protocol):
    """What the pipeline's stages need from their ranks: who am I, the collectives, and the bytes they moved.

    Every rank calls each collective in the same order; `alltoallv_array` moves numpy rows as raw buffers,
    the others move picklable objects. bytes_sent/bytes_received count traffic to and from other ranks.
    """

    rank: int
    size: int
    bytes_sent: int
    bytes_received: int

    def allgather(self, obj: Any) -> list[Any]: ...

    def bcast(self, obj: Any, root: int = 0) -> Any: ...

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None: ...

    def alltoall(self, objs: list[Any]) -> list[Any]: ...

    def alltoallv_array(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray: ...

    def allreduce_sum(self, value: int | float) -> int | float: ...

    def barrier(self) -> None: ...


class LocalComm:
    """One process: rank 0 of 1."""

    rank = 0
    size = 1
    bytes_sent = 0
    bytes_received = 0

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return [obj]

    def alltoall(self, objs: list[Any]) -> list[Any]:
        """objs[i] goes to rank i; returns what every rank sent to this one."""
        assert len(objs) == 1, "alltoall needs one entry per rank"
        return list(objs)

    def alltoallv_array(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """rows, grouped by destination, counts[i] of them to rank i; returns what all ranks sent here (rank order)."""
        assert len(counts) == 1 and int(counts[0]) == len(rows), "alltoallv_array needs one count per rank"
        return np.ascontiguousarray(rows)

    def allreduce_sum(self, value: int | float) -> int | float:
        return value

    def barrier(self) -> None:
        pass


class MPIComm:
    """N ranks over mpi4py; numpy payloads travel as raw buffers (Alltoallv), everything else pickled."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.bytes_sent = 0
        self.bytes_received = 0

    def _count(self, sent: Any, copies: int, received: list[Any]) -> None:
        """Pickled sizes of what crossed to (`copies` times `sent`) or from (`received`) other ranks."""
        self.bytes_sent += _pickled_size(sent) * copies if copies else 0
        self.bytes_received += sum(_pickled_size(o) for o in received)

    def allgather(self, obj: Any) -> list[Any]:
        gathered = self.comm.allgather(obj)
        others = [o for r, o in enumerate(gathered) if r != self.rank]
        self._count(obj, self.size - 1, others)
        return gathered

    def bcast(self, obj: Any, root: int = 0) -> Any:
        result = self.comm.bcast(obj, root=root)
        root_sends = self.rank == root
        self._count(result, self.size - 1 if root_sends else 0, [] if root_sends else [result])
        return result

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        gathered = self.comm.gather(obj, root=root)
        others = [o for r, o in enumerate(gathered) if r != root] if self.rank == root else []
        self._count(obj, int(self.rank != root), others)
        return gathered

    def alltoall(self, objs: list[Any]) -> list[Any]:
        received = self.comm.alltoall(objs)
        others = [o for r, o in enumerate(received) if r != self.rank]
        self.bytes_sent += sum(_pickled_size(o) for r, o in enumerate(objs) if r != self.rank)
        self._count(None, 0, others)
        return received

    def alltoallv_array(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """rows, grouped by destination, counts[i] of them to rank i, sent from their own buffer: the caller's
        grouped copy is the only send buffer (one fewer copy of the largest arrays dedup routes)."""
        rows = np.ascontiguousarray(rows)
        row_shape = rows.shape[1:]
        row_items = int(np.prod(row_shape, dtype=np.int64)) if row_shape else 1
        send_counts = np.asarray(counts, dtype=np.int64) * row_items
        recv_counts = np.array(self.comm.alltoall(send_counts.tolist()), dtype=np.int64)
        recv = np.empty(int(recv_counts.sum()), dtype=rows.dtype)
        mpi_type = self._MPI._typedict[rows.dtype.char]
        self.comm.Alltoallv(
            [rows.reshape(-1), (send_counts, _displacements(send_counts)), mpi_type],
            [recv, (recv_counts, _displacements(recv_counts)), mpi_type],
        )
        self.bytes_sent += int(send_counts.sum() - send_counts[self.rank]) * rows.dtype.itemsize
        self.bytes_received += int(recv_counts.sum() - recv_counts[self.rank]) * rows.dtype.itemsize
        return recv.reshape((-1, *row_shape)) if row_shape else recv

    def allreduce_sum(self, value: int | float) -> int | float:
        result = self.comm.allreduce(value)
        self._count(value, 1, [result])
        return result

    def barrier(self) -> None:
        self.comm.Barrier()


def _pickled_size(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def launched_under_mpi() -> bool:
    """True when an MPI-capable launcher (mpirun, mpiexec, srun) started this process as one of several ranks."""
    return launcher_env.launcher() != launcher_env.TORCH and launcher_env.launched_as_one_of_several()


def get_comm() -> Comm:
    """MPIComm over COMM_WORLD under a multi-rank launcher, else LocalComm (no MPI import at all)."""
    if not launched_under_mpi():
        return LocalComm()
    from mpi4py import MPI

    return MPIComm(MPI.COMM_WORLD)


def collective(comm: Comm, step: str, fn: Callable[[], T]) -> T:
    """Run fn on every rank; if any rank raised, every rank raises, so none waits forever in the next collective.

    A rank that failed re-raises its own error (type and traceback intact); the others raise RankFailed naming
    every failed rank and its message, which is what rank 0 prints when another rank was the one that failed.
    Both are marked as raised on every rank, so the CLI ends the ranks without MPI_Abort.

    Only for short steps every rank reaches at the same time (resolving inputs, writing stats): anything else
    that fails ends the job through the CLI's MPI_Abort (executor.job_failed) without waiting for other ranks.
    """
    try:
        result, own = fn(), None
    except Exception as err:  # noqa: BLE001 -- shared with every rank, then re-raised
        result, own = None, err
    errors = comm.allgather(None if own is None else f"{type(own).__name__}: {own}")
    if own is not None:
        raise mark_every_rank(own)
    failed = [f"rank {rank}: {message}" for rank, message in enumerate(errors) if message is not None]
    if failed:
        raise mark_every_rank(
            RankFailed(f"{step} failed on {len(failed)} of {comm.size} rank(s); " + "; ".join(failed))
        )
    return result


def on_root(comm: Comm, step: str, fn: Callable[[], T]) -> T:
    """Run fn on rank 0 only and give every rank its result (or its error)."""
    return comm.bcast(collective(comm, step, lambda: fn() if comm.rank == 0 else None))
