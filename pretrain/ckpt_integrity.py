"""Checkpoint integrity: a sha256 manifest of every file of a checkpoint, written after all ranks finished.

Why: the COMPLETE marker proves a save *finished*; it cannot prove the bytes are still the ones written (a disk
error, a truncated copy, a file rewritten by hand). Rank 0 hashes every file of the tag folder after the
barrier that ends a save and writes `MANIFEST.sha256.json` (atomically) before COMPLETE. Resume verifies the
newest complete checkpoint and falls back to the previous one, naming the bad file; export and an explicit
`--resume PATH` refuse a checkpoint that does not verify.

A checkpoint written before manifests existed (COMPLETE but no manifest) is accepted with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from data_pipeline.shards import file_sha256
from pretrain.errors import PretrainError

MANIFEST = "MANIFEST.sha256.json"
NOT_HASHED = {MANIFEST, "COMPLETE"}


class CheckpointCorrupt(PretrainError):
    """A checkpoint file is missing, truncated or changed since the save; the message names the file.

    Told apart from other errors by newest_intact, which skips a corrupt checkpoint for an older intact one.
    """


def _files(tag_dir: Path) -> list[Path]:
    return sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name not in NOT_HASHED)


def write_manifest(tag_dir: str | os.PathLike) -> Path:
    """Hash every file of a finished save into MANIFEST.sha256.json (temp file, fsync, rename)."""
    tag_dir = Path(tag_dir)
    files = {str(p.relative_to(tag_dir)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(tag_dir)}
    tmp = tag_dir / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, tag_dir / MANIFEST)
    return tag_dir / MANIFEST


def verify(tag_dir: str | os.PathLike) -> None:
    """Raise CheckpointCorrupt naming the first file whose size or sha256 differs from the manifest."""
    tag_dir = Path(tag_dir)
    path = tag_dir / MANIFEST
    if not path.is_file():
        warnings.warn(f"{tag_dir}: no {MANIFEST} (checkpoint older than manifests); not verified", stacklevel=2)
        return
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointCorrupt(f"{path}: unreadable checkpoint manifest ({err})") from err
    for rel, want in files.items():
        _check_file(tag_dir / rel, want)


def _check_file(path: Path, want: dict) -> None:
    if not path.is_file():
        raise CheckpointCorrupt(f"{path}: listed in {MANIFEST} but missing")
    size = path.stat().st_size
    if size != want["size"]:
        raise CheckpointCorrupt(f"{path}: {size} bytes, manifest says {want['size']} (truncated or rewritten)")
    actual = file_sha256(path)
    if actual != want["sha256"]:
        raise CheckpointCorrupt(
            f"{path}: sha256 mismatch (manifest {want['sha256'][:12]}…, file {actual[:12]}…); the file changed "
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
