"""Which launcher started this process and what its environment says: the one reader of SLURM_*, OMPI_*, PMI_*.

Both halves ask the same questions before (or without) any process group: the pipeline to decide whether to start
MPI and to split a node's cores, the trainer to map srun's variables to torch.distributed's and to name the rank in
an error. Each launcher answers them in its own variables:

| launcher | started by | global rank | world size | local rank | ranks on this node |
| --- | --- | --- | --- | --- | --- |
| `torch` | deepspeed launcher, torchrun, DeepSpeed's MPI discovery | RANK | WORLD_SIZE | LOCAL_RANK | LOCAL_WORLD_SIZE (torchrun), LOCAL_SIZE (deepspeed) |
| `openmpi` | Open MPI's mpirun | OMPI_COMM_WORLD_RANK | OMPI_COMM_WORLD_SIZE | OMPI_COMM_WORLD_LOCAL_RANK | OMPI_COMM_WORLD_LOCAL_SIZE |
| `hydra` | MPICH / Intel MPI mpiexec | PMI_RANK | PMI_SIZE | MPI_LOCALRANKID | MPI_LOCALNRANKS |
| `slurm` | srun (any --mpi plugin) | SLURM_PROCID | SLURM_STEP_NUM_TASKS, SLURM_NTASKS | SLURM_LOCALID | SLURM_STEP_TASKS_PER_NODE at SLURM_NODEID |
| `pmi` | another PMI/PMIx process manager | PMI_RANK, PMIX_RANK | PMI_SIZE | - | - |

`launcher()` decides which row to trust, first match wins, and every other question reads that row only:

1. `torch` (RANK and WORLD_SIZE): whoever set them has already chosen the trainer's process group. Under
   pretrain.sbatch's deepspeed mode the ranks also inherit SLURM_PROCID from the per-node launcher srun started
   (the node index), which must not be taken for the rank.
2. `openmpi` and 3. `hydra`: mpiexec inside a SLURM job starts its per-node proxies with srun, so its ranks
   inherit the proxy's SLURM_PROCID and SLURM_NTASKS (node index and node count); the MPI variables are the
   rank's own. Hydra is told from srun's PMI plugin (which sets PMI_RANK too) by MPI_LOCALRANKID, which only
   Hydra sets.
4. `slurm` (SLURM_PROCID with a step id): srun started this process itself. A batch script's own shell has
   SLURM_PROCID=0 and the allocation's SLURM_NTASKS but no step of tasks: it is not one of several ranks.
5. `pmi`: a process manager that gives only PMI_RANK/PMIX_RANK.

No torch import here: the `pipeline` command uses this module and must not import torch.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping

TORCH, OPENMPI, HYDRA, SLURM, PMI, NONE = "torch", "openmpi", "hydra", "slurm", "pmi", "none"

_GLOBAL_RANK = {
    TORCH: ("RANK",),
    OPENMPI: ("OMPI_COMM_WORLD_RANK",),
    HYDRA: ("PMI_RANK",),
    SLURM: ("SLURM_PROCID",),
    PMI: ("PMI_RANK", "PMIX_RANK"),
}
_WORLD_SIZE = {
    TORCH: ("WORLD_SIZE",),
    OPENMPI: ("OMPI_COMM_WORLD_SIZE",),
    HYDRA: ("PMI_SIZE",),
    SLURM: ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),  # the step's own count first: SLURM_NTASKS may be the job's
    PMI: ("PMI_SIZE",),
}
_LOCAL_RANK = {
    TORCH: ("LOCAL_RANK",),
    OPENMPI: ("OMPI_COMM_WORLD_LOCAL_RANK",),
    HYDRA: ("MPI_LOCALRANKID",),
    SLURM: ("SLURM_LOCALID",),
}
_LOCAL_SIZE = {
    TORCH: ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"),  # torchrun's name, then the deepspeed launcher's
    OPENMPI: ("OMPI_COMM_WORLD_LOCAL_SIZE",),
    HYDRA: ("MPI_LOCALNRANKS",),
}


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def launcher(env: Mapping[str, str] | None = None) -> str:
    """Which launcher's variables describe this process (see the module docstring for the order and why)."""
    env = _environ(env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return TORCH
    if "OMPI_COMM_WORLD_RANK" in env:
        return OPENMPI
    if "PMI_RANK" in env and "MPI_LOCALRANKID" in env:
        return HYDRA
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        return SLURM
    if "PMI_RANK" in env or "PMIX_RANK" in env:
        return PMI
    return NONE


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank in the whole job; 0 without a launcher."""
    env = _environ(env)
    return _first_int(env, _GLOBAL_RANK.get(launcher(env), ())) or 0


def world_size(env: Mapping[str, str] | None = None) -> int:
    """How many ranks the job has; 1 without a launcher."""
    env = _environ(env)
    return _first_int(env, _WORLD_SIZE.get(launcher(env), ())) or 1


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's index among the job's ranks on this node (the GPU it drives); 0 without a launcher."""
    env = _environ(env)
    return _first_int(env, _LOCAL_RANK.get(launcher(env), ())) or 0


def local_size(env: Mapping[str, str] | None = None) -> int:
    """How many of the job's ranks share this node; 1 without a launcher (or one that does not say)."""
    env = _environ(env)
    kind = launcher(env)
    if kind == SLURM:
        return slurm_tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""), _first_int(env, ("SLURM_NODEID",)) or 0)
    return _first_int(env, _LOCAL_SIZE.get(kind, ())) or 1


def slurm_tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """Tasks on node `node_index` from SLURM's compressed per-node counts: '2(x3),1' is 2, 2, 2, 1; 1 if unknown."""
    counts: list[int] = []
    for part in filter(None, tasks_per_node.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            return 1
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_index] if node_index < len(counts) else 1


def launched_as_one_of_several(env: Mapping[str, str] | None = None) -> bool:
    """True when a launcher started this process as one rank of a job of more than one."""
    return launcher(env) != NONE and world_size(env) > 1


def node_name() -> str:
    """This machine's name as run folders record it (locks, heartbeats, launch records).

    The hostname, under every launcher alike (not SLURMD_NODENAME): a lock written under srun must be recognised
    as this machine's by a later launch without SLURM, which checks whether the holder's process is still alive.
    """
    return socket.gethostname()


def launch_attempt(env: Mapping[str, str] | None = None) -> dict | None:
    """Which attempt of a SLURM job (requeues) or of a launch/restart.sh loop this launch is; None outside both.

    SLURM keeps the job id across requeues and counts them in SLURM_RESTART_COUNT; launch/restart.sh exports
    PRETRAIN_RESTART_ID (one per loop) and PRETRAIN_RESTART_COUNT the same way.
    """
    env = _environ(env)
    for of, number in (("SLURM_JOB_ID", "SLURM_RESTART_COUNT"), ("PRETRAIN_RESTART_ID", "PRETRAIN_RESTART_COUNT")):
        if env.get(of):
            return {"of": f"{of}={env[of]}", "number": _first_int(env, (number,)) or 0}
    return None


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    """The launcher's own id of this launch, the same on every rank and different for any other launch; None where
    the launcher has none (the deepspeed launcher, MPICH's mpiexec, torchrun without --rdzv-id).

    SLURM: job and step (a requeued job reuses its job id, never a step of a live one); Open MPI / PMIx: the job's
    namespace; torchrun: --rdzv-id.
    """
    env = _environ(env)
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    if env.get("SLURM_JOB_ID") and step:
        return f"slurm {env['SLURM_JOB_ID']}.{step}"
    for name in ("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"):
        if env.get(name):
            return f"{name}={env[name]}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "none")
    return None if run_id == "none" else f"torchelastic {run_id}"


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist: 'gpu[003-005,9],cpu1' -> 'gpu003' (what `scontrol show hostnames` gives)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return nodelist
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def torch_distributed_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT for torch.distributed when srun started the ranks.

    Only srun needs it: torch-style launchers set these already, and under mpirun/mpiexec DeepSpeed's MPI
    discovery finds rank 0's address over MPI (the environment does not name it). Under srun rank 0 runs on the
    first node of SLURM_JOB_NODELIST; an explicit MASTER_ADDR/MASTER_PORT wins.
    """
    env = _environ(env)
    if launcher(env) != SLURM:
        return {}
    return {
        "RANK": str(global_rank(env)),
        "WORLD_SIZE": str(world_size(env)),
        "LOCAL_RANK": str(local_rank(env)),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
        "MASTER_PORT": env.get("MASTER_PORT", "29500"),
    }
