"""How a stage runs its work: each task once, behind its own completion marker; each phase timed; inputs named
by their identity (path, size, content digest), each rank digesting its own share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from data_pipeline import markers
from data_pipeline.comm import Comm


def run_once(output_dir: Path, stage: str, identity: dict, produce: Callable[[], dict[str, str]]) -> tuple[dict, bool]:
    """Reuse a task's outputs when its marker records this identity and they are intact; otherwise forget the
    marker, run `produce` (returns {output path inside output_dir: sha256}) and mark the task complete.

    Returns (outputs, whether it ran). A crash inside `produce` leaves no marker, so the rerun redoes the task.
    """
    recorded = markers.task_outputs(output_dir, stage, identity)
    if recorded is not None:
        return recorded, False
    markers.invalidate(output_dir, stage)
    written = produce()
    known = {output_dir / p: sha for p, sha in written.items()}
    markers.mark_complete(output_dir, stage, identity, list(known), known=known)
    return written, True


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the block's wall time in seconds as timings[name]."""
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)


def identify_inputs(comm: Comm, output_dir: Path, files: list[str]) -> dict[str, dict]:
    """{path: {"size", "xxh3", "mtime_ns", "inode"}} of every file, on every rank (collective: allgather).

    Each rank stats and digests only its share (every size-th file), reusing the digests cached in output_dir
    (markers.py says what this costs); rank 0 then saves the merged digests for the next run.
    """
    mine = markers.digest_files(files[comm.rank :: comm.size], markers.load_digest_cache(output_dir))
    merged = {path: entry for part in comm.allgather(mine) for path, entry in part.items()}
    if comm.rank == 0:
        markers.save_digest_cache(output_dir, merged)
    return {path: merged[path] for path in files}
