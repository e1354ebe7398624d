"""Two jobs on one host with the same rendezvous port: the second stops at once, naming the port; the first
finishes untouched (its losses equal an undisturbed run's).

For real, as a user would: `deepspeed --num_gpus 2 --master_port P` twice on CPU, with different run folders. The
first job holds before its step 2 (tests/support/hold_train.py) until the second has exited, so the second meets
a job that is certainly up and training however slowly the machine runs; the first then trains steps 2 and 3
with the same store and process group. The second is the plain `--module pretrain.train`. Before
pretrain/rendezvous.py the second job's rank 1 joined the first job's TCPStore and the first job died in a later
collective. The undisturbed run is the session's deepspeed launcher run (support/runs.py), same settings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import psutil
import pytest
from support.fault_support import logged_steps, wait_for
from support.launch import PYTHON, ROOT, TINY_TRAIN_SETTINGS, free_port, step_losses
from support.runs import DEEPSPEED_LAUNCHER_SETS

pytestmark = pytest.mark.slow

HOLD = str(ROOT / "tests" / "support" / "hold_train.py")
SETS = (*TINY_TRAIN_SETTINGS, *DEEPSPEED_LAUNCHER_SETS)  # 3 steps: the undisturbed run's settings


def deepspeed_job(entry: list[str], data: Path, run: Path, port: int) -> list[str]:
    argv = [str(Path(PYTHON).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port), *entry]
    argv += ["--data", str(data), "--preset", "debug", "--output", str(run)]
    for item in SETS:
        argv += ["--set", item]
    return argv


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it (its ranks would otherwise hold, or train on, orphaned)."""
    launcher = psutil.Process(pid)
    for proc in [*launcher.children(recursive=True), launcher]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def test_a_second_job_on_the_same_port_leaves_the_first_untouched(
    tiny_dataset: Path, tmp_path: Path, deepspeed_launcher_launch: tuple[subprocess.CompletedProcess, Path]
) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    port, first_run, second_run, gate = free_port(), tmp_path / "first", tmp_path / "second", tmp_path / "gate"
    gate.mkdir()
    held = [gate / "held-rank0", gate / "held-rank1"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            deepspeed_job([HOLD], tiny_dataset, first_run, port),
            cwd=ROOT,
            env={**env, "HOLD_AT_STEP": f"2:{gate}"},
            stdout=log,
            stderr=log,
        )
        try:
            wait_for(lambda: all(p.is_file() for p in held) or first.poll() is not None, 600, "the first job's step 2")
            second = subprocess.run(
                deepspeed_job(["--module", "pretrain.train"], tiny_dataset, second_run, port),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            first_was_running = first.poll() is None
            (gate / "release").touch()
            first.wait(timeout=600)
        finally:
            if first.poll() is None:
                kill_tree(first.pid)
    console = second.stdout + second.stderr
    assert second.returncode != 0, console[-3000:]
    assert f"rendezvous port {port}" in console or f"rendezvous port 127.0.0.1:{port}" in console, console[-3000:]
    assert "--master_port N" in console and "MASTER_PORT=N" in console
    first_output = (tmp_path / "first.log").read_text()
    assert first_was_running, "the first job ended before the second one tried the port:\n" + first_output[-3000:]
    assert first.returncode == 0, first_output[-3000:]
    assert logged_steps(second_run) == 0
    reference, reference_run = deepspeed_launcher_launch
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected, got = step_losses(reference_run), step_losses(first_run)
    assert sorted(got) == sorted(expected) == [1, 2, 3]
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6), f"step {step}"
