"""The sbatch scripts against a real SLURM (munged + slurmctld + slurmd on localhost, see slurm_cluster.py).

- pretrain.sbatch in its deepspeed-launcher mode (hostfile from the node list) trains the debug preset on 2 CPU
  ranks and writes one checkpoint with both ranks' partitions;
- pretrain.sbatch in its srun mode is sent SIGUSR1 mid-run (what `--signal=B:USR1@N` does before the time
  limit): the trainer checkpoints and exits 0, the script requeues the job, and the requeued job resumes from
  that checkpoint (step > 0) and finishes;
- pipeline.sbatch runs `pipeline run` on 2 MPI ranks started by srun (PMI2) or by mpiexec inside the job.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.slurm_cluster import SlurmCluster, missing_tools

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRETRAIN = REPO / "launch" / "slurm" / "pretrain.sbatch"
PIPELINE = REPO / "launch" / "slurm" / "pipeline.sbatch"
# GPU-less node: override the script's GPU request; 2 ranks of 1 CPU each on the 2-CPU node.
CPU_JOB = ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=15"]

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"SKIPPED LOUDLY: SLURM/munge not installed (missing {', '.join(missing)}); "
            "apt-get install -y slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the test SLURM cluster runs slurmd/munged as root; run as root")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def submit(cluster: SlurmCluster, script: Path, log_dir: Path, env: dict[str, str], *options: str) -> str:
    """sbatch from the repository root with a CPU environment; returns the job id."""
    job_env = {**cluster.env(), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    job_env.update(PYTHON=sys.executable, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env)
    done = subprocess.run(
        ["sbatch", "--parsable", f"--output={log_dir}/%x-%j.out", *options, str(script)],
        env=job_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"sbatch {script.name} failed: {done.stderr}"
    return done.stdout.strip().split(";")[0]


def job_log(log_dir: Path, name: str, job_id: str) -> str:
    path = log_dir / f"{name}-{job_id}.out"
    return path.read_text(errors="replace") if path.exists() else f"(no log at {path})"


def checkpoint_ranks(run_dir: Path) -> tuple[str, set[str]]:
    checkpoints = run_dir / "checkpoints"
    tag = (checkpoints / "latest").read_text().strip()
    return tag, {p.name for p in (checkpoints / tag).glob("zero_pp_rank_*_optim_states.pt")}


def test_pretrain_deepspeed_mode_writes_a_checkpoint(cluster: SlurmCluster, tmp_path: Path, tiny_dataset: Path) -> None:
    run_dir = tmp_path / "run"
    env = {
        "DATA": str(tiny_dataset),
        "OUTPUT": str(run_dir),
        "PRESET": "debug",
        "LAUNCHER": "deepspeed",
        "EXTRA_ARGS": "--set train.max_steps=3",
    }
    job = submit(cluster, PRETRAIN, tmp_path, env, *CPU_JOB)
    state = cluster.wait_job(job, timeout_s=420)
    log = job_log(tmp_path, "pretrain", job)
    assert state == "COMPLETED", f"job {job} ended {state}:\n{log[-4000:]}\n{cluster.logs()}"
    assert "launcher=deepspeed nodes=1 tasks=2" in log
    assert "dist_world_size=2" in log and "trainer finished with status 0" in log
    hostfile = (run_dir / "logs" / f"hostfile-{job}").read_text()
    assert hostfile == f"{cluster.node} slots=2\n"
    tag, partitions = checkpoint_ranks(run_dir)
    assert tag.endswith("3") and len(partitions) == 2
    rank_logs = sorted(p.name.split("_")[-1] for p in (run_dir / "logs" / job).glob("*_rank*.log"))
    assert rank_logs == ["rank0.log", "rank1.log"]


def wait_for_step(metrics_csv: Path, step: int, cluster: SlurmCluster, job: str, log_dir: Path) -> None:
    """Poll the trainer's metrics.csv until it has logged `step` (the job must still be running)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if metrics_csv.exists():
            steps = [int(row["step"]) for row in csv.DictReader(metrics_csv.open()) if row.get("step")]
            if steps and max(steps) >= step:
                return
        state = cluster.job_state(job)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), (
            f"job {job} {state}:\n{job_log(log_dir, 'pretrain', job)}"
        )
        time.sleep(1.0)
    raise TimeoutError(f"job {job} did not reach step {step} in 300 s:\n{job_log(log_dir, 'pretrain', job)}")


def test_pretrain_sigusr1_checkpoints_requeues_and_resumes(
    cluster: SlurmCluster, tmp_path: Path, tiny_dataset: Path
) -> None:
    run_dir, max_steps = tmp_path / "run", 30
    env = {
        "DATA": str(tiny_dataset),
        "OUTPUT": str(run_dir),
        "PRESET": "debug",
        "EXTRA_ARGS": f"--set train.max_steps={max_steps} --set train.save_interval=1000 --set train.eval_interval=1000",
    }
    job = submit(cluster, PRETRAIN, tmp_path, env, *CPU_JOB)
    wait_for_step(run_dir / "metrics.csv", 2, cluster, job, tmp_path)
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@N delivers

    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        restarts = int(cluster.job_field(job, "Restarts") or 0)
        state = cluster.job_state(job)
        if restarts >= 1 and state not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
            break
        time.sleep(1.0)
    log = job_log(tmp_path, "pretrain", job)
    assert state == "COMPLETED" and restarts == 1, f"job {job}: {state}, restarts {restarts}\n{log[-5000:]}"

    saved = re.search(r"preemption signal: saving at step (\d+) and exiting", log)
    assert saved, log[-4000:]
    preempted_step = int(saved.group(1))
    assert 2 <= preempted_step < max_steps
    assert "requeueing job" in log and "attempt 2" in log
    resumed = re.search(r"resumed from \S+: step (\d+)", log)
    assert resumed and int(resumed.group(1)) == preempted_step, log[-4000:]
    assert "trainer finished with status 0" in log
    tag, partitions = checkpoint_ranks(run_dir)
    assert tag.endswith(str(max_steps)) and len(partitions) == 2
    steps = [int(row["step"]) for row in csv.DictReader((run_dir / "metrics.csv").open()) if row.get("step")]
    assert max(steps) == max_steps


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_pipeline_sbatch_on_two_mpi_ranks(cluster: SlurmCluster, tmp_path: Path, launcher: str) -> None:
    from test_launch_mpi import small_pipeline_input

    corpus, recipe = small_pipeline_input(tmp_path)
    out = tmp_path / "corpus_out"
    env = {
        "INPUT": str(corpus),
        "OUTPUT": str(out),
        "CONFIG": str(recipe),
        "PIPELINE": str(BIN / "pipeline"),
        "LAUNCHER": launcher,
    }
    job = submit(cluster, PIPELINE, tmp_path, env, "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10")
    state = cluster.wait_job(job, timeout_s=300)
    log = job_log(tmp_path, "pipeline", job)
    assert state == "COMPLETED", f"job {job} ended {state}:\n{log[-4000:]}"
    assert f"pipeline on 2 ranks over 1 node(s) ({cluster.node}), launcher={launcher}" in log
    manifest = json.loads((out / "manifest.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_docs"] == sum(1 for _ in corpus.open()) == stats["kept_docs"] + sum(stats["dropped"].values())
    assert stats["ranks"] == 2, f"{launcher} must give the pipeline 2 MPI ranks"
    assert stats["kept_docs"] > 0
    assert sum(s["num_docs"] for s in manifest["splits"].values()) == stats["kept_docs"]
