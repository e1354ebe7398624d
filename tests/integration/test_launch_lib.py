"""launch/lib.sh: the trainer's --output read once, the same way by train.sh (logs) and restart.sh (heartbeats).

Both scripts run for real with stand-ins for the launcher and the job, in every form argparse accepts:
`--output DIR`, `--output=DIR`, given twice (the last wins, as in the trainer), and missing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"


def output_forms(run: Path) -> list[list[str]]:
    return [
        ["--data", "D", "--output", str(run), "--preset", "debug"],
        ["--data", "D", f"--output={run}"],
        ["--output", "elsewhere", "--data", "D", f"--output={run}"],
    ]


@pytest.mark.parametrize("form", range(3), ids=["space", "equals", "twice"])
def test_trainer_output_reads_every_form(tmp_path: Path, form: int) -> None:
    args = output_forms(tmp_path / "my run")[form]
    done = subprocess.run(
        ["bash", "-c", f'source {LAUNCH / "lib.sh"}; trainer_output "$@"', "lib", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (0, f"{tmp_path / 'my run'}\n")


def test_trainer_output_without_output_prints_nothing() -> None:
    done = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source {LAUNCH / "lib.sh"}; trainer_output "$@"', "lib", "--data", "D"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (0, "")


@pytest.mark.parametrize("form", range(3), ids=["space", "equals", "twice"])
def test_train_sh_logs_under_the_run_folder(tmp_path: Path, form: int) -> None:
    run = tmp_path / "run"
    launcher = tmp_path / "deepspeed"
    launcher.write_text('#!/bin/bash\necho "stand-in launcher: $*"\n')
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_DIR", "HOSTFILE", "NODE_RANK")}
    done = subprocess.run(
        [str(LAUNCH / "train.sh"), "--", *output_forms(run)[form]],
        env={**env, "DEEPSPEED": str(launcher)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = (run / "logs" / "launcher-node0.log").read_text()
    assert f"--enable_each_rank_log {run / 'logs'} --module pretrain.train" in log
    assert "stand-in launcher:" in log
    assert (run / "logs" / "deepspeed_env").is_file()
    assert not (tmp_path / "elsewhere").exists()


def restart_with_heartbeat(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    """restart.sh around a job that leaves rank 1's heartbeat in RUN and fails (status 7) without restarts."""
    heartbeat = tmp_path / "run" / "heartbeat"
    heartbeat.mkdir(parents=True)
    (heartbeat / "rank1").write_text("pid 4242 host gpu-node-07\n")
    return subprocess.run(
        [str(LAUNCH / "restart.sh"), "--max-restarts", "0", "--", "bash", "-c", "exit 7", "job", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("form", range(3), ids=["space", "equals", "twice"])
def test_restart_sh_reports_the_heartbeats_of_the_run_folder(tmp_path: Path, form: int) -> None:
    done = restart_with_heartbeat(tmp_path, output_forms(tmp_path / "run")[form])
    assert done.returncode == 7
    assert "restart.sh: last heartbeat of each rank, oldest first" in done.stderr
    assert "  rank1: pid 4242 host gpu-node-07, last beat " in done.stderr
    assert "giving up" in done.stderr


def test_restart_sh_without_output_reports_no_heartbeats(tmp_path: Path) -> None:
    done = restart_with_heartbeat(tmp_path, ["--data", "D"])
    assert done.returncode == 7
    assert "heartbeat" not in done.stderr
    assert "job exited with status 7 after 0 restarts" in done.stderr
