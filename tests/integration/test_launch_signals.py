"""Stopping a job started from launch/: the signal reaches the ranks, which checkpoint at the step boundary and exit.

For real: launch/train.sh starts the deepspeed launcher with 2 CPU ranks on the debug preset; a second launch into
the same folder is refused within seconds naming the holder; then `kill PID` of the `deepspeed` process itself
(which dies without passing SIGTERM on) must still end both ranks with a checkpoint at the step they were at.
With a stand-in launcher: SIGTERM to train.sh and mpi.sh is passed to the ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from support.fault_support import logged_steps, rank_processes, wait_for
from support.launch import free_port, step_losses

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def launch_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


STAND_IN_RANK = """
import os, signal, sys, time, pathlib
out = pathlib.Path(os.environ["STAND_IN_OUT"])
signal.signal(signal.SIGTERM, lambda *_: (out.write_text("SIGTERM"), sys.exit(0)))
out.write_text("ready")
time.sleep(120)
"""


@pytest.mark.parametrize("script", ["train.sh", "mpi.sh"])
def test_sigterm_to_the_launch_script_reaches_the_ranks(tmp_path: Path, script: str) -> None:
    """A stand-in launcher that, like `deepspeed`, names pretrain.train on its command line and dies of SIGTERM;
    its one rank is `python -u -m pretrain.train` (a stand-in module): the script must signal the rank only."""
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "__init__.py").write_text("")
    (tmp_path / "pretrain" / "train.py").write_text(STAND_IN_RANK)
    launcher = tmp_path / "launcher"
    launcher.write_text(
        "#!/bin/bash\n[[ $1 == --version ]] && exit 0\n"  # mpi.sh asks which MPI this is
        f'cd {tmp_path} && {sys.executable} -u -m pretrain.train "$@" &\nwait\n'
    )
    launcher.chmod(0o755)
    env = launch_env(DEEPSPEED=str(launcher), MPIEXEC=str(launcher), LOG_DIR=str(tmp_path / "logs"))
    env["STAND_IN_OUT"] = str(tmp_path / "rank0")
    job = subprocess.Popen(
        [str(REPO / "launch" / script), "--", "--output", str(tmp_path / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: (tmp_path / "rank0").is_file() and (tmp_path / "rank0").read_text() == "ready", 60, "the rank")
    job.send_signal(signal.SIGTERM)
    out = job.communicate(timeout=60)[0]
    assert (tmp_path / "rank0").read_text() == "SIGTERM", out
    assert job.returncode == 0, out
    assert f"{script}: TERM: passing it to the trainer ranks" in out


@pytest.mark.slow
def test_kill_of_the_deepspeed_launcher_checkpoints_and_ends_both_ranks(tmp_path: Path, tiny_dataset: Path) -> None:
    run = tmp_path / "run"
    sets = ["model.seq_len=32", "train.ds_config=ds_configs/zero3_cpu.json", "train.max_steps=10000"]
    sets += ["train.eval_interval=100000", "train.save_interval=100000", "log.tensorboard=false"]
    args = ["--data", str(tiny_dataset), "--preset", "debug", "--output", str(run)]
    for item in sets:
        args += ["--set", item]
    job = subprocess.Popen(
        [str(REPO / "launch" / "train.sh"), "--num_gpus", "2", "--", *args],
        env=launch_env(MASTER_PORT=str(free_port())),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: logged_steps(run) >= 2 or job.poll() is not None, 300, "two logged steps")
        assert job.poll() is None, f"the job ended before two logged steps:\n{log_tails(run)}"
        ranks = rank_processes(job.pid)
        assert sorted(r for r in ranks if r >= 0) == [0, 1]
        holder = json.loads((run / "LOCK").read_text())
        assert holder["pid"] == ranks[0].pid

        # a second launch into the folder: refused before it starts a process group, naming the holder
        second = subprocess.run(
            [sys.executable, "-m", "pretrain.train", *args],
            cwd=REPO,
            env=launch_env(MASTER_PORT=str(free_port())),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 5, second.stderr[-3000:]
        assert f"host {holder['host']}, pid {ranks[0].pid}, started {holder['started']}" in second.stderr
        assert second.stderr.count("\n") == 1

        # `kill PID` of the deepspeed launcher (the process the user sees; it dies without passing SIGTERM on)
        runner = next(p for p in psutil.Process(job.pid).children(recursive=True) if _is_deepspeed_runner(p))
        runner.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs([ranks[0], ranks[1]], timeout=180)
        assert not alive, f"ranks still running after the launcher was killed: {alive}"
    finally:
        for proc in psutil.Process(job.pid).children(recursive=True):
            proc.kill()
        job.kill()
    out = job.communicate(timeout=60)[0]
    rank0_log = next((run / "logs").glob("*_rank0.log")).read_text()
    last = max(step_losses(run))
    assert f"the launcher process (pid {runner.pid}) exited: saving at step {last} and exiting" in rank0_log, out
    assert (run / "checkpoints" / "latest").read_text() == f"step{last:08d}"
    assert (run / "checkpoints" / f"step{last:08d}" / "COMPLETE").is_file()
    assert f"Process {ranks[0].pid} exits successfully" in out and f"Process {ranks[1].pid} exits successfully" in out
    assert not (run / "LOCK").exists()


def log_tails(run: Path, lines: int = 15) -> str:
    """The last lines of every log under RUN/logs (the ranks' own logs hold a rank's traceback)."""
    tails = [
        f"== {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:]) for log in sorted(run.glob("logs/*.log"))
    ]
    return "\n".join(tails)


def _is_deepspeed_runner(proc: psutil.Process) -> bool:
    try:
        return any(Path(arg).name == "deepspeed" for arg in proc.cmdline()[:2])
    except psutil.NoSuchProcess:
        return False
