"""What real launchers set: each rank of `mpiexec -n 2` and of torchrun read through infra/launcher_env.py (the recorded
tables of other launchers are tests/unit/test_launcher_env.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.launch import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SLURM_JOB = {"SLURM_JOB_ID": "41", "SLURM_JOB_NODELIST": "gpu[003-004]", "SLURM_JOB_NUM_NODES": "2"}
SLURM_BATCH_SHELL = {**SLURM_JOB, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
SLURM_BATCH_SHELL |= {"SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_TASKS_PER_NODE": "8(x2)"}
SRUN_TASK_11 = {**SLURM_BATCH_SHELL, "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_NODEID": "1"}
SRUN_TASK_11 |= {"SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_STEP_NUM_TASKS": "12"}
SRUN_TASK_11 |= {"SLURM_STEP_TASKS_PER_NODE": "8,4", "SLURM_NTASKS": "12"}
# mpiexec -n 16 -ppn 8 in the job: Hydra's proxy on node 1 is task 1 of a 2-task srun step
HYDRA_IN_SLURM_RANK_13 = {**SLURM_BATCH_SHELL, "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
HYDRA_IN_SLURM_RANK_13 |= {"SLURM_STEP_ID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2"}
HYDRA_IN_SLURM_RANK_13 |= {"PMI_RANK": "13", "PMI_SIZE": "16", "MPI_LOCALRANKID": "5", "MPI_LOCALNRANKS": "8"}
OPENMPI_RANK_6 = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}
OPENMPI_RANK_6 |= {"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMPI_COMM_WORLD_NODE_RANK": "1", "PMIX_RANK": "6"}
DEEPSPEED_RANK_9 = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_SIZE": "8", "CROSS_RANK": "1"}
DEEPSPEED_RANK_9 |= {"CROSS_SIZE": "2", "MASTER_ADDR": "gpu003", "MASTER_PORT": "29500"}
# pretrain.sbatch LAUNCHER=deepspeed: srun starts one deepspeed launcher per node, whose ranks inherit its task id

# env, launcher, global rank, world size, local rank, ranks on the node
IDS = ["bare", "sbatch-shell", "srun", "srun-pmi2", "mpiexec-in-slurm", "mpiexec", "mpirun", "deepspeed"]
IDS += ["deepspeed-under-srun", "torchrun", "pmix"]


ANSWERS = (
    "import json; from infra import launcher_env as e; "
    "print(json.dumps([e.launcher(), e.global_rank(), e.world_size(), e.local_rank(), e.local_size()]))"
)


def _launched_answers(command: list[str]) -> list[list]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI", "OMPI_", "MPI_"))}
    env |= {"PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(json.loads(line) for line in done.stdout.splitlines() if line.startswith("["))


def test_real_mpiexec_ranks(tmp_path: Path) -> None:
    mpiexec = shutil.which("mpiexec", path=str(BIN))
    if mpiexec is None:
        pytest.skip(f"SKIPPED LOUDLY: no mpiexec next to {sys.executable} (pip install mpich)")
    (tmp_path / "answers.py").write_text(ANSWERS)
    answers = _launched_answers([mpiexec, "-n", "2", sys.executable, str(tmp_path / "answers.py")])
    assert answers == [["hydra", 0, 2, 0, 2], ["hydra", 1, 2, 1, 2]]


def test_real_torchrun_ranks(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    (tmp_path / "answers.py").write_text(ANSWERS)
    answers = _launched_answers([*command, str(tmp_path / "answers.py")])
    assert answers == [["torch", 0, 2, 0, 2], ["torch", 1, 2, 1, 2]]
