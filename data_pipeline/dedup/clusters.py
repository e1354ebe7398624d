"""Distributed building blocks of both dedup steps: routing rows to owners, the keep order, the keeper choice,
the clusters each rank keeps (packed) and the fetch of their members' ids.

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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PackedClusters:
    """The clusters of one kind whose kept document this rank holds, as flat arrays by ascending kept index:
    cluster c keeps kept[c] and removes removed[bounds[c] : bounds[c + 1]] (ascending), each with its estimated
    similarity to the kept document (1 for exact copies).

    12 bytes per member and 16 per cluster, where dicts of lists took ~100 per member: a template copied a
    million times stays one compact array on the way to its line of clusters.jsonl (stages/cluster_lines.py).
    """

    kind: str  # "exact", "near", "exact_earlier" or "near_earlier"
    kept: np.ndarray  # int64 (clusters,): global indices, ascending
    bounds: np.ndarray  # int64 (clusters + 1,)
    removed: np.ndarray  # int64 (members,)
    similarity: np.ndarray  # float32 (members,); `similarities` gives them as written (4 decimals)

    def __len__(self) -> int:
        return len(self.kept)

    def sizes(self) -> np.ndarray:
        """Documents in each cluster (kept + removed), int64."""
        return np.diff(self.bounds) + 1

    def similarities(self, start: int, stop: int) -> np.ndarray:
        """similarity[start:stop] rounded to 4 decimals as float64: exactly the values the estimate rounded to
        (float32 holds 7 digits), so the text written does not depend on the storage type."""
        return np.round(self.similarity[start:stop].astype(np.float64), 4)

    def records(self) -> Iterator[dict]:
        """Each cluster as {"kept", "removed", "similarity"} of global indices, for tests and benchmarks that look
        at a few clusters; the stages never build these (stages/cluster_lines.py streams the arrays)."""
        bounds = self.bounds.tolist()
        for kept, start, stop in zip(self.kept.tolist(), bounds[:-1], bounds[1:], strict=True):
            yield {"kept": kept, "removed": self.removed[start:stop].tolist(),
                   "similarity": self.similarities(start, stop).tolist()}  # fmt: skip


def gather_clusters(
    ex: Exchange, kind: str, kept: np.ndarray, removed: np.ndarray, similarity: np.ndarray, owner_of: OwnerOf
) -> PackedClusters:
    """Send each (kept, removed, similarity) to the rank holding `kept`; return that rank's clusters, packed.

    Memory on the receiving rank, per member: the 24-byte rows it receives, the 8-byte sort order and the packed
    columns (at most ~52 bytes at once), then the 12 of the packed arrays.
    """
    rows = np.column_stack([kept, removed, np.asarray(similarity, np.float64).view(np.int64)]).astype(
        np.int64, copy=False
    )
    mine = ex.route(rows, owner_of(np.asarray(kept, np.int64)), "cluster members")
    del rows
    order = np.lexsort((mine[:, 1], mine[:, 0]))
    estimate = mine[order, 2].view(np.float64)
    estimate = np.round(estimate, 4, out=estimate).astype(np.float32)
    members, kept_of = mine[order, 1], mine[order, 0]
    del mine, order
    first = np.flatnonzero(run_starts(kept_of))
    bounds = np.append(first, len(kept_of)).astype(np.int64)
    return PackedClusters(kind, kept_of[first], bounds, members, estimate)


def fetch_ids(comm: Comm, wanted: np.ndarray, owner_of: OwnerOf, ids_at: Callable[[np.ndarray], bytes]) -> list[bytes]:
    """The ids of the global indices `wanted` (any order, repeats allowed) from the ranks holding them, in the
    order asked: one alltoall of the int64 indices each holder is asked for (each once, ascending), one of the
    answers. `ids_at(indices)` gives this rank's ids of those indices as one bytes blob of newline-ended JSON
    texts (JSON never holds a raw newline). Only the ids asked for travel, never through rank 0; a caller bounds
    what one call holds by asking in rounds.

    Collective: two alltoalls, on every rank (with nothing to ask too).
    """
    unique, inverse = np.unique(np.asarray(wanted, np.int64), return_inverse=True)
    owners = np.asarray(owner_of(unique), np.int64)
    by_owner = np.argsort(owners, kind="stable")
    asks = np.split(unique[by_owner], np.cumsum(np.bincount(owners, minlength=comm.size))[:-1])
    answers = comm.alltoall([ids_at(asked) for asked in comm.alltoall(asks)])
    ids = [doc_id for blob in answers for doc_id in blob.split(b"\n")[:-1]]  # unique[by_owner]'s ids
    answered = np.empty_like(by_owner)
    answered[by_owner] = np.arange(len(by_owner))
    return [ids[k] for k in answered[inverse.reshape(-1)].tolist()]
