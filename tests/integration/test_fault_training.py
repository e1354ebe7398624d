"""A rank SIGKILLed mid-step: the launcher fails the job naming the rank, launch/restart.sh relaunches it with
`--resume auto`, and the resumed run's losses equal an uninterrupted run's, step for step.

The kill is real (SIGKILL, sent by the rank to itself from tests/support/fault_inject_train.py just before step 5's
loss all-reduce, so the other rank is left blocked inside a collective); only the first launch
is affected, so the relaunch runs clean from the newest complete checkpoint (step 4).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from support.fault_support import CPU_ENV, injected_command, reference_run_dir
from support.launch import ROOT, step_losses
from test_train import reference_losses

from pretrain.metrics import read_metrics
from pretrain.spikes import SpikeDetector

pytestmark = pytest.mark.slow

RESTART = str(ROOT / "launch" / "restart.sh")


def test_sigkilled_rank_is_named_restarted_and_resumes_exactly(
    tiny_dataset: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reference = reference_run_dir(tiny_dataset, tmp_path_factory)
    run = tmp_path / "run"
    env = {**os.environ, **CPU_ENV, "FAULT_KILL_IN_STEP": "1:5", "PYTHONPATH": str(ROOT)}
    cmd = [RESTART, "--max-restarts", "2", "--backoff", "1", "--", *injected_command(tiny_dataset, run)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # the launcher (torch elastic) ended the first job, naming the killed rank and the signal
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out) and "SIGKILL" in out, out[-4000:]
    assert "restart.sh: job exited with status 1; restart 1/2" in out
    # restart.sh lists the heartbeats: the SIGKILLed rank stopped beating first
    assert out.index("  rank1: pid") < out.index("  rank0: pid"), out[-4000:]
    assert "resumed from" in out and "step 4," in out
    got, want = step_losses(run), step_losses(reference)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    # the spike statistics were checkpointed at step 4 and restored: they cover all 6 steps, not the last 2
    states = torch.load(
        run / "checkpoints" / "step00000006" / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False
    )
    assert states["spikes"]["seen"] + states["spikes"]["count"] == 6
    diffs = {s: (got[s], want[s]) for s in want if not math.isclose(got[s], want[s], rel_tol=1e-6)}
    assert not diffs, f"step: (restarted, uninterrupted) {diffs}"


def test_restart_loop_gives_up_after_max_restarts_and_keeps_the_status(tmp_path: Path) -> None:
    """A job that always dies: restart.sh relaunches it --max-restarts times with --resume auto, then fails."""
    calls = tmp_path / "calls"
    job = tmp_path / "job.sh"
    job.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nkill -9 $$\n')
    job.chmod(0o755)
    proc = subprocess.run(
        [RESTART, "--max-restarts", "2", "--backoff", "0", "--", str(job), "--output", "RUN"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 137
    assert calls.read_text().splitlines() == [
        "--output RUN",
        "--output RUN --resume auto",
        "--output RUN --resume auto",
    ]
    assert "after 2 restarts" in proc.stderr


@pytest.mark.parametrize("status", [0, 2, 3])
def test_restart_loop_does_not_retry_success_or_deterministic_failures(tmp_path: Path, status: int) -> None:
    """0 done; 2 bad config or path; 3 train.max_bad_steps: a relaunch would fail the same way."""
    calls = tmp_path / "calls"
    job = tmp_path / "job.sh"
    job.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nexit {status}\n')
    job.chmod(0o755)
    proc = subprocess.run([RESTART, "--backoff", "0", "--", str(job)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == status
    assert len(calls.read_text().splitlines()) == 1


def test_loss_spike_is_counted_logged_and_its_update_skipped(tiny_dataset: Path, tmp_path: Path) -> None:
    """Step 6's loss x30 on every rank: detected, logged, counted, and no update (as plain PyTorch skipping it)."""
    sets = ("train.micro_batch_size=2", "train.global_batch_tokens=256", "train.max_steps=8")
    spike = ("train.spike_z=4", "train.spike_warmup=3", "train.spike_skip=true")
    run = tmp_path / "run"
    env = {**os.environ, **CPU_ENV, "FAULT_SPIKE_STEPS": "6", "PYTHONPATH": str(ROOT)}
    cmd = injected_command(tiny_dataset, run, (*sets, *spike))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("loss spike:") == 1 and "update skipped (train.spike_skip)" in proc.stdout
    assert "step 6: loss spike:" in proc.stdout and "non-finite" not in proc.stdout  # a spike skip is not non-finite
    last = [row for row in read_metrics(run) if "loss_spikes" in row][-1]  # the final row is the validation one
    assert float(last["loss_spikes"]) == 1 and float(last["skipped_steps"]) == 1
    got, want = step_losses(run), reference_losses(tiny_dataset, sets, 8, skip={6})
    assert math.isclose(got[6], 30 * want[6], rel_tol=1e-4)
    diffs = {s: (got[s], want[s]) for s in want if s != 6 and not math.isclose(got[s], want[s], rel_tol=2e-5)}
    assert not diffs, f"step: (zero3 with spike skipped, reference skipping step 6) {diffs}"


def test_spike_detector_waits_for_warmup_and_keeps_spikes_out_of_its_statistics() -> None:
    detector = SpikeDetector(z=4.0, ema=0.9, warmup=5)
    losses = [5.0, 4.9, 5.1, 5.0, 4.95, 5.05]
    assert all(detector.observe(x) is None for x in losses)
    mean, var = detector.mean, detector.var
    assert detector.observe(50.0) == pytest.approx(mean + 4.0 * var**0.5) and detector.count == 1
    assert (detector.mean, detector.var) == (mean, var)  # the spike did not move the bar
    assert detector.observe(5.02) is None and detector.observe(float("nan")) is None
    restored = SpikeDetector(z=4.0, ema=0.9, warmup=5)
    restored.load_state_dict(detector.state_dict())
    assert restored.threshold() == detector.threshold() and restored.count == 1
    early = SpikeDetector(z=4.0, warmup=5)
    assert all(early.observe(x) is None for x in (5.0, 50.0, 500.0)) and early.count == 0  # still in warmup
    assert SpikeDetector(z=0.0).observe(1e9) is None  # spike_z=0 disables
