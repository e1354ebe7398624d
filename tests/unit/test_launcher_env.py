"""infra/launcher_env.py against the environments each launcher really sets.

The SLURM and Hydra tables are what a job printed on the test SLURM cluster (tests/support/slurm_cluster.py, slurm 23
with the mpich wheel): the batch script's own shell, `srun` (with and without --mpi=pmi2), and mpiexec inside the
job, whose ranks inherit the srun-started proxy's SLURM_PROCID/SLURM_NTASKS. The torch tables are what
deepspeed's launch.py and torchrun export; Open MPI's are those of its mpirun. Two launches are checked for real:
mpiexec -n 2 (mpich's Hydra) and torchrun with 2 processes.
"""

from __future__ import annotations

import os

import pytest

from data_pipeline import comm
from infra import launcher_env

SLURM_JOB = {"SLURM_JOB_ID": "41", "SLURM_JOB_NODELIST": "gpu[003-004]", "SLURM_JOB_NUM_NODES": "2"}
SLURM_BATCH_SHELL = {**SLURM_JOB, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
SLURM_BATCH_SHELL |= {"SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_TASKS_PER_NODE": "8(x2)"}
SRUN_TASK_11 = {**SLURM_BATCH_SHELL, "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_NODEID": "1"}
SRUN_TASK_11 |= {"SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_STEP_NUM_TASKS": "12"}
SRUN_TASK_11 |= {"SLURM_STEP_TASKS_PER_NODE": "8,4", "SLURM_NTASKS": "12"}
SRUN_PMI2_TASK_11 = {**SRUN_TASK_11, "PMI_RANK": "11", "PMI_SIZE": "12", "PMI_FD": "13", "PMI_JOBID": "41.0"}
# mpiexec -n 16 -ppn 8 in the job: Hydra's proxy on node 1 is task 1 of a 2-task srun step
HYDRA_IN_SLURM_RANK_13 = {**SLURM_BATCH_SHELL, "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
HYDRA_IN_SLURM_RANK_13 |= {"SLURM_STEP_ID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2"}
HYDRA_IN_SLURM_RANK_13 |= {"PMI_RANK": "13", "PMI_SIZE": "16", "MPI_LOCALRANKID": "5", "MPI_LOCALNRANKS": "8"}
HYDRA_RANK_1 = {"PMI_RANK": "1", "PMI_SIZE": "2", "PMI_FD": "9", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
OPENMPI_RANK_6 = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}
OPENMPI_RANK_6 |= {"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMPI_COMM_WORLD_NODE_RANK": "1", "PMIX_RANK": "6"}
DEEPSPEED_RANK_9 = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_SIZE": "8", "CROSS_RANK": "1"}
DEEPSPEED_RANK_9 |= {"CROSS_SIZE": "2", "MASTER_ADDR": "gpu003", "MASTER_PORT": "29500"}
# pretrain.sbatch LAUNCHER=deepspeed: srun starts one deepspeed launcher per node, whose ranks inherit its task id
DEEPSPEED_UNDER_SRUN_RANK_9 = {**SRUN_TASK_11, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", **DEEPSPEED_RANK_9}
TORCHRUN_RANK_3 = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}

# env, launcher, global rank, world size, local rank, ranks on the node
CASES = [
    ({}, "none", 0, 1, 0, 1),
    (SLURM_BATCH_SHELL, "none", 0, 1, 0, 1),
    (SRUN_TASK_11, "slurm", 11, 12, 3, 4),
    (SRUN_PMI2_TASK_11, "slurm", 11, 12, 3, 4),
    (HYDRA_IN_SLURM_RANK_13, "hydra", 13, 16, 5, 8),
    (HYDRA_RANK_1, "hydra", 1, 2, 1, 2),
    (OPENMPI_RANK_6, "openmpi", 6, 8, 2, 4),
    (DEEPSPEED_RANK_9, "torch", 9, 16, 1, 8),
    (DEEPSPEED_UNDER_SRUN_RANK_9, "torch", 9, 16, 1, 8),
    (TORCHRUN_RANK_3, "torch", 3, 4, 1, 2),
    ({"PMIX_RANK": "2"}, "pmi", 2, 1, 0, 1),
]
IDS = ["bare", "sbatch-shell", "srun", "srun-pmi2", "mpiexec-in-slurm", "mpiexec", "mpirun", "deepspeed"]
IDS += ["deepspeed-under-srun", "torchrun", "pmix"]


@pytest.mark.parametrize("env,kind,rank,size,local,local_count", CASES, ids=IDS)
def test_each_launcher_answers_from_its_own_variables(
    env: dict, kind: str, rank: int, size: int, local: int, local_count: int
) -> None:
    answers = (
        launcher_env.launcher(env),
        launcher_env.global_rank(env),
        launcher_env.world_size(env),
        launcher_env.local_rank(env),
        launcher_env.local_size(env),
    )
    assert answers == (kind, rank, size, local, local_count)


@pytest.mark.parametrize(
    "env,under_mpi",
    [({}, False), (SLURM_BATCH_SHELL, False), (SRUN_TASK_11, True), (HYDRA_RANK_1, True), (OPENMPI_RANK_6, True)]
    + [(TORCHRUN_RANK_3, False), ({**HYDRA_RANK_1, "PMI_SIZE": "1", "MPI_LOCALNRANKS": "1"}, False)],
)
def test_the_pipeline_starts_mpi_only_as_one_of_several_mpi_ranks(
    monkeypatch: pytest.MonkeyPatch, env: dict, under_mpi: bool
) -> None:
    """A batch script's shell (SLURM_NTASKS=16, no step) and a torchrun rank are not MPI jobs."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "PMI", "OMPI_", "MPI_")) or name in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert comm.launched_under_mpi() is under_mpi


def test_srun_ranks_get_torch_distributed_variables() -> None:
    assert launcher_env.torch_distributed_env(SRUN_TASK_11) == {
        "RANK": "11",
        "WORLD_SIZE": "12",
        "LOCAL_RANK": "3",
        "MASTER_ADDR": "gpu003",
        "MASTER_PORT": "29500",
    }
    explicit = {**SRUN_TASK_11, "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "20041"}
    assert launcher_env.torch_distributed_env(explicit)["MASTER_ADDR"] == "10.0.0.7"
    assert launcher_env.torch_distributed_env(explicit)["MASTER_PORT"] == "20041"
    # a launcher already decided, or MPI discovery will (mpiexec inside SLURM must not become SLURM's node index)
    for env in (DEEPSPEED_UNDER_SRUN_RANK_9, HYDRA_IN_SLURM_RANK_13, OPENMPI_RANK_6, SLURM_BATCH_SHELL, {}):
        assert launcher_env.torch_distributed_env(env) == {}


@pytest.mark.parametrize(
    "nodelist,first",
    [("node1", "node1"), ("gpu[003-005,9]", "gpu003"), ("a[7],b[1-2]", "a7"), ("host-1,host-2", "host-1")],
)
def test_first_slurm_host(nodelist: str, first: str) -> None:
    assert launcher_env.first_slurm_host(nodelist) == first


@pytest.mark.parametrize(
    "tasks_per_node,node,count", [("8", 0, 8), ("2(x3),1", 2, 2), ("2(x3),1", 3, 1), ("", 0, 1), ("4", 5, 1)]
)
def test_slurm_tasks_on_node(tasks_per_node: str, node: int, count: int) -> None:
    assert launcher_env.slurm_tasks_on_node(tasks_per_node, node) == count


def test_launch_attempt_names_the_slurm_job_or_the_restart_loop() -> None:
    assert launcher_env.launch_attempt({**SLURM_JOB, "SLURM_RESTART_COUNT": "2"}) == {
        "of": "SLURM_JOB_ID=41",
        "number": 2,
    }
    loop = {"PRETRAIN_RESTART_ID": "vm-77-1700000000", "PRETRAIN_RESTART_COUNT": "1"}
    assert launcher_env.launch_attempt(loop) == {"of": "PRETRAIN_RESTART_ID=vm-77-1700000000", "number": 1}
    assert launcher_env.launch_attempt({}) is None
