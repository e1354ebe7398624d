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
clusters. The greedy set is unique, so any number of ranks computes the same one: components.py decides it in
bounded pull rounds where the documents live and solves only the rest by components (`DedupResult.rounds`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
            received = self.comm.alltoallv_array(rows[order], counts)  # the grouped copy is the send buffer
        self.received[phase] = self.received.get(phase, 0) + int(received.nbytes)
        return received

    def objects(self, per_rank: list[list], phase: str) -> list[list]:
        """per_rank[r] (picklable items) goes to rank r; returns what every rank sent here, by source rank."""
        received = self.comm.alltoall(per_rank)
        count = sum(len(part) for part in received)
        self.received[phase] = self.received.get(phase, 0) + count
        return received


def ask_owners(
    ex: Exchange, wanted: np.ndarray, owner_of: OwnerOf, answer: Callable[[np.ndarray], np.ndarray], phase: str
) -> np.ndarray:
    """answer(docs) on the owners of the global indices `wanted`; rows come back in the order of `wanted`.

    A request is (doc, asking rank), 16 B; an answer is answer's row alone: `Exchange.route` keeps each rank's rows
    in order and concatenates by source rank, so the answers come back in the order the requests went out."""
    wanted = np.asarray(wanted, np.int64)
    owners = owner_of(wanted)
    asker = np.full(len(wanted), ex.comm.rank, np.int64)
    requests = ex.route(np.column_stack([wanted, asker]), owners, f"{phase} requests")
    answers = ex.route(answer(requests[:, 0]), requests[:, 1], phase)
    in_order = np.empty_like(answers)
    in_order[np.argsort(owners, kind="stable")] = answers
    return in_order


def fetch_from_owners(
    ex: Exchange, wanted: np.ndarray, owner_of: OwnerOf, doc_index: np.ndarray, table: np.ndarray, phase: str
) -> np.ndarray:
    """Rows of `table` (row-aligned with each rank's `doc_index`) for the global indices `wanted`, from their owners:
    only requested rows travel."""

    def rows(docs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(table[positions_of(doc_index, docs, "fetch_from_owners")])

    return ask_owners(ex, wanted, owner_of, rows, phase)


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


def fetch_ids(
    comm: Comm, windows: Iterable[np.ndarray], owner_of: OwnerOf, ids_at: Callable[[np.ndarray], bytes], quota: int
) -> Iterator[list[bytes]]:
    """The ids of each window of global indices (any order, repeats allowed), window after window, each in the
    order asked, from the ranks holding them, in rounds. `ids_at(indices)` gives this rank's ids of those indices
    (ascending, each once) as one bytes blob of newline-ended JSON texts (JSON never holds a raw newline). Only
    the ids asked for travel, never through rank 0.

    Per round a rank asks only for its current window's ids (each once), and a holder answers at most `quota` ids
    in all, shared among its askers by `grant_quota`: the caller bounds what an asker holds by the windows' size,
    and a holder's answers are bounded by `quota` whatever the rank count or how many ranks' clusters took their
    copies from one holder. A window waits only in a round where a holder it asks answers its full quota, so a
    rank's windows take at most (its windows) + sum over the holders it asks of floor(ids asked of it / quota)
    rounds. The sum is reached when many ranks' windows need the same holders one after the other (giant
    clusters' members walk the holders in index order together): the quota trades those rounds for memory.

    Collective: four alltoalls a round (counts and a busy flag, grants, requests, answers), on every rank, until
    no rank has a window left: iterate to the end on every rank, with nothing to ask too.
    """
    windows, round_ = iter(windows), 0
    asking = next((WindowAsk(w, owner_of, comm.size) for w in windows), None)
    one_each = np.ones(comm.size, np.int64)  # one row from and to every rank
    while True:
        counts = asking.counts() if asking else np.zeros(comm.size, np.int64)
        busy = np.full(comm.size, asking is not None, np.int64)
        asks = comm.alltoallv_array(np.column_stack([counts, busy]), one_each)
        asks = asks.reshape(comm.size, 2)  # per asking rank: the ids it asks of this one, whether it has a window
        if not asks[:, 1].any():
            return
        grants = grant_quota(asks[:, 0], quota, round_ % comm.size)
        granted = comm.alltoallv_array(grants, one_each)
        requests = asking.take(granted) if asking else [np.zeros(0, np.int64)] * comm.size
        answers = comm.alltoall([ids_at(indices) if len(indices) else b"" for indices in comm.alltoall(requests)])
        if asking and asking.receive(answers):
            yield asking.ids()
            asking = next((WindowAsk(w, owner_of, comm.size) for w in windows), None)
        round_ += 1


def grant_quota(asked: np.ndarray, quota: int, first: int) -> np.ndarray:
    """How many of the ids each rank asks of this holder (asked[rank]) it answers this round: all of them when
    they fit in `quota`; else max-min fair shares of exactly `quota` (every asker gets min(asked, level) for the
    highest level that fits, and the ones left go one each to the askers above the level, by rank from `first`,
    which the caller turns each round so that more askers than `quota` are all served in turn)."""
    asked = np.asarray(asked, np.int64)
    if asked.sum() <= quota:
        return asked
    by_size = np.sort(asked)
    below = np.concatenate([[0], np.cumsum(by_size)[:-1]])  # what the askers smaller than each ask in all
    capped = below + by_size * np.arange(len(asked), 0, -1)  # the total when every share is capped at by_size[i]
    cut = int(np.argmax(capped > quota))
    granted = np.minimum(asked, (quota - int(below[cut])) // (len(asked) - cut))
    above = np.flatnonzero(granted < asked)
    above = np.roll(above, -int(np.searchsorted(above, first)))
    granted[above[: quota - int(granted.sum())]] += 1
    return granted


class WindowAsk:
    """One window of global indices on the asking side: its indices each once, by holder and ascending, how many
    of each holder's have been requested, and the ids answered so far (at most the window's length)."""

    def __init__(self, wanted: np.ndarray, owner_of: OwnerOf, size: int) -> None:
        self.unique, self.inverse = np.unique(np.asarray(wanted, np.int64), return_inverse=True)
        owners = np.asarray(owner_of(self.unique), np.int64)
        self.by_holder = np.argsort(owners, kind="stable")  # positions in `unique`, holder after holder
        self.holder_start = np.concatenate([[0], np.cumsum(np.bincount(owners, minlength=size))])
        self.requested = self.holder_start[:-1].copy()  # per holder: where its next request starts in by_holder
        self.answered = self.requested.copy()
        self.found: list[bytes] = [b""] * len(self.unique)  # ids in by_holder order

    def counts(self) -> np.ndarray:
        """Ids not yet requested, per holder."""
        return self.holder_start[1:] - self.requested

    def take(self, granted: np.ndarray) -> list[np.ndarray]:
        """The next granted[h] indices to request of each holder h (ascending)."""
        start, self.requested = self.requested, self.requested + granted
        positions = [self.by_holder[a:b] for a, b in zip(start.tolist(), self.requested.tolist(), strict=True)]
        return [self.unique[p] for p in positions]

    def receive(self, answers: list[bytes]) -> bool:
        """File each holder's answer (the ids of its last request, in order); True once the window is complete."""
        for holder, blob in enumerate(answers):
            ids = blob.split(b"\n")[:-1]
            at = int(self.answered[holder])
            self.found[at : at + len(ids)] = ids
            self.answered[holder] = at + len(ids)
        return bool((self.answered == self.holder_start[1:]).all())

    def ids(self) -> list[bytes]:
        """The window's ids in the order asked."""
        position = np.empty_like(self.by_holder)
        position[self.by_holder] = np.arange(len(self.by_holder))
        return [self.found[k] for k in position[self.inverse.reshape(-1)].tolist()]
