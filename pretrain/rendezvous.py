"""The rendezvous port: a job started next to a running one stops at once and never touches the running one.

torch's `env://` rendezvous has rank 0 serve a TCPStore on MASTER_ADDR:MASTER_PORT, and every other rank connects
to whatever answers there. Two jobs on one host with the same port (every launcher defaults to 29500): the
second job's rank 0 fails to bind, but its other ranks connect to the *first* job's store and write their
addresses and barrier counts into it, and the first job dies in a later collective ("Received data size doesn't
match expected size", or a peer that closed its connection). A week-long run, lost to a colleague's launch.

So before torch's rendezvous (`guard_port`, called by pretrain/engine.py):
- rank 0 serves the store itself and publishes this job's identity in it; torch then reuses that server
  (`multi_tenant`). A port already bound fails here, with a message that names it and how to pick another.
- every other rank connects as a plain client, which writes nothing, and reads the identity: another job's
  means the port is taken, and this rank stops before it has written a byte.

The identity (`job_identity`) is what all ranks of one launch share and no other launch does: the launcher's job
id where it has one (SLURM job and step, Open MPI/PMIx job, torchrun's --rdzv-id), else on a one-node job the
pid and start time of the launcher process above the ranks; and always the trainer's own arguments (minus the
deepspeed launcher's --local_rank), which differ between two jobs of different run folders. Under torchrun's
elastic agent the agent serves the port and a second agent fails to bind before it starts any rank: nothing to
guard there.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import time
from datetime import timedelta

from infra import launcher_env
from pretrain.errors import PretrainError

JOB_KEY = "pretrain.train/job"
OWNER_WAIT_S = 60.0  # a store that answers but never names a job after this long belongs to some other program
HOW_TO_PICK = (
    "pick another port for this job: `deepspeed --master_port N`, `torchrun --master_port N`, or MASTER_PORT=N "
    "for launch/*.sh, mpiexec and srun (launch/train.sh and launch/mpi.sh choose a free one when MASTER_PORT is unset)"
)


class PortTaken(PretrainError):
    """The rendezvous port belongs to another job (or program); this job stopped before using it."""


def trainer_args(argv: list[str]) -> list[str]:
    """The trainer's arguments as every rank of a launch has them: the deepspeed launcher adds --local_rank=N."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--local_rank="):
            skip = False
            continue
        skip = arg == "--local_rank"
        if not skip:
            kept.append(arg)
    return kept


def launcher_process() -> str:
    """'pid@host:start' of the outermost launcher process above this rank ('' if none): the same for every rank
    of a one-node job, different for another job."""
    from pretrain.signals import LauncherWatch

    chain = LauncherWatch.of_this_process().processes
    if not chain:
        return ""
    top = chain[-1]
    return f"{top.pid}@{launcher_env.node_name()}:{top.create_time():.3f}"


def job_identity(argv: list[str]) -> str:
    """A short hash that is the same on every rank of this launch and differs for any other launch."""
    launch = launcher_env.job_id()
    if launch is None and launcher_env.local_size() == launcher_env.world_size():
        launch = launcher_process()
    text = "\0".join([launch or "", *trainer_args(argv)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def this_launch() -> str:
    """This process's job identity, computed once: first before MPI discovery, which hides the launcher's own
    variables (pretrain/rank_errors.py names its records with it too)."""
    return job_identity(sys.argv[1:])


def guard(port: int, timeout: timedelta) -> object | None:
    """`guard_port` for this process, before torch's rendezvous (returns what it returns). MPI ranks first learn
    their rank and rank 0's address over MPI, as deepspeed.init_distributed would; a process without a launcher
    has no port to share."""
    job = this_launch()
    if "RANK" not in os.environ:
        if launcher_env.launcher() not in (launcher_env.OPENMPI, launcher_env.HYDRA, launcher_env.PMI):
            return None
        from deepspeed.comm.comm import mpi_discovery

        mpi_discovery(distributed_port=port, verbose=False)
    return guard_port(int(os.environ["RANK"]), job, timeout)


def guard_port(rank: int, job: str, timeout: timedelta) -> object | None:
    """Claim MASTER_PORT for this job (rank 0) or check that it is this job's (other ranks); PortTaken otherwise.

    Returns rank 0's store, which must stay referenced until torch's rendezvous has reused its server.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return None
    from torch.distributed import TCPStore

    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if rank == 0:
        store = _serve(TCPStore, addr, port, timeout)
        store.set(JOB_KEY, job)
        return store
    client = TCPStore(addr, port, is_master=False, timeout=timeout, wait_for_workers=False)
    owner = _owner(client)
    if owner != job:
        held = "a program that is not pretrain.train" if owner is None else f"another pretrain.train job ({owner})"
        raise PortTaken(
            f"rank {rank}: the rendezvous port {addr}:{port} is served by {held}, not by this job's rank 0 ({job}); "
            f"this rank stopped without joining it, so that job is untouched. {HOW_TO_PICK}"
        )
    return None


def _serve(store_class: type, addr: str, port: int, timeout: timedelta) -> object:
    try:
        return store_class(addr, port, is_master=True, timeout=timeout, wait_for_workers=False, multi_tenant=True)
    except RuntimeError as err:
        if not re.search(r"EADDRINUSE|address already in use", str(err), re.IGNORECASE):
            raise
        raise PortTaken(
            f"rank 0: the rendezvous port {port} on {launcher_env.node_name()} is in use (another job's "
            f"rendezvous, or another program); this job stopped before starting, and that job is untouched. "
            f"{HOW_TO_PICK}"
        ) from err


def _owner(client: object) -> str | None:
    """The job identity the store's server published; None if it names none within OWNER_WAIT_S."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while not client.check([JOB_KEY]):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return client.get(JOB_KEY).decode()
