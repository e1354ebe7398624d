"""Memory of one giant exact cluster on the rank that keeps it, from `gather_clusters` to dedup/clusters.jsonl.

One cluster of M documents (document 0 kept, 1..M-1 its copies, all on one rank): `gather_clusters` packs the
(kept, removed, similarity) rows, `write_clusters` streams its line into a spool file with the ids fetched in
rounds, and the summary rank 0 would gather is pickled. Printed: the growth of peak RSS over the setup, the
tracemalloc peak (numpy arrays are traced) in a second run, both per member, and their ratio to the anchor, the
24-byte rows per member that `gather_clusters` receives (the one compact array the issue allows).

    .venv/bin/python benchmarks/bench_giant_cluster.py [MEMBERS=1000000]
"""

from __future__ import annotations

import pickle
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline.comm import LocalComm  # noqa: E402
from data_pipeline.config import load_recipe  # noqa: E402
from data_pipeline.dedup.clusters import Exchange, gather_clusters  # noqa: E402
from data_pipeline.stages.duplicates import GlobalIndex, Removals  # noqa: E402
from data_pipeline.stages.outputs import CLUSTERS  # noqa: E402
from data_pipeline.stages.plan import DedupJob, Plan  # noqa: E402
from data_pipeline.stages.scan import TaskWork  # noqa: E402
from data_pipeline.stages.write import write_clusters  # noqa: E402
from data_pipeline.tasks import Task  # noqa: E402

ROW_BYTES = 24  # (kept, removed, similarity) as int64, what gather_clusters receives per member


def giant_cluster(out: Path, members: int):
    """A work folder whose one task holds `members` documents with ids doc-0..., and a run of the write path."""
    task = Task(0, "in.jsonl")
    job = DedupJob(LocalComm(), out, load_recipe(None, []), True, {})
    plan, index = Plan([task], [0], [task], [0], []), GlobalIndex(np.array([members], np.int64), [0])
    work = TaskWork(out, task)
    work.folder.mkdir(parents=True, exist_ok=True)
    with open(work.path("ids.jsonl"), "wb") as f:  # in blocks: the setup must not raise the peak RSS measured
        for start in range(0, members, 1 << 14):
            f.write(b"".join(b'"doc-%d"\n' % i for i in range(start, min(members, start + (1 << 14)))))
    kept, removed = np.zeros(members - 1, np.int64), np.arange(1, members, dtype=np.int64)
    similarity = np.ones(members - 1)

    def run() -> dict:
        owner_of = lambda i: np.zeros(len(i), np.int64)  # noqa: E731
        packed = gather_clusters(Exchange(job.comm), "exact", kept, removed, similarity, owner_of)
        return write_clusters(job, plan, index, Removals(clusters=[packed]))

    return run


def main() -> None:
    members = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    anchor = ROW_BYTES * members
    with tempfile.TemporaryDirectory() as folder:
        run = giant_cluster(Path(folder), members)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        summary = run()
        seconds = time.perf_counter() - started
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        tracemalloc.start()
        run()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        line = (Path(folder) / CLUSTERS).read_bytes()
    print(f"one exact cluster of {members:,} documents, gather_clusters -> clusters.jsonl ({len(line):,} bytes)")
    print(f"  anchor: {ROW_BYTES} B rows per member received = {anchor / 2**20:.1f} MiB")
    print(f"  peak RSS growth {grown / 2**20:.1f} MiB ({grown / members:.0f} B/member, {grown / anchor:.2f}x anchor), "
          f"{seconds:.1f} s")  # fmt: skip
    print(
        f"  tracemalloc peak {traced / 2**20:.1f} MiB ({traced / members:.0f} B/member, {traced / anchor:.2f}x anchor)"
    )
    print(f"  summary for rank 0: {len(pickle.dumps(summary))} B pickled; largest {summary['largest']}")


if __name__ == "__main__":
    main()
