"""The run folder under real launches: a dead holder's lock taken over, Ctrl-C to a 2-rank job, relaunches refused or
recorded (the in-process rules are tests/unit/test_run_folder.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.run_folders import write_lock

from pretrain import run_lock

# --------------------------------------------------------------------------- the lock


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- the relaunch check


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- Ctrl-C


# --------------------------------------------------------------------------- for real: 2 CPU ranks


def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    pid = dead_pid()
    write_lock(tmp_path, socket.gethostname(), pid, age_s=0)  # fresh heartbeat, but its process is gone
    with pytest.warns(UserWarning, match=f"process {pid} no longer runs on this host"):
        run_lock.acquire_lock(tmp_path, stale_s=3600).release()


@pytest.mark.slow
def test_ctrl_c_saves_then_a_wrong_relaunch_changes_nothing_and_a_compatible_one_is_recorded(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from support.fault_support import CPU_ENV, logged_steps, wait_for
    from support.launch import ROOT, run_train, step_losses, train_command

    run = tmp_path / "run"
    sets = ("train.micro_batch_size=2", "train.global_batch_tokens=256", "train.max_steps=10000")
    # a terminal's Ctrl-C: SIGINT to every process of the job's process group (launcher and ranks)
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    job = subprocess.Popen(
        train_command(2, tiny_dataset, run, sets),
        cwd=ROOT,
        env={**os.environ, **CPU_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: logged_steps(run) >= 2, 300, "two logged steps")
        os.killpg(job.pid, signal.SIGINT)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        log.close()
    out = (tmp_path / "first.log").read_text()
    last = max(step_losses(run))
    assert (run / "checkpoints" / "latest").read_text() == f"step{last:08d}", out[-3000:]
    assert (run / "checkpoints" / f"step{last:08d}" / "COMPLETE").is_file()
    assert out.count("Ctrl-C: saving a checkpoint at the end of this step") == 1
    assert "KeyboardInterrupt" not in out and "pretrain/train.py" not in out  # no rank traceback (torchrun's own may)
    assert not (run / "LOCK").exists()

    # the tokenizer of the data and seq_len changed: refused in one line, every file as it was
    other_data = tmp_path / "other_data"
    other_data.mkdir()
    for name in ("shards", "tokenizer"):
        (other_data / name).symlink_to(tiny_dataset / name)
    data_manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    data_manifest["tokenizer"]["sha256"] = "f" * 64
    (other_data / "manifest.json").write_text(json.dumps(data_manifest))
    before = folder_hashes(run)
    cmd = [sys.executable, "-m", "pretrain.train", "--data", str(other_data), "--preset", "debug"]
    cmd += ["--output", str(run), "--set", "model.seq_len=64", "--set", "train.ds_config=ds_configs/zero3_cpu.json"]
    wrong = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **CPU_ENV}, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    assert wrong.stderr.count("\n") == 1 and wrong.stderr.startswith("pretrain.train: rank 0: ")
    assert "model.seq_len: 32 -> 64" in wrong.stderr
    assert f"-> {'f' * 12}…" in wrong.stderr
    assert folder_hashes(run) == before

    # more steps: resumes, RUN/config.yaml untouched, the change recorded as launch 2
    config_yaml = (run / "config.yaml").read_bytes()
    more = run_train(2, tiny_dataset, run, (*sets[:2], f"train.max_steps={last + 1}"))
    assert more.returncode == 0, more.stderr[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'step{last:08d}'}" in more.stdout
    assert (run / "config.yaml").read_bytes() == config_yaml
    record = yaml.safe_load((run / "launches" / "002.yaml").read_text())
    assert record["changes_from_config_yaml"] == {"train.max_steps": [10000, last + 1]}
    assert sorted(p.name for p in (run / "launches").iterdir()) == ["001.yaml", "002.yaml"]
    assert max(step_losses(run)) == last + 1
