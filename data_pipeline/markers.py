"""Stage completion markers: what makes a rerun skip finished work and refuse to mix different inputs.

A marker `DIR/.stages/<stage>.json` is written last, atomically, after the stage's outputs are complete. It
records the stage's fingerprint (its config section and its inputs' path/size/mtime) and the sha256 of every
output. A rerun skips the stage only when the fingerprint matches and every output still hashes the same; a
marker with another fingerprint is an error (the inputs or recipe changed since DIR was written), never a
silent mix of old and new outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from data_pipeline.errors import PipelineError
from infra.files import file_sha256, write_text

MARKER_DIR = ".stages"


class StageMismatch(PipelineError):
    """The output folder was produced from other inputs or another recipe."""


def fingerprint(stage: str, config: dict, inputs: list[str | os.PathLike]) -> str:
    """Hash of the stage name, its config section and each input file's path, size and mtime."""
    digest = hashlib.sha256(json.dumps([stage, config], sort_keys=True, default=str).encode())
    for path in sorted(str(p) for p in inputs):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def marker_path(output_dir: str | os.PathLike, stage: str) -> Path:
    return Path(output_dir) / MARKER_DIR / f"{stage}.json"


def is_complete(output_dir: str | os.PathLike, stage: str, stage_fingerprint: str) -> bool:
    """True if `stage` finished with this fingerprint and its outputs are intact; raises on a fingerprint clash."""
    path = marker_path(output_dir, stage)
    if not path.is_file():
        return False
    marker = json.loads(path.read_text())
    if marker["fingerprint"] != stage_fingerprint:
        raise StageMismatch(
            f"{path}: stage '{stage}' in {output_dir} was produced from other inputs or another recipe; "
            "use a new --output folder, or delete the folder to start over"
        )
    root = Path(output_dir)
    return all((root / rel).is_file() and file_sha256(root / rel) == sha for rel, sha in marker["outputs"].items())


def mark_complete(
    output_dir: str | os.PathLike,
    stage: str,
    stage_fingerprint: str,
    outputs: list[str | os.PathLike],
    known: dict[str | os.PathLike, str] | None = None,
) -> Path:
    """Record `stage` as complete with the sha256 of each output (paths inside output_dir).

    `known` maps outputs whose sha256 the caller already computed while writing them; only the rest are read.
    """
    root = Path(output_dir).resolve()
    known = {Path(p).resolve(): sha for p, sha in (known or {}).items()}
    hashes = {}
    for p in outputs:
        full = Path(p).resolve()
        hashes[str(full.relative_to(root))] = known[full] if full in known else file_sha256(full)
    path = marker_path(output_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps({"stage": stage, "fingerprint": stage_fingerprint, "outputs": hashes}, indent=1))


def invalidate(output_dir: str | os.PathLike, stage: str) -> None:
    """Forget a stage's completion (before rewriting its outputs), so a crash mid-rewrite is never taken as done."""
    marker_path(output_dir, stage).unlink(missing_ok=True)


def read_marker(output_dir: str | os.PathLike, stage: str, stage_fingerprint: str) -> dict | None:
    """The stage's marker (its recorded output hashes) if it exists; raises StageMismatch on another fingerprint."""
    path = marker_path(output_dir, stage)
    if not path.is_file():
        return None
    marker = json.loads(path.read_text())
    if marker["fingerprint"] != stage_fingerprint:
        raise StageMismatch(
            f"{path}: stage '{stage}' in {output_dir} was produced from other inputs or another recipe; "
            "use a new --output folder, or delete the folder to start over"
        )
    return marker


def outputs_intact(output_dir: str | os.PathLike, outputs: list[tuple[str, str]]) -> bool:
    """Every (path inside output_dir, sha256) still exists with that hash (ranks each check a share in parallel)."""
    root = Path(output_dir)
    return all((root / rel).is_file() and file_sha256(root / rel) == sha for rel, sha in outputs)


def task_outputs(output_dir: str | os.PathLike, stage: str, stage_fingerprint: str) -> dict[str, str] | None:
    """A task's recorded outputs when it completed with this fingerprint and they are intact, else None (redo)."""
    try:
        marker = read_marker(output_dir, stage, stage_fingerprint)
    except StageMismatch:
        return None
    if marker is None or not outputs_intact(output_dir, list(marker["outputs"].items())):
        return None
    return marker["outputs"]
