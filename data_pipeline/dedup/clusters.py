"""Distributed building blocks of both dedup steps: routing rows to owners, the keep order, the keeper choice.

No rank holds the whole graph or any global list. Every exchange is an `alltoallv` of the rows one rank needs
from another: band keys go to the rank owning that key range, a candidate pair to the rank holding its
lower-ranked document, a decision only to the rank holding the document it is about (`owner_of`).

Which document a cluster keeps (`dedup.keep`): every document has a priority (`keep_priority`); documents are
ranked by (priority, global index), and the lowest-ranked member of a group of duplicates is kept. Priorities
depend only on the document itself, so the choice does not depend on the rank count.

Near duplicates are not transitive, so clusters are not connected components (A~B and B~C would remove C as a
duplicate of A when A and C have nothing in common: "chaining"). `select_keepers` takes instead the greedy
independent set of the verified-pair graph in rank order: walking the documents from the lowest rank, a document
is kept unless one of its already-kept neighbours claims it, and a removed document always belongs to a kept
neighbour, i.e. it was verified against the very document that is kept for it. The rest of a chain forms its own
clusters. The greedy set is unique, so any number of ranks computes the same one: components.py finds the
connected components in a bounded number of rounds and walks each on one rank (`DedupResult.rounds`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from data_pipeline.comm import Comm

OwnerOf = Callable[[np.ndarray], np.ndarray]  # global doc indices (int64) -> rank that holds each (vectorised)

KEEP_RULES = ("first", "longest")
_SIGN_BIT = np.uint64(1 << 63)


def keep_priority(lengths: np.ndarray, rule: str) -> np.ndarray:
    """Priority (int64) of each document for `dedup.keep`: the cluster keeps its lowest (priority, global index).

    "first": 0 for every document, so the lowest global index (input order) wins; "longest": minus the text
    length, so the longest text wins and equal lengths fall back to input order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if rule == "first":
        return np.zeros(len(lengths), np.int64)
    if rule == "longest":
        return -lengths
    raise ValueError(f"dedup.keep must be one of {', '.join(KEEP_RULES)}, got {rule!r}")


def rank_key(priority: np.ndarray) -> np.ndarray:
    """Priorities as uint64 that sort in the same order (the sign bit flipped), to travel in uint64 rows."""
    return np.asarray(priority, dtype=np.int64).view(np.uint64) ^ _SIGN_BIT


def key_owner(keys: np.ndarray, size: int) -> np.ndarray:
    """Rank owning each uint64 key: rank r owns the r-th of `size` equal ranges of key values."""
    return ((keys >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32)


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a run of equal rows (along axis 0) begins."""
    if len(sorted_keys) == 0:
        return np.zeros(0, bool)
    change = sorted_keys[1:] != sorted_keys[:-1]
    if change.ndim > 1:
        change = change.any(axis=1)
    return np.r_[True, change]


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """(a, b) int64 rows sorted by (a, b) without repeats."""
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    return rows[run_starts(rows)] if len(rows) else rows.reshape(0, 2)


def owner_of_blocks(counts: Sequence[int]) -> OwnerOf:
    """`owner_of` when rank r holds the contiguous global indices [sum(counts[:r]), sum(counts[:r+1]))."""
    starts = np.cumsum([0, *counts])[:-1]

    def owner_of(doc_index: np.ndarray) -> np.ndarray:
        return np.searchsorted(starts, np.asarray(doc_index, np.int64), side="right") - 1

    return owner_of


class Exchange:
    """alltoallv over a communicator, counting the bytes this rank receives per phase (for tests and reports)."""

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self.received: dict[str, int] = {}

    def route(self, rows: np.ndarray, owners: np.ndarray, phase: str) -> np.ndarray:
        """Send each row to the rank in `owners`; return the rows this rank received (in source rank order)."""
        if self.comm.size == 1:
            received = np.ascontiguousarray(rows)
        else:
            order = np.argsort(owners, kind="stable")
            counts = np.bincount(np.asarray(owners, np.int64), minlength=self.comm.size)
            parts = np.split(rows[order], np.cumsum(counts)[:-1])
            received = self.comm.alltoallv_array([np.ascontiguousarray(p) for p in parts])
        self.received[phase] = self.received.get(phase, 0) + int(received.nbytes)
        return received

    def objects(self, per_rank: list[list], phase: str) -> list[list]:
        """per_rank[r] (picklable items) goes to rank r; returns what every rank sent here, by source rank."""
        received = self.comm.alltoall(per_rank)
        count = sum(len(part) for part in received)
        self.received[phase] = self.received.get(phase, 0) + count
        return received


def fetch_from_owners(
    ex: Exchange, wanted: np.ndarray, owner_of: OwnerOf, doc_index: np.ndarray, table: np.ndarray, phase: str
) -> np.ndarray:
    """Rows of `table` (row-aligned with each rank's `doc_index`) for the global indices `wanted`, from their owners.

    The requests go to the owners, the rows come back to the asking rank: only requested rows travel.
    """
    wanted = np.asarray(wanted, np.int64)
    sender = np.full(len(wanted), ex.comm.rank, np.int64)
    requests = ex.route(np.column_stack([wanted, sender]), owner_of(wanted), f"{phase} requests")
    rows = np.ascontiguousarray(table[positions_of(doc_index, requests[:, 0], "fetch_from_owners")])
    answered = ex.route(requests[:, 0], requests[:, 1], f"{phase} requests")
    answers = ex.route(rows, requests[:, 1], phase)
    order = np.argsort(answered, kind="stable")
    return answers[order[np.searchsorted(answered[order], wanted)]]


def positions_of(doc_index: np.ndarray, requested: np.ndarray, where: str) -> np.ndarray:
    """Positions of `requested` global indices in this rank's (not necessarily sorted) `doc_index`."""
    if len(requested) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(doc_index, kind="stable")
    found = order[np.minimum(np.searchsorted(doc_index[order], requested), len(order) - 1)] if len(order) else None
    if found is None or not np.array_equal(doc_index[found], requested):
        raise ValueError(f"{where}: owner_of names this rank for documents it does not hold; check owner_of")
    return found


def gather_clusters(ex: Exchange, kept: np.ndarray, removed: np.ndarray, similarity: np.ndarray, owner_of: OwnerOf):
    """Send each (kept, removed, similarity) to the rank holding `kept`; return that rank's clusters.

    Clusters are {"kept", "removed" (ascending), "similarity" (aligned, 4 decimals)}, sorted by kept index.
    """
    rows = np.column_stack([kept, removed, np.asarray(similarity, np.float64).view(np.int64)]).astype(np.int64)
    mine = ex.route(rows, owner_of(np.asarray(kept, np.int64)), "cluster members")
    mine = mine[np.lexsort((mine[:, 1], mine[:, 0]))]
    first = np.flatnonzero(run_starts(mine[:, 0]))
    bounds = np.r_[first, len(mine)].tolist()
    sims = np.round(mine[:, 2].view(np.float64), 4)
    return [
        {"kept": int(mine[b, 0]), "removed": mine[b:e, 1].tolist(), "similarity": sims[b:e].tolist()}
        for b, e in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def cluster_records_with_ids(
    comm: Comm, clusters: list[dict], doc_index: np.ndarray, doc_ids: Sequence[str], owner_of: OwnerOf
) -> list[dict]:
    """This rank's clusters with document ids in place of global indices (same order, other keys unchanged).

    The kept document is held here; ids of members held elsewhere come from their owners (one alltoall of
    exactly the ids asked for), never through rank 0.
    """
    doc_index = np.asarray(doc_index, np.int64)
    members = np.unique(np.array([i for c in clusters for i in [c["kept"], *c["removed"]]], np.int64))
    owners = owner_of(members).astype(np.int64) if len(members) else np.zeros(0, np.int64)
    asks = [members[owners == r].tolist() for r in range(comm.size)]
    ex = Exchange(comm)
    asked = ex.objects(asks, "id requests")
    answers = ex.objects(
        [
            [doc_ids[p] for p in positions_of(doc_index, np.array(a, np.int64), "cluster_records_with_ids")]
            for a in asked
        ],
        "ids",
    )
    id_of = {
        i: doc_id for ask, answer in zip(asks, answers, strict=True) for i, doc_id in zip(ask, answer, strict=True)
    }
    return [{**c, "kept": id_of[int(c["kept"])], "removed": [id_of[int(i)] for i in c["removed"]]} for c in clusters]


def cluster_summary(records: list[dict], shown: int = 3) -> dict:
    """What rank 0 needs of one rank's cluster records for stats.json and the report, and no more: the largest
    cluster's (size, {"kept", "kind"}) and the first `shown` records of each kind cut to `shown` members. A whole
    record of a template copied a million times is a million ids; it stays on its rank (clusters.jsonl)."""
    largest = max(((1 + len(r["removed"]), r) for r in records), key=lambda x: x[0], default=None)
    examples = {}
    for kind in ("exact", "near"):
        first = itertools.islice((r for r in records if r["kind"] == kind), shown)
        examples[kind] = [{**r, "removed": r["removed"][:shown], "similarity": r["similarity"][:shown]} for r in first]
    return {"largest": largest and (largest[0], {"kept": largest[1]["kept"], "kind": largest[1]["kind"]}),
            "examples": examples}  # fmt: skip
