"""Dataset checksums in the background: spread over ranks, cached on size+mtime, fatal before a checkpoint counts;
the checkpoint's own hash committed after the save; the run folder's lock beating before any long check."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from data_pipeline.shards import ShardError, read_manifest
from pretrain import checkpoint, ckpt_integrity, run_folder, run_lock
from pretrain.data_verify import CACHE_FILE, ShardVerifier, hash_share, shard_rows


@pytest.fixture
def data(tiny_dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_dataset, copy)
    return copy


def _verifier(run: Path, data: Path) -> ShardVerifier:
    run.mkdir(exist_ok=True)
    return ShardVerifier(run, [(data, read_manifest(data))], rank=0, world_size=1)


def test_first_launch_hashes_every_shard_and_the_next_none(data: Path, tmp_path: Path) -> None:
    first = _verifier(tmp_path / "run", data)
    assert (first.total, first.cached, len(first.to_hash)) == (2, 0, 2)
    first.finish()
    cached = json.loads((tmp_path / "run" / CACHE_FILE).read_text())
    assert sorted(Path(p).name for p in cached) == ["train-00000.arrow", "validation-00000.arrow"]
    second = _verifier(tmp_path / "run", data)
    assert (second.cached, second.to_hash, second.done) == (2, [], True)


def test_a_shard_rewritten_after_verification_is_hashed_again_and_refused(data: Path, tmp_path: Path) -> None:
    _verifier(tmp_path / "run", data).finish()
    shard = data / "shards" / "train-00000.arrow"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size; a new mtime
    shard.write_bytes(bytes(raw))
    os.utime(shard, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = _verifier(tmp_path / "run", data)
    assert [p.name for p, _ in again.to_hash] == ["train-00000.arrow"]
    with pytest.raises(ShardError, match=rf"{shard}: checksum mismatch.*rebuild the dataset"):
        again.finish()


def test_ranks_hash_disjoint_shares_that_cover_every_shard(data: Path) -> None:
    rows = shard_rows(data, read_manifest(data)) * 3  # 6 rows over 4 ranks: 2, 2, 1, 1
    shares = [hash_share(rows, rank, 4)["verified"] for rank in range(4)]
    assert sum(len(rows[rank::4]) for rank in range(4)) == len(rows)
    assert set().union(*shares) == {str(p) for p, _ in rows}
    assert all(share[path]["size"] == Path(path).stat().st_size for share in shares for path in share)


def test_checkpoint_commit_runs_after_save_returns_and_completes_before_the_wait(tmp_path: Path) -> None:
    """The commit runs on another thread (the save returns at once); wait_for_commit returns only once COMPLETE,
    written after the checksum file, is there."""
    tag = tmp_path / "checkpoints" / "step00000001"
    tag.mkdir(parents=True)
    (tag / "model_states.pt").write_bytes(os.urandom(1 << 20))
    release = threading.Event()
    threads = []

    def commit() -> None:
        threads.append(threading.current_thread())
        release.wait(30)
        checkpoint._commit(tag.parent, tag.name)

    ckpt_integrity.commit_in_background(commit)
    assert not (tag / checkpoint.COMPLETE).exists()
    release.set()
    ckpt_integrity.wait_for_commit()
    assert threads[0] is not threading.main_thread()
    assert (tag / checkpoint.COMPLETE).is_file() and (tag / ckpt_integrity.CHECKSUM_FILE).is_file()
    ckpt_integrity.verify(tag)


def test_a_failed_background_commit_is_raised_by_the_next_wait() -> None:
    def commit() -> None:
        raise OSError(28, "No space left on device")

    ckpt_integrity.commit_in_background(commit)
    with pytest.raises(OSError, match="No space left"):
        ckpt_integrity.wait_for_commit()
    ckpt_integrity.wait_for_commit()  # reported once


def test_lock_heartbeat_beats_while_the_launch_check_runs(tmp_path: Path, monkeypatch) -> None:
    """check_launch hashes the checkpoint it resumes: the lock's heartbeat must already be running then."""
    run = tmp_path / "run"
    seen = {}

    def slow_check(run_dir, *args, **kwargs):
        before = (run_dir / run_lock.LOCK).stat().st_mtime_ns
        time.sleep(0.5)
        seen["touched"] = (run_dir / run_lock.LOCK).stat().st_mtime_ns > before
        return None

    monkeypatch.setattr(run_lock.RunLock.heartbeat, "__defaults__", (0.05,))
    monkeypatch.setattr(run_folder, "check_launch", slow_check)
    claim = run_folder.claim(run, {"preset": "debug"}, {}, "auto", 120.0)
    claim.lock.release()
    assert seen["touched"]
