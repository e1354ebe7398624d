"""Checkpoint integrity: a checksum file (size and sha256 of every file of a checkpoint), written after all ranks finished.

Why: the COMPLETE marker proves a save *finished*; it cannot prove the bytes are still the ones written (a disk
error, a truncated copy, a file rewritten by hand). Rank 0 hashes every file of the tag folder after the
barrier that ends a save and writes the checksum file `MANIFEST.sha256.json` (atomically) before COMPLETE.

The hashing is off the training's critical path (`commit_in_background`): rank 0 hashes and commits in a thread
while every rank trains on. Nothing counts early: COMPLETE (what resume, export and pruning look for) is written
only after the checksum file, so a checkpoint whose hashing was cut short is an incomplete one, skipped with a
warning. The next save, and the end of the launch, wait for the commit before them. Resume verifies the
newest complete checkpoint and falls back to the previous one, naming the bad file; export and an explicit
`--resume PATH` refuse a checkpoint that does not verify.

A checkpoint written before checksum files existed (COMPLETE but none) is accepted with a warning.

The file keeps its on-disk name `MANIFEST.sha256.json` (only the code's names say "checksum file", so they are
not confused with a dataset's manifest.json): every checkpoint already written carries that name, and a run
folder written before this rename must still resume and verify.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from infra.files import file_sha256, temp_path, write_text
from pretrain.errors import PretrainError

CHECKSUM_FILE = "MANIFEST.sha256.json"


class CheckpointCorrupt(PretrainError):
    """A checkpoint file is missing, truncated or changed since the save; the message names the file.

    Told apart from other errors by newest_intact, which skips a corrupt checkpoint for an older intact one.
    """


def _files(tag_dir: Path) -> list[Path]:
    not_hashed = {CHECKSUM_FILE, temp_path(CHECKSUM_FILE).name, "COMPLETE"}
    return sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name not in not_hashed)


def write_checksum_file(tag_dir: str | os.PathLike) -> Path:
    """Record the size and sha256 of every file of a finished save in the tag's checksum file (atomic write)."""
    tag_dir = Path(tag_dir)
    files = {str(p.relative_to(tag_dir)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(tag_dir)}
    return write_text(tag_dir / CHECKSUM_FILE, json.dumps({"files": files}, indent=1))


def verify(tag_dir: str | os.PathLike) -> None:
    """Raise CheckpointCorrupt naming the first file whose size or sha256 differs from the checksum file."""
    tag_dir = Path(tag_dir)
    path = tag_dir / CHECKSUM_FILE
    if not path.is_file():
        warnings.warn(
            f"{tag_dir}: no {CHECKSUM_FILE} (checkpoint older than checksum files); not verified", stacklevel=2
        )
        return
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointCorrupt(f"{path}: unreadable checkpoint checksum file ({err})") from err
    for rel, want in files.items():
        _check_file(tag_dir / rel, want)


def _check_file(path: Path, want: dict) -> None:
    if not path.is_file():
        raise CheckpointCorrupt(f"{path}: listed in {CHECKSUM_FILE} but missing")
    size = path.stat().st_size
    if size != want["size"]:
        raise CheckpointCorrupt(f"{path}: {size} bytes, {CHECKSUM_FILE} says {want['size']} (truncated or rewritten)")
    actual = file_sha256(path)
    if actual != want["sha256"]:
        raise CheckpointCorrupt(
            f"{path}: sha256 mismatch ({CHECKSUM_FILE} {want['sha256'][:12]}…, file {actual[:12]}…); the file changed "
            "after the save"
        )


def newest_intact(root: Path, tags: list[str]) -> str | None:
    """The newest of `tags` (oldest first) that verifies; each corrupt one is skipped with a warning naming it."""
    for tag in reversed(tags):
        try:
            verify(root / tag)
            return tag
        except CheckpointCorrupt as err:
            warnings.warn(f"skipping corrupt checkpoint {root / tag}: {err}", stacklevel=2)
    return None


# --------------------------------------------------------------------------- the commit, in the background


class _Commit:
    """The one commit (checksum file, COMPLETE, `latest`, pruning) that may be running in rank 0's background."""

    thread: threading.Thread | None = None
    error: BaseException | None = None


def commit_in_background(commit: Callable[[], None]) -> None:
    """Run `commit` in a thread after the previous one finished (checkpoints complete in save order)."""
    wait_for_commit()

    def run() -> None:
        try:
            commit()
        except BaseException as err:  # re-raised by the next wait, on the main thread
            _Commit.error = err

    _Commit.thread = threading.Thread(target=run, name="checkpoint-commit", daemon=False)
    _Commit.thread.start()


def wait_for_commit() -> None:
    """Block until the background commit finished; raise its error if it failed."""
    thread, _Commit.thread = _Commit.thread, None
    if thread is not None:
        thread.join()
    error, _Commit.error = _Commit.error, None
    if error is not None:
        raise error
