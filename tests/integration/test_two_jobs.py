"""Two jobs on one host with the same rendezvous port: the second stops at once, naming the port; the first
finishes untouched (its losses equal an undisturbed run's).

For real, as a user would: `deepspeed --num_gpus 2 --master_port P --module pretrain.train` twice on CPU, with
different run folders; the second starts once the first is training. Before pretrain/rendezvous.py the second
job's rank 1 joined the first job's TCPStore and the first job died in a later collective.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.fault_support import logged_steps, wait_for
from support.launch import PYTHON, ROOT, TINY_TRAIN_SETTINGS, free_port, run_train, step_losses

pytestmark = pytest.mark.slow

SETS = (*TINY_TRAIN_SETTINGS, "train.global_batch_tokens=256", "train.max_steps=120")


def deepspeed_job(data: Path, run: Path, port: int) -> list[str]:
    argv = [str(Path(PYTHON).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port)]
    argv += ["--module", "pretrain.train", "--data", str(data), "--preset", "debug", "--output", str(run)]
    for item in SETS:
        argv += ["--set", item]
    return argv


def test_a_second_job_on_the_same_port_leaves_the_first_untouched(tiny_dataset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    port, first_run, second_run = free_port(), tmp_path / "first", tmp_path / "second"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            deepspeed_job(tiny_dataset, first_run, port), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            wait_for(lambda: logged_steps(first_run) >= 1 or first.poll() is not None, 600, "the first job's step 1")
            second = subprocess.run(
                deepspeed_job(tiny_dataset, second_run, port),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            first_was_running = first.poll() is None
            first.wait(timeout=900)
        finally:
            if first.poll() is None:
                first.kill()
    console = second.stdout + second.stderr
    assert second.returncode != 0, console[-3000:]
    assert f"rendezvous port {port}" in console or f"rendezvous port 127.0.0.1:{port}" in console, console[-3000:]
    assert "--master_port N" in console and "MASTER_PORT=N" in console
    assert first_was_running, "the first job ended before the second one tried the port: nothing was tested"
    first_output = (tmp_path / "first.log").read_text()
    assert first.returncode == 0, first_output[-3000:]
    assert logged_steps(second_run) == 0
    reference = run_train(2, tiny_dataset, tmp_path / "reference", SETS, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected, got = step_losses(tmp_path / "reference"), step_losses(first_run)
    assert sorted(got) == sorted(expected) == list(range(1, 121))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6), f"step {step}"
