"""A fault on rank 1 reaches the console of the launching terminal under every launcher, and RUN/errors/.

For real, 2 CPU ranks of the debug preset each: tests/support/fault_inject_rank_error.py makes rank 1 raise in step 2 while
rank 0 goes on into the step's collectives. Launchers: the deepspeed launcher through launch/train.sh (which sends
each rank's output to a file, so only the script's own report can put it on the console), torchrun, the mpich
wheel's mpiexec, and srun on a one-node SLURM started on localhost (skipped loudly without SLURM).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.launch import PYTHON, ROOT, TINY_TRAIN_SETTINGS, free_port
from support.slurm_cluster import SlurmCluster, missing_tools

pytestmark = pytest.mark.slow

INJECT = str(ROOT / "tests" / "support" / "fault_inject_rank_error.py")
BIN = Path(PYTHON).parent
SETS = (*TINY_TRAIN_SETTINGS, "train.global_batch_tokens=256", "train.max_steps=6")


def trainer_args(data: Path, run: Path) -> list[str]:
    args = ["--data", str(data), "--preset", "debug", "--output", str(run)]
    for item in SETS:
        args += ["--set", item]
    return args


def fault_env(kind: str) -> dict[str, str]:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update(FAULT_RANK_ERROR=f"1:2:{kind}", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def launch(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def assert_on_console_and_recorded(proc: subprocess.CompletedProcess, run: Path, kind: str) -> None:
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0, console[-3000:]
    assert "During handling of the above exception" not in console, console[-3000:]  # reporting did not fail
    message = "injected bug on rank 1 in step 2" if kind == "bug" else "missing on rank 1 in step 2"
    assert message in console, console[-3000:]
    if kind == "bug":
        assert "Traceback" in console and "RuntimeError: injected bug" in console, console[-3000:]
    else:
        assert "pretrain.train: rank 1: error: injected: shard /data/node1/train-00000.arrow" in console
    recorded = (run / "errors" / "rank1.txt").read_text()
    assert recorded.startswith("launch ") and " rank 1 host " in recorded and message in recorded


def test_deepspeed_launcher(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = fault_env("bug")
    argv = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", env["MASTER_PORT"], INJECT]
    proc = launch([*argv, *trainer_args(tiny_dataset, run)], env)
    assert_on_console_and_recorded(proc, run, "bug")


STAND_IN = """#!/bin/bash
# a deepspeed launcher whose rank 1 recorded an error (as pretrain/rank_errors.py does) in a file, then died
out=$(python3 -c 'import sys; a = sys.argv[1:]; print(a[a.index("--output") + 1])' "$@")
mkdir -p "$out/errors"
printf 'launch abc rank 1 host h pid 1 at now\nTraceback (most recent call last):\nRuntimeError: rank one broke\n' \
  >"$out/errors/rank1.txt"
exit 1
"""


def test_train_sh_puts_the_recorded_errors_of_its_launch_on_the_console(tmp_path: Path) -> None:
    """train.sh sends each rank's output to a file (--enable_each_rank_log): a failed job's records must reach the
    console from the script; an earlier launch's record in the same folder must not."""
    run = tmp_path / "run"
    (run / "errors").mkdir(parents=True)
    old = run / "errors" / "rank0.txt"
    old.write_text("launch old rank 0 host h pid 1 at then\nan earlier launch's error\n")
    os.utime(old, (1, 1))
    launcher = tmp_path / "deepspeed"
    launcher.write_text(STAND_IN)
    launcher.chmod(0o755)
    env = fault_env("bug") | {"DEEPSPEED": str(launcher), "LOG_DIR": str(tmp_path / "logs")}
    proc = launch([str(ROOT / "launch" / "train.sh"), "--", "--output", str(run)], env)
    assert proc.returncode == 1
    assert f"{run / 'errors' / 'rank1.txt'}" in proc.stderr and "RuntimeError: rank one broke" in proc.stderr
    assert "an earlier launch's error" not in proc.stderr


@pytest.mark.parametrize("kind", ["bug", "user"])
def test_torchrun(tiny_dataset: Path, tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    env = fault_env(kind)
    port = env["MASTER_PORT"]
    argv = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, INJECT]
    proc = launch([*argv, *trainer_args(tiny_dataset, run)], env)
    assert_on_console_and_recorded(proc, run, kind)
    if kind == "bug":  # rank 0 relays rank 1's record: the cause is on its console too
        assert f"rank 0: another rank stopped during a collective: rank 1 failed ({run / 'errors'}" in proc.stderr


def test_mpiexec(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = launch([str(BIN / "mpiexec"), "-n", "2", PYTHON, INJECT, *trainer_args(tiny_dataset, run)], fault_env("bug"))
    assert_on_console_and_recorded(proc, run, "bug")


def test_srun(tiny_dataset: Path, tmp_path: Path) -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"SKIPPED LOUDLY: SLURM/munge not installed (missing {', '.join(missing)}); srun not tested")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the test SLURM cluster runs slurmd/munged as root; srun not tested")
    run = tmp_path / "run"
    with SlurmCluster(tmp_path / "slurm") as cluster:
        cluster.wait_idle()
        argv = ["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1", "--label", PYTHON, INJECT]
        proc = launch([*argv, *trainer_args(tiny_dataset, run)], fault_env("bug") | {"SLURM_CONF": str(cluster.conf)})
    assert_on_console_and_recorded(proc, run, "bug")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
