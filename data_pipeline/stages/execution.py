"""How a stage runs its work: each task once, behind its own completion marker; each phase timed; inputs named
by their identity (path, size, content digest), statted once by rank 0, each rank digesting its share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from data_pipeline import markers, storage
from data_pipeline.comm import Comm, on_root


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
    marker = markers.mark_complete(output_dir, stage, identity, list(known), known=known)
    storage.publish_task(output_dir, list(written), str(marker.relative_to(output_dir)))
    return written, True


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the block's wall time in seconds as timings[name]."""
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)


def identify_inputs(comm: Comm, output_dir: Path, files: list[str]) -> dict[str, dict]:
    """{path: {"size", "xxh3", "mtime_ns", "inode"}} of every file, on every rank (collective: on_root's
    broadcast, an allgather).

    Rank 0 stats each file once (on object storage, the listing's cached info) and takes what the digest cache in
    output_dir holds for it (markers.py says what this costs); the files whose content must be digested are split
    over the ranks. No other rank stats an input, so the file system's metadata server meets one client for
    them, not every rank, and no rank stats a file it may never read. Rank 0 then saves the merged digests.
    """
    known = on_root(comm, "reading the inputs' sizes", lambda: stat_inputs(output_dir, files))
    unread = [path for path in files if "xxh3" not in known[path]]
    mine = {path: markers.read_identity(path, known[path]) for path in unread[comm.rank :: comm.size]}
    merged = known | {path: entry for part in comm.allgather(mine) for path, entry in part.items()}
    if comm.rank == 0:
        markers.save_digest_cache(output_dir, merged)
    return {path: merged[path] for path in files}


def stat_inputs(output_dir: Path, files: list[str]) -> dict[str, dict]:
    """Rank 0: each file's identity where the stat alone gives it (markers.known_identity), else its stat."""
    cache = markers.load_digest_cache(output_dir)
    stats = {path: storage.stat(path) for path in files}
    return {path: markers.known_identity(where, cache.get(path)) or where for path, where in stats.items()}
