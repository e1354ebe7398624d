"""pretrain/jit_ops.py: a JIT build lock left by a killed build is removed; one a live build holds is waited for."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from pretrain import jit_ops


def test_a_lock_nobody_holds_open_is_removed_with_a_warning(tmp_path, capsys):
    (tmp_path / "lock").touch()  # what a build killed midway leaves: the file, and no process holding it
    assert jit_ops.lock_holders(tmp_path / "lock") == []
    started = time.monotonic()
    jit_ops.clear_dead_lock(tmp_path, wait_s=60)
    assert time.monotonic() - started < 5, "a dead lock must be removed at once, not waited for"
    assert not (tmp_path / "lock").exists()
    assert f"removed {tmp_path / 'lock'}" in capsys.readouterr().err


def test_a_lock_held_open_by_a_live_build_is_waited_for_then_named(tmp_path):
    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # as torch's FileBaton holds it during a build
    try:
        assert jit_ops.lock_holders(lock) == [os.getpid()]
        assert not jit_ops.is_dead(lock)
        with pytest.raises(jit_ops.StaleBuildLock, match=str(lock)):
            jit_ops.clear_dead_lock(tmp_path, wait_s=0.6)
        assert lock.exists(), "a live build's lock must never be removed"
    finally:
        os.close(fd)


def test_without_proc_an_old_lock_counts_as_dead_and_a_young_one_as_live(tmp_path, monkeypatch):
    lock = tmp_path / "lock"
    lock.touch()
    monkeypatch.setattr(jit_ops, "lock_holders", lambda _: None)  # another user's processes: /proc cannot tell
    assert not jit_ops.is_dead(lock)
    assert jit_ops.is_dead(lock, now=time.time() + jit_ops.LIVE_BUILD_WAIT_S + 1)


def test_the_build_slot_is_an_flock_that_excludes_a_second_holder(tmp_path):
    with jit_ops.build_slot(tmp_path), open(tmp_path / "pretrain.flock") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "pretrain.flock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit


def test_the_environments_ninja_comes_first_on_path(tmp_path, monkeypatch):
    """Two ninjas hash the build log differently: every build must use the environment's own."""
    (tmp_path / "ninja").write_text("")
    monkeypatch.setattr(jit_ops.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    jit_ops.prefer_environment_ninja()
    assert os.environ["PATH"] == f"{tmp_path}:/usr/bin:/bin"
    jit_ops.prefer_environment_ninja()  # already first: unchanged
    assert os.environ["PATH"] == f"{tmp_path}:/usr/bin:/bin"
    (tmp_path / "ninja").unlink()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    jit_ops.prefer_environment_ninja()  # no ninja of its own: PATH decides
    assert os.environ["PATH"] == "/usr/bin:/bin"
