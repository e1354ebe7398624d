"""The run folder (pretrain/run_folder.py): its lock, the check of a relaunch against its checkpoints, the launch
records; and, for real with 2 CPU ranks, Ctrl-C, a refused relaunch that changes no file, a compatible one that is
recorded instead of rewriting RUN/config.yaml.

Lock staleness is tested with lock files written by hand (an old mtime, a dead pid), never by waiting.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
from pathlib import Path

import pytest
import yaml
from support.run_folders import TOKENIZER, manifest, write_lock

from infra.errors import EXIT_INTERRUPTED
from pretrain import run_folder, run_lock
from pretrain.checkpoint import CheckpointRef
from pretrain.config import load_config
from pretrain.run_folder import RunFolderError
from pretrain.run_lock import RunLocked

# --------------------------------------------------------------------------- the lock


def test_a_live_holder_is_refused_by_name(tmp_path: Path) -> None:
    lock = run_lock.acquire_lock(tmp_path, stale_s=3600)
    holder = json.loads((tmp_path / "LOCK").read_text())
    with pytest.raises(RunLocked) as refused:
        run_lock.acquire_lock(tmp_path, stale_s=3600)
    message = str(refused.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started {holder['started']}" in message
    assert "another job is using this run folder" in message
    lock.release()
    assert not (tmp_path / "LOCK").exists()
    run_lock.acquire_lock(tmp_path, stale_s=60).release()  # free again


def test_a_fresh_lock_of_another_node_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = write_lock(tmp_path, "gpu-node-07", 4242, age_s=5)
    before = path.read_bytes()
    with pytest.raises(RunLocked, match="host gpu-node-07, pid 4242"):
        run_lock.acquire_lock(tmp_path, stale_s=3600)
    assert path.read_bytes() == before


def test_a_stale_heartbeat_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    write_lock(tmp_path, "gpu-node-07", 4242, age_s=600)
    with pytest.warns(UserWarning, match=r"taking over the lock of a dead job \(host gpu-node-07, pid 4242.*600 s old"):
        lock = run_lock.acquire_lock(tmp_path, stale_s=60)
    assert json.loads((tmp_path / "LOCK").read_text())["pid"] == os.getpid() and lock.still_ours()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK"]  # the dead lock moved aside and removed


def test_an_earlier_attempt_of_the_same_slurm_job_is_taken_over(tmp_path: Path, monkeypatch) -> None:
    """A requeued job (SLURM_RESTART_COUNT 1) on another first node finds the lock its attempt 0 left, fresh."""
    monkeypatch.delenv("PRETRAIN_RESTART_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    write_lock(tmp_path, "gpu-node-07", 4242, attempt={"of": "SLURM_JOB_ID=77", "number": 0})
    with pytest.raises(RunLocked):  # the same attempt: a live twin, refused
        run_lock.acquire_lock(tmp_path, stale_s=3600)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.warns(UserWarning, match="it was attempt 0 of SLURM_JOB_ID=77, this is attempt 1"):
        run_lock.acquire_lock(tmp_path, stale_s=3600).release()


def test_release_never_removes_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    lock = run_lock.acquire_lock(tmp_path, stale_s=60)
    write_lock(tmp_path, "gpu-node-07", 4242)  # taken over by another job after ours looked dead
    assert not lock.still_ours()
    lock.release()
    assert json.loads((tmp_path / "LOCK").read_text())["host"] == "gpu-node-07"


# --------------------------------------------------------------------------- the relaunch check


def debug_config(*sets: str) -> dict:
    return load_config("debug", None, ["model.vocab_size=256", *sets]).to_dict()


def fake_run(run: Path, config: dict, step: int = 4) -> Path:
    """A run folder as the trainer leaves it: config.yaml, one complete checkpoint with its client_state.json."""
    tag = run / "checkpoints" / f"step{step:08d}"
    tag.mkdir(parents=True)
    (tag / "COMPLETE").write_text("{}")
    client = {"step": step, "config": config, "tokenizer": TOKENIZER}
    (tag / "client_state.json").write_text(json.dumps(client))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tag


@pytest.mark.filterwarnings("ignore:.*MANIFEST")  # a hand-made checkpoint has no checksum file
def test_a_relaunch_that_does_not_fit_the_checkpoint_names_every_difference(tmp_path: Path) -> None:
    fake_run(tmp_path, debug_config())
    changed = debug_config("model.seq_len=64", "model.vocab_size=512", "data.seed=7", "train.max_steps=99")
    with pytest.raises(RunFolderError) as refused:
        run_folder.check_launch(tmp_path, changed, manifest("b" * 64), "auto")
    message = str(refused.value)
    for difference in ("model.seq_len: 128 -> 64", "model.vocab_size: 256 -> 512", "data.seed: 1234 -> 7"):
        assert difference in message
    assert f"tokenizer sha256: {'a' * 12}… -> {'b' * 12}…" in message
    assert "train.max_steps" not in message and "Nothing in" in message and "another --output" in message


@pytest.mark.filterwarnings("ignore:.*MANIFEST")
def test_a_compatible_relaunch_is_recorded_and_config_yaml_kept(tmp_path: Path) -> None:
    tag = fake_run(tmp_path, debug_config())
    config_yaml = (tmp_path / "config.yaml").read_bytes()
    more = debug_config("train.max_steps=40", "train.eval_interval=5")
    assert run_folder.check_launch(tmp_path, more, manifest(), "auto") == CheckpointRef(tag.parent, tag.name)
    path, changed = run_folder.record_launch(tmp_path, more, CheckpointRef(tag.parent, tag.name))
    assert changed == {"train.eval_interval": [10, 5], "train.max_steps": [20, 40]}
    assert (tmp_path / "config.yaml").read_bytes() == config_yaml
    record = yaml.safe_load(path.read_text())
    assert path.name == "001.yaml" and record["resumes"] == str(tag) and record["config"] == more
    assert run_folder.record_launch(tmp_path, more, None)[0].name == "002.yaml"


@pytest.mark.filterwarnings("ignore:.*MANIFEST")
def test_resume_none_over_checkpoints_is_refused(tmp_path: Path) -> None:
    fake_run(tmp_path, debug_config())
    with pytest.raises(RunFolderError, match=r"holds checkpoints up to step00000004; --resume none would train"):
        run_folder.check_launch(tmp_path, debug_config(), manifest(), "none")


def test_a_folder_without_checkpoints_takes_the_new_config(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(debug_config("model.seq_len=64")))  # a launch that died
    assert run_folder.check_launch(tmp_path, debug_config(), manifest(), "auto") is None
    run_folder.record_launch(tmp_path, debug_config(), None)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == debug_config()


def test_claim_that_fails_its_check_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    fake_run(tmp_path, debug_config())
    before = folder_hashes(tmp_path)
    with pytest.raises(RunFolderError), pytest.warns(UserWarning, match="MANIFEST"):
        run_folder.claim(tmp_path, debug_config("model.n_layer=3"), manifest(), "auto", stale_s=60)
    assert folder_hashes(tmp_path) == before


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- Ctrl-C


def test_first_ctrl_c_requests_a_save_a_second_one_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrain import signals

    now = [100.0]
    flag = signals.PreemptionFlag(rank=0, clock=lambda: now[0])
    exits: list[int] = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    flag._interrupt(signal.SIGINT, None)
    assert flag.requested and flag.reason == "Ctrl-C" and exits == []
    now[0] += 0.01
    flag._interrupt(signal.SIGINT, None)  # the same key press, relayed by the launcher
    assert exits == []
    flag._handle(signal.SIGTERM, None)  # the launcher's SIGTERM after Ctrl-C never aborts
    assert exits == [] and flag.reason == "Ctrl-C"
    now[0] += 3.0
    flag._interrupt(signal.SIGINT, None)
    assert exits == [EXIT_INTERRUPTED]


# --------------------------------------------------------------------------- for real: 2 CPU ranks
