"""A giant duplicate cluster on the rank that keeps it: packed arrays from gather_clusters to dedup/clusters.jsonl,
member ids fetched in bounded rounds, and rank 0 gathering summaries whose size does not depend on the cluster's.

These drive `write_clusters` (stages/write.py) directly, over work folders holding only what it reads (each task's
ids.jsonl), on one rank and on simulated ranks (threads, tests/support/sim_comm.py). The whole stage on real ranks
is compared byte for byte in tests/integration/test_pipeline_mpi.py and test_pipeline_dedup*.py.
"""

from __future__ import annotations

import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support.sim_comm import run_ranks

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.dedup.clusters import Exchange, gather_clusters
from data_pipeline.stages import cluster_lines
from data_pipeline.stages.duplicates import GlobalIndex, Removals
from data_pipeline.stages.outputs import CLUSTERS, jsonl_bytes
from data_pipeline.stages.plan import DedupJob, Plan
from data_pipeline.stages.scan import TaskWork
from data_pipeline.stages.write import write_clusters
from data_pipeline.tasks import Task


class Corpus:
    """Tasks of documents (task t holds docs_per_task[t] of them, on rank t % ranks) with their ids files."""

    def __init__(self, out: Path, docs_per_task: list[int], ranks: int, id_of=lambda i: f"doc-{i}") -> None:
        self.out, self.ranks = out, ranks
        self.tasks = [Task(t, f"in-{t}.jsonl") for t in range(len(docs_per_task))]
        self.owners = [t % ranks for t in range(len(docs_per_task))]
        self.index = GlobalIndex(np.array(docs_per_task, np.int64), self.owners)
        self.ids = [id_of(i) for i in range(sum(docs_per_task))]
        for task in self.tasks:
            work = TaskWork(out, task)
            work.folder.mkdir(parents=True, exist_ok=True)
            first, n = int(self.index.base[task.index]), docs_per_task[task.index]
            work.path("ids.jsonl").write_text("".join(json.dumps(i) + "\n" for i in self.ids[first : first + n]))

    def rows_of(self, kinds: dict[str, tuple[np.ndarray, ...]]) -> list[dict[str, tuple[np.ndarray, ...]]]:
        """Each rank's share of every kind's (kept, removed, similarity) rows: those of the removed documents it
        holds, as the dedup steps send them."""
        held = self.index.owner_of(np.concatenate([rows[1] for rows in kinds.values()]))
        share, start = [{} for _ in range(self.ranks)], 0
        for kind, rows in kinds.items():
            mine = held[start : start + len(rows[1])]
            for rank in range(self.ranks):
                share[rank][kind] = tuple(column[mine == rank] for column in rows)
            start += len(rows[1])
        return share

    def write(self, comm, rows: dict[str, tuple[np.ndarray, ...]]) -> dict:
        """gather_clusters of each kind, then write_clusters, on this rank; returns the summary."""
        job = DedupJob(comm, self.out, load_recipe(None, []), True, {})
        mine = [t for t in self.tasks if self.owners[t.index] == comm.rank]
        plan = Plan(self.tasks, self.owners, mine, [0] * len(self.tasks), [])
        ex = Exchange(comm)
        packs = [gather_clusters(ex, kind, *columns, self.index.owner_of) for kind, columns in rows.items()]
        return write_clusters(job, plan, self.index, Removals(clusters=packs))

    def lines(self) -> bytes:
        return (self.out / CLUSTERS).read_bytes()


def one_cluster(members: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Document 0 kept, 1..members-1 its exact copies."""
    removed = np.arange(1, members, dtype=np.int64)
    return {"exact": (np.zeros(members - 1, np.int64), removed, np.ones(members - 1))}


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_giant_cluster_is_written_in_bounded_memory(tmp_path, monkeypatch, ranks):
    """One exact cluster of M = 200,000 documents, kept by rank 0, its copies spread over the ranks.

    Bound, per member: gather_clusters' 24-byte rows, 8-byte sort order and packed columns (52 B at once), later
    the packed 12 B and the ids file's 8-byte line offsets; per round member ~160 B (its id as bytes in a list,
    the answers' blob, the requests), ranks x ROUND_MEMBERS of them; 1 MiB for the rest. Simulated ranks share
    one process, so there the senders' routed rows and their sorted copies count too (48 B).
    Measured (tracemalloc peak, rounds of 2^12): 11.3 MB (56 B/member) on 1 rank, 15.1 MB (76 B) on 2.
    Before (gather_clusters' list of dicts, unpacked again, every member id fetched into a dict, the records and
    the whole line in memory): 72.2 MiB (379 B/member) on 1 rank for the same path.
    """
    members = 200_000
    monkeypatch.setattr(cluster_lines, "ROUND_MEMBERS", 1 << 12)
    corpus = Corpus(tmp_path, [members // ranks] * ranks, ranks)
    rows = corpus.rows_of(one_cluster(members))
    tracemalloc.start()
    try:
        summaries = run_ranks(ranks, lambda comm: corpus.write(comm, rows[comm.rank]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    routed = 48 if ranks > 1 else 0  # simulated ranks share the process: the senders' rows and sorted copies
    assert peak <= (56 + routed) * members + 160 * ranks * (1 << 12) + (1 << 20), f"{peak / members:.0f} B/member"
    record = json.loads(corpus.lines())
    assert record == {"kind": "exact", "kept": "doc-0", "removed": corpus.ids[1:], "similarity": [1.0] * (members - 1)}
    assert summaries[0]["largest"] == (members, {"kept": "doc-0", "kind": "exact"})
    assert summaries[0]["examples"]["exact"] == [{**record, "removed": record["removed"][:3], "similarity": [1.0] * 3}]


def test_what_rank_zero_gathers_does_not_grow_with_the_cluster(tmp_path):
    """The summary each rank sends rank 0 (`finish`) pickles to the same few hundred bytes at M = 1,000 and
    100,000: the largest size, its kept id and kind, three examples cut to three members."""
    sizes = {}
    for members in (1_000, 100_000):
        corpus = Corpus(tmp_path / str(members), [members], 1)
        summary = corpus.write(LocalComm(), one_cluster(members))
        assert summary["largest"] == (members, {"kept": "doc-0", "kind": "exact"})
        sizes[members] = len(pickle.dumps(summary))
    assert sizes[100_000] - sizes[1_000] <= 8 and sizes[100_000] < 400, sizes


def mixed_clusters(docs: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact and near clusters of 2..12 members over `docs` documents, no document in two clusters of a kind and
    none removed twice; some near clusters keep a document an exact cluster keeps too."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(docs)
    kinds, at = {}, 0
    for kind in ("exact", "near"):
        kept, removed = [], []
        while at + 12 < docs * (0.45 if kind == "exact" else 0.9):
            size = int(rng.integers(2, 13))
            group = np.sort(order[at : at + size])
            kept += [group[0]] * (size - 1)
            removed += group[1:].tolist()
            at += size
        if kind == "near":
            kept[: len(kinds["exact"][0][:5])] = kinds["exact"][0][:5]  # shared kept documents
        similarity = np.round(rng.uniform(0.7, 1.0, len(removed)), 4) if kind == "near" else np.ones(len(removed))
        kinds[kind] = (np.array(kept, np.int64), np.array(removed, np.int64), similarity)
    return kinds


def expected_lines(corpus: Corpus, kinds: dict) -> list[tuple[int, dict]]:
    """(kept index, record) of every cluster in file order (task of the kept, exact first, kept index), each
    record as the stage wrote it before the streaming write: a dict that jsonl_bytes turns into its line."""
    records = []
    for kind, (kept, removed, similarity) in kinds.items():
        for k in np.unique(kept).tolist():
            take = np.flatnonzero(kept == k)
            take = take[np.argsort(removed[take])]
            records.append(((int(corpus.index.task_of(np.array([k]))[0]), kind != "exact", k), {
                "kind": kind, "kept": corpus.ids[k], "removed": [corpus.ids[i] for i in removed[take]],
                "similarity": np.round(similarity[take], 4).tolist()}))  # fmt: skip
    return [(key[2], record) for key, record in sorted(records, key=lambda x: x[0])]


@pytest.mark.parametrize("ranks", [1, 3])
def test_lines_are_the_records_json_writes_whatever_the_round_size(tmp_path, monkeypatch, ranks):
    """Rounds that cut lines anywhere (1, 7 members; ids with quotes, backslashes and non-ASCII characters) write
    the bytes jsonl_bytes writes for the whole records, on any rank count; each rank's summary holds its largest
    cluster and its first three records of each kind, cut to three members."""
    docs = [90, 40, 130, 75]
    corpus = Corpus(tmp_path / f"r{ranks}", docs, ranks, id_of=lambda i: f'd\\"é{i}' if i % 3 else f"d{i}")
    kinds = mixed_clusters(sum(docs), seed=ranks)
    expected = expected_lines(corpus, kinds)
    assert len(expected) > 20
    rows = corpus.rows_of(kinds)
    held = [[r for k, r in expected if corpus.index.owner_of(np.array([k]))[0] == rank] for rank in range(ranks)]
    for round_members in (1 << 16, 1, 7):
        monkeypatch.setattr(cluster_lines, "ROUND_MEMBERS", round_members)
        summaries = run_ranks(ranks, lambda comm: corpus.write(comm, rows[comm.rank]))
        assert corpus.lines() == jsonl_bytes(r for _, r in expected), round_members
        for summary, records in zip(summaries, held, strict=True):
            if not records:  # a rank keeping no cluster (kept documents are the lowest of their clusters)
                assert summary == {"largest": None, "examples": {"exact": [], "near": []}}
                continue
            largest = max(records, key=lambda r: len(r["removed"]))  # the first of the largest size
            assert summary["largest"] == (1 + len(largest["removed"]), {k: largest[k] for k in ("kept", "kind")})
            for kind in ("exact", "near"):
                first = [r for r in records if r["kind"] == kind][:3]
                cut = [{**r, "removed": r["removed"][:3], "similarity": r["similarity"][:3]} for r in first]
                assert summary["examples"][kind] == cut, (round_members, kind)
