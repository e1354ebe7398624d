"""The `Comm` protocol: every comm the stages can be given (one process, MPI, the tests' threads) implements it."""

from __future__ import annotations

import inspect
import sys
import types

import numpy as np
import pytest
from support.sim_comm import ThreadComm, _Meeting, run_ranks

from data_pipeline.comm import Comm, LocalComm, MPIComm, on_root

COLLECTIVES = ["allgather", "bcast", "gather", "alltoall", "alltoallv_array", "allreduce_sum", "barrier"]
COUNTERS = ["rank", "size", "bytes_sent", "bytes_received"]


class _FakeWorld:
    """Stands for mpi4py's COMM_WORLD in MPIComm's constructor (rank 1 of 3), without starting MPI."""

    def Get_rank(self) -> int:  # noqa: N802 -- mpi4py's name
        return 1

    def Get_size(self) -> int:  # noqa: N802
        return 3


def _mpi_comm(monkeypatch) -> MPIComm:
    monkeypatch.setitem(sys.modules, "mpi4py", types.SimpleNamespace(MPI=types.SimpleNamespace()))
    return MPIComm(_FakeWorld())


def test_the_protocol_lists_exactly_the_collectives_and_counters():
    members = {name for name in vars(Comm) if not name.startswith("_")} | set(Comm.__annotations__)
    assert members == set(COLLECTIVES) | set(COUNTERS)


@pytest.mark.parametrize("cls", [LocalComm, MPIComm, ThreadComm])
def test_each_comm_has_every_collective_with_the_protocols_parameters(cls):
    for name in COLLECTIVES:
        want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(Comm, name)).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(cls, name)).parameters.values()]
        assert got == want, f"{cls.__name__}.{name}"


def test_each_comm_instance_is_a_comm(monkeypatch):
    mpi = _mpi_comm(monkeypatch)
    comms = [LocalComm(), mpi, ThreadComm(0, 1, _Meeting(1))]
    assert all(isinstance(comm, Comm) for comm in comms)
    assert [(c.rank, c.size, c.bytes_sent, c.bytes_received) for c in comms] == [
        (0, 1, 0, 0),
        (1, 3, 0, 0),
        (0, 1, 0, 0),
    ]
    assert not isinstance(object(), Comm)


def test_a_step_written_against_comm_runs_on_one_process_and_on_simulated_ranks():
    def step(comm: Comm) -> tuple:
        root_value = on_root(comm, "root value", lambda: "from rank 0")
        total = comm.allreduce_sum(comm.rank + 1)
        rows = comm.alltoallv_array(np.full((comm.size, 2), comm.rank, np.int64), np.ones(comm.size, np.int64))
        return root_value, total, rows[:, 0].tolist()

    assert step(LocalComm()) == ("from rank 0", 1, [0])
    assert run_ranks(3, step) == [("from rank 0", 6, [0, 1, 2])] * 3
