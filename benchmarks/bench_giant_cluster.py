"""Memory of one giant exact cluster on the rank that keeps it, from `gather_clusters` to dedup/clusters.jsonl,
and what one holder answers per round when every rank's clusters took their copies from it.

One cluster of M documents (document 0 kept, 1..M-1 its copies, all on one rank): `gather_clusters` packs the
(kept, removed, similarity) rows, `write_clusters` streams its line into a spool file with the ids fetched in
rounds, and the summary rank 0 would gather is pickled. Printed: the growth of peak RSS over the setup, the
tracemalloc peak (numpy arrays are traced) in a second run, both per member, and their ratio to the anchor, the
24-byte rows per member that `gather_clusters` receives (the one compact array the issue allows).

One holder: N simulated ranks (threads, tests/support/sim_comm.py) each keep a cluster of K copies held by rank 0.
Printed: the most ids rank 0 answers in a round against the anchor, what it answered in its busiest round before
the quota (every rank's first window: up to N x ROUND_MEMBERS), and the rounds against
ceil(ids asked of rank 0 / ANSWERS_PER_ROUND), the fewest the quota allows.

Walking together: 8 ranks each keep a cluster with copies in every rank's task, so that in index order every
rank's windows ask the same holders at once (the case where the rounds reach their bound): the rounds at quotas
of 1, 4 and 16 windows against the windows, what the rounds were before the quota.

    .venv/bin/python benchmarks/bench_giant_cluster.py [MEMBERS=1000000] [N=32] [K=65536]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.sim_comm import run_ranks  # noqa: E402

from data_pipeline.comm import LocalComm  # noqa: E402
from data_pipeline.config import load_recipe  # noqa: E402
from data_pipeline.dedup.clusters import Exchange, gather_clusters  # noqa: E402
from data_pipeline.stages import cluster_lines  # noqa: E402
from data_pipeline.stages.cluster_lines import ANSWERS_PER_ROUND, ROUND_MEMBERS  # noqa: E402
from data_pipeline.stages.duplicates import GlobalIndex, Removals  # noqa: E402
from data_pipeline.stages.outputs import CLUSTERS  # noqa: E402
from data_pipeline.stages.plan import DedupJob, Plan  # noqa: E402
from data_pipeline.stages.scan import TaskWork  # noqa: E402
from data_pipeline.stages.write import write_clusters  # noqa: E402
from data_pipeline.tasks import Task  # noqa: E402

ROW_BYTES = 24  # (kept, removed, similarity) as int64, what gather_clusters receives per member


def write_ids(out: Path, task: Task, first: int, count: int) -> None:
    """The task's ids.jsonl: doc-FIRST ... for `count` documents, in blocks (the setup must not raise the peak
    RSS measured)."""
    work = TaskWork(out, task)
    work.folder.mkdir(parents=True, exist_ok=True)
    with open(work.path("ids.jsonl"), "wb") as f:
        for start in range(first, first + count, 1 << 14):
            f.write(b"".join(b'"doc-%d"\n' % i for i in range(start, min(first + count, start + (1 << 14)))))


def giant_cluster(out: Path, members: int):
    """A work folder whose one task holds `members` documents with ids doc-0..., and a run of the write path."""
    task = Task(0, "in.jsonl")
    job = DedupJob(LocalComm(), out, load_recipe(None, []), True, {})
    plan, index = Plan([task], [0], [task], [0], []), GlobalIndex(np.array([members], np.int64), [0])
    write_ids(out, task, 0, members)
    kept, removed = np.zeros(members - 1, np.int64), np.arange(1, members, dtype=np.int64)
    similarity = np.ones(members - 1)

    def run() -> dict:
        owner_of = lambda i: np.zeros(len(i), np.int64)  # noqa: E731
        packed = gather_clusters(Exchange(job.comm), "exact", kept, removed, similarity, owner_of)
        return write_clusters(job, plan, index, Removals(clusters=[packed]))

    return run


def copies_of_one_holder(ranks: int, members: int) -> tuple[list[int], list[np.ndarray]]:
    """Documents per task (task r on rank r) and each rank's cluster's copies: all in task 0, rank 0's."""
    docs = [ranks * members + 1] + [1] * (ranks - 1)
    return docs, [np.arange(r * members + 1, (r + 1) * members + 1, dtype=np.int64) for r in range(ranks)]


def copies_in_every_task(ranks: int, members: int) -> tuple[list[int], list[np.ndarray]]:
    """Documents per task and each rank's cluster's copies: members / ranks in every task, so that in index order
    (the order of a line) every rank's windows walk the holders together."""
    share, base = members // ranks, np.arange(ranks, dtype=np.int64) * (members + 1)
    return [members + 1] * ranks, [
        np.concatenate([b + 1 + r * share + np.arange(share) for b in base]) for r in range(ranks)
    ]


def write_on_ranks(out: Path, docs: list[int], copies: list[np.ndarray]) -> list[list]:
    """Rank r keeps the first document of task r (its own), copies[r] its cluster's copies; write_clusters on
    len(docs) simulated ranks; each rank's log of collectives."""
    ranks = len(docs)
    tasks = [Task(t, f"in-{t}.jsonl") for t in range(ranks)]
    index = GlobalIndex(np.array(docs, np.int64), list(range(ranks)))
    for task in tasks:
        write_ids(out, task, int(index.base[task.index]), docs[task.index])
    kept = np.concatenate([np.full(len(c), index.base[r]) for r, c in enumerate(copies)])
    removed = np.concatenate(copies)
    sent_by = index.owner_of(removed)  # the rows come from the holder of the removed document

    def rank(comm) -> list:
        job = DedupJob(comm, out, load_recipe(None, []), True, {})
        plan = Plan(tasks, list(range(ranks)), [tasks[comm.rank]], [0] * ranks, [])
        mine = sent_by == comm.rank
        packed = gather_clusters(
            Exchange(comm), "exact", kept[mine], removed[mine], np.ones(mine.sum()), index.owner_of
        )
        write_clusters(job, plan, index, Removals(clusters=[packed]))
        return comm.log

    return run_ranks(ranks, rank)


def answered(logs: list[list]) -> np.ndarray:
    """(rounds, holders): ids each holder answered per round, from the alltoalls carrying id blobs (the same ones
    on every rank)."""
    blobs = [[got for kind, got in log if kind == "alltoall" and got and isinstance(got[0], bytes)] for log in logs]
    return np.array(
        [[sum(b[k][h].count(b"\n") for b in blobs) for h in range(len(logs))] for k in range(len(blobs[0]))]
    )


def report_one_holder(ranks: int, members: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        rounds = answered(write_on_ranks(Path(folder), *copies_of_one_holder(ranks, members)))[:, 0]
        seconds = time.perf_counter() - started
    anchor = min(members + 1, ROUND_MEMBERS) + (ranks - 1) * min(members, ROUND_MEMBERS)  # every first window
    print(f"one holder: {ranks} ranks keep a cluster of {members:,} copies each, all held by rank 0")
    print(f"  anchor (before the quota): {anchor:,} ids from rank 0 in its busiest round")
    print(f"  rank 0 answered at most {rounds.max():,} ids in a round ({rounds.max() / anchor:.3f}x anchor, quota "
          f"{ANSWERS_PER_ROUND:,}), {len(rounds)} rounds for {rounds.sum():,} ids (fewest possible "
          f"{-(-rounds.sum() // ANSWERS_PER_ROUND)}), {seconds:.1f} s")  # fmt: skip


def report_walking_together(ranks: int, windows: int) -> None:
    """Rounds when every rank's cluster walks the same holders in index order, at windows of 256 members and
    quotas of 1, 4 and 16 windows (the stage's ratio: 2^20 / 2^16), against the windows (no quota's rounds); the
    constants are scaled down so that simulated ranks show it."""
    print(f"walking together: {ranks} ranks keep a cluster of {windows} windows each, copies in every task")
    for quota in (256, 1024, 4096):
        cluster_lines.ROUND_MEMBERS, cluster_lines.ANSWERS_PER_ROUND = 256, quota
        with tempfile.TemporaryDirectory() as folder:
            rounds = answered(write_on_ranks(Path(folder), *copies_in_every_task(ranks, 256 * windows - ranks)))
        print(f"  quota {quota // 256:>2} windows: {len(rounds)} rounds ({len(rounds) / windows:.2f}x anchor "
              f"{windows}), a holder answered at most {rounds.max():,} ids in a round")  # fmt: skip


def main() -> None:
    members = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    ranks, copies = (int(a) for a in (sys.argv[2:4] if len(sys.argv) > 3 else (32, 1 << 16)))
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
    report_one_holder(ranks, copies)
    report_walking_together(8, 8)


if __name__ == "__main__":
    main()
