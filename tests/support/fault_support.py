"""Shared pieces of the fault-injection tests: an uninterrupted reference run, launching and killing ranks.

The reference run is the ground truth every interrupted run must reproduce: 2 CPU ranks, debug preset, 6 steps,
a checkpoint every 2 steps. It is built once per session (`reference_run_dir`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from support.launch import ROOT, run_train, step_losses, train_command

FAULT_SETS = (
    "train.micro_batch_size=2",
    "train.global_batch_tokens=256",
    "train.max_steps=6",
    "train.save_interval=2",
    "train.keep_last=5",
    "train.spike_z=6",  # spike detection on (its judgement and its checkpointed statistics are exercised)
    "train.spike_warmup=2",
)
CPU_ENV = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
INJECT = str(
    ROOT / "tests" / "support" / "fault_inject_train.py"
)  # the trainer with fault hooks patched in from outside


_REFERENCE: dict[Path, Path] = {}


def reference_run_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 2-rank run (checkpoints at steps 2, 4, 6) whose losses interrupted runs must match.

    Built once per session and shared by the fault test modules (each wraps it in its own fixture).
    """
    if data not in _REFERENCE:
        run = tmp_path_factory.mktemp("fault_reference") / "run"
        proc = run_train(2, data, run, FAULT_SETS)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sorted(step_losses(run)) == [1, 2, 3, 4, 5, 6]
        _REFERENCE[data] = run
    return _REFERENCE[data]


def injected_command(data: Path, run: Path, sets: tuple[str, ...] = FAULT_SETS) -> list[str]:
    """The 2-rank launch command with tests/support/fault_inject_train.py in place of `-m pretrain.train`."""
    cmd = train_command(2, data, run, sets)
    at = cmd.index("-m", cmd.index("torch.distributed.run") + 1)
    cmd[at : at + 2] = [INJECT]
    return cmd


def start_train(data: Path, run: Path, sets: tuple[str, ...] = FAULT_SETS, env: dict | None = None) -> subprocess.Popen:
    """Launch the 2-rank trainer (torch elastic launcher) without waiting; output goes to RUN.log."""
    run.parent.mkdir(parents=True, exist_ok=True)
    log = open(run.parent / f"{run.name}.log", "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        train_command(2, data, run, sets),
        cwd=ROOT,
        env={**os.environ, **CPU_ENV, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rank_processes(launcher_pid: int) -> dict[int, psutil.Process]:
    """The trainer processes under a launcher, by their RANK environment variable."""
    ranks = {}
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if "pretrain.train" in " ".join(child.cmdline()) and "torch.distributed.run" not in child.cmdline():
                ranks[int(child.environ().get("RANK", "-1"))] = child
        except psutil.NoSuchProcess:
            continue
    return ranks


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def logged_steps(run: Path) -> int:
    """Highest step in RUN/metrics.csv so far (0 when none)."""
    try:
        return max(step_losses(run), default=0)
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def kill_rank(launcher: subprocess.Popen, rank: int, sig: int = signal.SIGKILL) -> int:
    """Send `sig` to one rank's process; returns its pid."""
    wait_for(lambda: rank in rank_processes(launcher.pid), 60, f"rank {rank} to start")
    proc = rank_processes(launcher.pid)[rank]
    os.kill(proc.pid, sig)
    return proc.pid


def output(run: Path) -> str:
    return (run.parent / f"{run.name}.log").read_text(errors="replace")


PIPELINE_FAULTS = ROOT / "tests" / "support" / "pipeline_faults"  # its sitecustomize.py injects the pipeline's faults


def pipeline_fault_env(**variables: str) -> dict[str, str]:
    """This environment with tests/support/pipeline_faults first on PYTHONPATH and the given PIPELINE_* variables."""
    path = os.pathsep.join(p for p in (str(PIPELINE_FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **variables}
