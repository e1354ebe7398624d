"""The greedy independent set in keep order, decided where the documents live, in pull rounds.

What it rests on (lsh.py): a verified pair (u, v) has u ranked before v in keep order and sits on v's holder, and
a document's lower neighbours are few (pairs come only from each bucket's BUCKET_PIVOTS lowest-ranked members, so
v has at most BUCKET_PIVOTS x bands of them) while a template's star centre has M higher ones. So each document's
record (its state and its pairs to lower neighbours) stays on its own holder; nothing is routed to a star's centre.

The rule (Blelloch, Fineman and Shun, "Greedy sequential maximal independent set and matching are parallel on
average", SPAA 2012): a document is kept once all its lower neighbours are removed (at once when it has none),
removed once one of them is kept. Deciding in rounds by that rule gives exactly the sequential walk's set. A round
is a pull (`clusters.ask_owners`): each rank asks the holders of the distinct lower neighbours of its undecided documents for their state,
each once per asking rank (a star's centre is asked by N ranks, not M documents), and a holder answers from its
records (a document without one has no lower neighbour: kept). A star or a clique of pivots settles in one round;
a chain in keep order decides one document a round, which is why the caller bounds the rounds and solves what is
left another way (`close_for_residual`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.dedup.clusters import Exchange, OwnerOf, ask_owners, positions_of, run_starts

UNDECIDED, KEPT, REMOVED = 0, 1, 2  # int8 states


@dataclass
class Records:
    """One rank's records: its documents that have a lower neighbour, their states, and per pair (u, v) held here
    the state of u as last heard. The arrays are updated in place, round after round."""

    nodes: np.ndarray  # int64 (records,) ascending: the v of this rank's pairs, each once
    state: np.ndarray  # int8 (records,)
    pairs: np.ndarray  # int64 (pairs, 2): (u, v), u ranked before v, v held here
    of_pair: np.ndarray  # int64 (pairs,): each pair's v as a position in nodes
    heard: np.ndarray  # int8 (pairs,): u's state as last heard

    @classmethod
    def of(cls, pairs: np.ndarray) -> Records:
        nodes = np.unique(pairs[:, 1])
        return cls(nodes, np.zeros(len(nodes), np.int8), pairs, np.searchsorted(nodes, pairs[:, 1]),
                   np.zeros(len(pairs), np.int8))  # fmt: skip

    def state_of(self, docs: np.ndarray) -> np.ndarray:
        """States (int8) of documents held here; one without a record has no lower neighbour, so it is kept."""
        if len(self.nodes) == 0:
            return np.full(len(docs), KEPT, np.int8)
        at = np.minimum(np.searchsorted(self.nodes, docs), len(self.nodes) - 1)
        return np.where(self.nodes[at] == docs, self.state[at], np.int8(KEPT))

    def undecided(self) -> int:
        return int(np.count_nonzero(self.state == UNDECIDED))

    def open_pairs(self) -> np.ndarray:
        """Mask of the pairs whose v is undecided and whose u was last heard undecided: what a pull asks about."""
        return (self.state[self.of_pair] == UNDECIDED) & (self.heard == UNDECIDED)

    def settle(self, keep: bool) -> None:
        """Remove each undecided document that heard of a kept lower neighbour; with `keep`, keep each one whose
        lower neighbours were all heard removed."""
        claimed = np.zeros(len(self.nodes), bool)
        claimed[self.of_pair[self.heard == KEPT]] = True
        waiting = np.zeros(len(self.nodes), bool)
        waiting[self.of_pair[self.heard == UNDECIDED]] = True
        undecided = self.state == UNDECIDED
        self.state[undecided & claimed] = REMOVED
        if keep:
            self.state[undecided & ~claimed & ~waiting] = KEPT

    def finish(self, removed: np.ndarray) -> None:
        """The residual's outcome: `removed` (held here, each with a record) removed, every other undecided kept."""
        self.state[np.searchsorted(self.nodes, removed)] = REMOVED
        self.state[self.state == UNDECIDED] = KEPT


def pull_round(ex: Exchange, records: Records, owner_of: OwnerOf) -> None:
    """Hear the current state of every open pair's u (each distinct u asked once by this rank)."""
    asking = records.open_pairs()
    wanted, at = np.unique(records.pairs[asking, 0], return_inverse=True)
    records.heard[asking] = ask_owners(ex, wanted, owner_of, records.state_of, "greedy states")[at.reshape(-1)]


def decide_in_rounds(ex: Exchange, records: Records, owner_of: OwnerOf, bound: int) -> tuple[int, int]:
    """(rounds, documents still undecided on all ranks) after pulling and settling until every document is decided
    or `bound` rounds have passed. Collective: one allreduce per round besides the pull."""
    rounds = 0
    undecided = int(ex.comm.allreduce_sum(records.undecided()))
    while undecided and rounds < bound:
        pull_round(ex, records, owner_of)
        records.settle(keep=True)
        rounds += 1
        undecided = int(ex.comm.allreduce_sum(records.undecided()))
    return rounds, undecided


def close_for_residual(ex: Exchange, records: Records, owner_of: OwnerOf) -> np.ndarray:
    """The open pairs after one more pull that only removes, so that no kept document goes unheard by an undecided
    one. The greedy walk in keep order over the pairs among the documents still undecided is then the rest of the
    answer (an undecided document's other lower neighbours are all removed); some of these pairs' u were removed by
    this very pull, which their holders know (`solve_residual` leaves them out)."""
    pull_round(ex, records, owner_of)
    records.settle(keep=False)
    return records.pairs[records.open_pairs()]


def assign_removed(
    ex: Exchange, records: Records, similarity: np.ndarray, doc_index: np.ndarray, keys: np.ndarray, owner_of: OwnerOf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept, removed, similarity): each removed document held here with its most similar kept lower neighbour
    (ties: the lower-ranked one), from one pull of the final state and keep-order key of its lower neighbours."""
    of_removed = (records.state[records.of_pair] == REMOVED) & (records.heard != REMOVED)
    u, v, sim = records.pairs[of_removed, 0], records.pairs[of_removed, 1], similarity[of_removed]
    wanted, at = np.unique(u, return_inverse=True)

    def state_and_key(docs: np.ndarray) -> np.ndarray:
        return np.column_stack([records.state_of(docs), keys[positions_of(doc_index, docs, "assign_removed")]
                                .view(np.int64)])  # fmt: skip

    answers = ask_owners(ex, wanted, owner_of, state_and_key, "keeper states")[at.reshape(-1)]
    kept = answers[:, 0] == KEPT
    u, v, sim, key = u[kept], v[kept], sim[kept], answers[kept, 1].view(np.uint64)
    best = np.lexsort((u, key, -sim, v))
    best = best[run_starts(v[best])]
    return u[best], v[best], sim[best]
