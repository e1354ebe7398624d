"""Unlink the shared-memory segments DeepSpeed's CPU collective op creates, once every rank has mapped them.

On CPU (DS_ACCELERATOR=cpu), when all ranks of a job share one machine (the launcher's LOCAL_SIZE equals the
world size), `init_distributed` starts DeepSpeed's shm allreduce. Each rank creates a POSIX shared-memory segment,
`/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>` (~27 MB), and maps every other
rank's segment before `init_distributed` returns. The op has a function that would unlink them, but nothing calls
it, so every CPU launch (each test, the demo, CI) left its segments in tmpfs, which is RAM: this machine once held
415 of them, 11 GB, and the unit tests slowed from 48 to 61-65 s under them.

A segment is needed by name only until every rank has opened it; the mappings live on after the name is gone, and
the kernel frees the memory when the last rank exits, killed or not. So after a barrier each rank unlinks its own
name. The names are the job's own: (addr, port) is unique to the job while it runs, the rendezvous guard owns the
port. A rank killed before the barrier still leaves its segment; a later job on that (addr, port) reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

SHM_DIR = Path("/dev/shm")  # where Linux's shm_open keeps its names
SEGMENT_PREFIX = "deepspeed_allreduce_buffer"


def segment_name(rank: int, env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The name DeepSpeed's shm.cpp gives rank `rank`'s segment, from the variables it reads itself."""
    return f"{SEGMENT_PREFIX}_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}_{rank}"


def release_segments() -> None:
    """After a barrier, unlink this rank's segment (there is none when the ranks span several machines)."""
    dist.barrier()  # every rank has mapped every segment once all have left init_distributed
    (SHM_DIR / segment_name(dist.get_rank())).unlink(missing_ok=True)
