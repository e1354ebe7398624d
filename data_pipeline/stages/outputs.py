"""The dedup stage's output folder: its names, and files written atomically and hashed while written."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from data_pipeline import drop_log, markers
from data_pipeline.errors import PipelineError
from infra.files import atomic_write

STAGE = "dedup"  # its completion marker: .stages/dedup.json
STATS = "stats.json"
TIMINGS = "timings.json"
RECIPE = "recipe.yaml"
KEPT_DIR, REJECTS_DIR, CLUSTERS, WORK_DIR = "kept", "rejects", "dedup/clusters.jsonl", "dedup/work"
DROPPED_DIR = drop_log.DROPPED_DIR


def part_name(task_index: int) -> str:
    return f"part-{task_index:05d}.jsonl"


def write_error(path: Path, err: OSError) -> PipelineError:
    return PipelineError(f"{path}: cannot write ({err.strerror}); free space there or choose another --output")


class HashedFile:
    """A file written with `atomic_write` (infra/files.py) and hashed while written.

    A killed run never leaves a half file under the real name; a write error (disk full, quota, file-size
    limit) names the file, and the temporary one is removed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.file: BinaryIO | None = None
        self._open = contextlib.ExitStack()  # holds the atomic write from __enter__ to __exit__

    def __enter__(self) -> HashedFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = self._open.enter_context(atomic_write(self.path, "wb"))
        except OSError as err:
            raise write_error(self.path, err) from err
        return self

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        try:
            self.file.write(data)
        except OSError as err:
            raise write_error(self.path, err) from err

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        try:
            self._open.__exit__(kind, err, tb)
        except OSError as close_err:  # the last bytes, the fsync or the rename failed (again, after a write error)
            if err is not None:
                raise err from close_err
            raise write_error(self.path, close_err) from close_err

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> str:
    with HashedFile(path) as f:
        f.write((json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())
    return f.sha256


def jsonl_bytes(records: Iterable[dict], ensure_ascii: bool = False) -> bytes:
    return b"".join((json.dumps(r, ensure_ascii=ensure_ascii) + "\n").encode("utf-8") for r in records)


def prepare_output(output_dir: Path) -> None:
    """Forget any earlier stage completion and create the stage's folders (per-task markers stay: finished tasks
    are reused)."""
    markers.invalidate(output_dir, STAGE)
    for sub in (KEPT_DIR, REJECTS_DIR, WORK_DIR):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)


def remove_stale_parts(output_dir: Path, num_tasks: int) -> None:
    """Parts of an earlier plan with more tasks (or of the earlier per-rank layout) would mix into kept/;
    temporary parts of a killed rank are garbage."""
    expected = {part_name(i) for i in range(num_tasks)}
    for sub, suffix in ((KEPT_DIR, ""), (REJECTS_DIR, ""), (DROPPED_DIR, ".gz")):
        for part in (output_dir / sub).glob(f"part-*.jsonl{suffix}"):
            if part.name.removesuffix(suffix) not in expected:
                part.unlink()
        for tmp in (output_dir / sub).glob(f".part-*.jsonl{suffix}.tmp"):  # of a rank killed while writing
            tmp.unlink()
