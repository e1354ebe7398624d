"""What real launchers set: each rank of `mpiexec -n 2` and of torchrun read through infra/launcher_env.py (the recorded
tables of other launchers are tests/unit/test_launcher_env.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.launch import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# one write per rank: print() under PYTHONUNBUFFERED writes the line and its newline apart, and mpiexec once
# forwarded rank 1's line between rank 0's and its newline
ANSWERS = (
    "import json, sys; from infra import launcher_env as e; sys.stdout.write(json.dumps("
    "[e.launcher(), e.global_rank(), e.world_size(), e.local_rank(), e.local_size()]) + '\\n')"
)


def _launched_answers(command: list[str]) -> list[list]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI", "OMPI_", "MPI_"))}
    env |= {"PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(json.loads(answer) for answer in re.findall(r"\[[^\[\]]*\]", done.stdout))


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
