"""infra/files.py: the one atomic write leaves the whole new file or the untouched old one, nothing else."""

from __future__ import annotations

import hashlib
import os

import pytest

from infra import files


class Interrupted(Exception):
    """Stands for whatever stops a writer half way (disk full, a bug, Ctrl-C)."""


def _dir_listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("mode, chunks", [("w", ["héllo ", "world\n"]), ("wb", [b"\x00\x01", b"\xff" * 70000])])
def test_content_is_complete_after_success(tmp_path, mode, chunks):
    target = tmp_path / "out.bin"
    with files.atomic_write(target, mode) as f:
        for chunk in chunks:
            f.write(chunk)
        assert not target.exists()  # nothing under the real name until the write is whole
    want = "".join(chunks).encode() if mode == "w" else b"".join(chunks)
    assert target.read_bytes() == want
    assert _dir_listing(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_an_error_mid_write_leaves_the_old_file_and_no_temporary_one(tmp_path, error):
    target = tmp_path / "marker.json"
    target.write_text('{"old": true}')
    with pytest.raises(error), files.atomic_write(target) as f:
        f.write('{"new": ')
        f.flush()
        assert files.temp_path(target).read_text() == '{"new": '  # the half file exists, hidden
        raise error()
    assert target.read_text() == '{"old": true}'
    assert _dir_listing(tmp_path) == ["marker.json"]


def test_an_error_before_any_file_existed_leaves_nothing(tmp_path):
    with pytest.raises(Interrupted), files.atomic_write(tmp_path / "shard.arrow", "wb") as f:
        f.write(b"partial")
        raise Interrupted()
    assert _dir_listing(tmp_path) == []


def test_a_stale_temporary_file_from_a_killed_writer_is_replaced(tmp_path):
    target = tmp_path / "latest"
    files.temp_path(target).write_text("half of an old wri")
    files.write_text(target, "step00000004")
    assert target.read_text() == "step00000004"
    assert _dir_listing(tmp_path) == ["latest"]


def test_write_text_and_bytes_replace_an_existing_file(tmp_path):
    assert files.write_text(tmp_path / "a.txt", "one") == tmp_path / "a.txt"
    files.write_text(tmp_path / "a.txt", "two")
    files.write_bytes(tmp_path / "b.bin", b"\x00two")
    assert (tmp_path / "a.txt").read_text() == "two" and (tmp_path / "b.bin").read_bytes() == b"\x00two"


def test_only_whole_file_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="'a'"), files.atomic_write(tmp_path / "x", "a"):
        pass
    assert _dir_listing(tmp_path) == []


def test_file_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    assert files.file_sha256(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()
