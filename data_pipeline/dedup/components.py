"""Keepers of the verified-pair graph, decided where the documents live in bounded rounds; components only for the
rest.

Which documents a cluster keeps is the greedy independent set of the verified pairs in keep order (see
clusters.py): walking the documents from the lowest-ranked, one is kept unless an already-kept neighbour claims
it. `select_keepers` decides it in three steps, none of which sends a component to one rank unless step 1 leaves it
undecided:

1. Pull rounds where the documents live (greedy_rounds.py): each verified pair (u, v) stays on v's holder, which
   asks the holders of its undecided documents' lower neighbours for their state, once per distinct neighbour; a
   document is kept once all its lower neighbours are removed, removed once one is kept (Blelloch, Fineman and Shun,
   SPAA 2012: exactly the sequential walk's set). A template's star or a clique of pivots settles in one round,
   and its centre's holder receives one request per asking rank, not per member. Rounds stop when every document
   is decided, or after `greedy_round_bound(n)` = ceil(log2 n) rounds for n documents with a lower neighbour: a
   chain in keep order decides one document a round. Then one more pull that only removes (so no kept document
   goes unheard), and what is still undecided is the residual.
2. The residual, as before for the whole graph: the greedy walk over the pairs among undecided documents in keep
   order is the rest of the answer (their other lower neighbours are all removed), and it is local to each
   connected component. `component_labels` finds the components with Kiveris et al.'s alternating large-star /
   small-star steps ("Connected Components in MapReduce and Beyond", SoCC 2014): edges are grouped by the rank
   holding their first node (`owner_of`); a step rewires every node's edges towards the smallest node it sees,
   never adding edges, until the edges form stars around each component's smallest document, its label. The paper
   proves O(log^2 n) rounds (for labels in random order); measured here with global indices as labels, at most
   ceil(log2 n) for n documents in pairs, exactly that on a chain in index order (11 at n = 2,000), fewer on chains
   in any other order, spiders, grids, ladders, trees, stars and cliques, at any task layout
   (tests/unit/test_dedup_components.py). Past `round_bound(n)` = ceil(log2 n)^2 + 2 it raises (a bug; never a
   silent wait). A round is two `Exchange.route` calls and one allreduce. `solve_residual` then sends each
   component's undecided documents (with their keep order) and pairs to the rank holding its label, which walks
   all its components at once on flat arrays (one pass, a numpy slice per kept document), and tells the removed
   documents' holders.
3. One last pull (`assign_removed`): each removed document's holder hears the final state and keep order of its
   lower neighbours and assigns the document to its most similar kept one (ties: the lower-ranked one). The
   (kept, removed, similarity) rows stay there; `clusters.gather_clusters` sends them to the kept document's rank.

Rounds (`Keepers.rounds`): at most ceil(log2 n) + 1 pulls, plus the residual's component rounds (none when the pulls
decided everything), plus the assignment pull, which is not counted; measured in tests/unit/test_dedup_keepers.py
and benchmarks/bench_dedup_scaling.py. The result depends only on the graph and the keep order, never on N or on
which rank holds what. Memory: a rank holds its own pairs (24 B with their similarity), 9 B more per pair and 9 B per
document with a lower neighbour (position, state); only the residual's components are solved on one rank (16 B per
document and 16 B per pair there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_pipeline.dedup.clusters import Exchange, OwnerOf, positions_of, run_starts, unique_rows
from data_pipeline.dedup.greedy_rounds import (
    REMOVED,
    UNDECIDED,
    Records,
    assign_removed,
    close_for_residual,
    decide_in_rounds,
)


def round_bound(nodes: int) -> int:
    """Rounds `component_labels` may take on `nodes` nodes before it is declared broken: the proven order, log^2 n."""
    return math.ceil(math.log2(max(nodes, 2))) ** 2 + 2


def unique_pairs(rows: np.ndarray) -> np.ndarray:
    """`clusters.unique_rows` of (a, b) int64 rows, sorted as one 64-bit key a * 2^32 + b per row when every value
    is in [0, 2^32) (global indices of up to 4.3B documents; else unique_rows itself): 8 bytes of sort key per
    row instead of an 8-byte sort order and a 16-byte sorted copy, and rows without repeats are rewritten in place
    (the array passed in is consumed). For near dedup's pair and edge lists, the largest arrays it holds."""
    rows = np.ascontiguousarray(rows, np.int64).reshape(-1, 2)
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= 1 << 32:
        return unique_rows(rows)
    keys = rows[:, 0].astype(np.uint64) << np.uint64(32)
    keys |= rows[:, 1].astype(np.uint64)
    keys.sort()
    if not (starts := run_starts(keys)).all():
        keys = keys[starts]
    out = rows if len(keys) == len(rows) else np.empty((len(keys), 2), np.int64)
    out[:, 0] = keys >> np.uint64(32)
    out[:, 1] = keys & np.uint64(0xFFFFFFFF)
    return out


def _groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by their first column: the start of each node's run, and each row's run number."""
    first = run_starts(rows[:, 0])
    group = np.cumsum(first)
    group -= 1  # in place: one 8-byte array per row, not two
    return np.flatnonzero(first), group


def large_star(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """One large-star step over the symmetric edges (u, v) of nodes u held here (sorted, unique).

    Each node u links its larger neighbours to m(u), the smallest of u and its neighbours. Also returns the
    nodes that keep the edges from being a star forest (a node with a smaller neighbour and more than one)."""
    if len(edges) == 0:
        return edges, 0
    starts, group = _groups(edges)
    smallest = np.minimum(np.minimum.reduceat(edges[:, 1], starts), edges[starts, 0])
    degree = np.diff(np.r_[starts, len(edges)])
    unsettled = int(np.sum((smallest < edges[starts, 0]) & (degree > 1)))
    larger = edges[:, 1] > edges[:, 0]
    anchor = smallest[group[larger]]
    del group  # before the new edges are built: the peak of component_labels on a star's centre
    return np.column_stack([edges[larger, 1], anchor]), unsettled


def small_star(edges: np.ndarray) -> np.ndarray:
    """One small-star step over edges (u, v), v < u, of nodes u held here (sorted, unique): u and its smaller
    neighbours all link to the smallest of them."""
    if len(edges) == 0:
        return edges
    starts, group = _groups(edges)
    smallest = edges[starts, 1]  # sorted by (u, v): the first v of each run
    others = edges[:, 1] != smallest[group]
    centres = np.column_stack([edges[starts, 0], smallest])
    return np.concatenate([centres, np.column_stack([edges[others, 1], smallest[group[others]]])])


def _route_both_ways(ex: Exchange, edges: np.ndarray, owner_of: OwnerOf) -> np.ndarray:
    """Each edge (a, b) as (a, b) to a's rank and as (b, a) to b's rank; sorted and unique there."""
    both = np.concatenate([edges, edges[:, ::-1]])
    return unique_pairs(ex.route(both, owner_of(both[:, 0]), "components"))


def component_labels(ex: Exchange, pairs: np.ndarray, owner_of: OwnerOf) -> tuple[np.ndarray, np.ndarray, int]:
    """(nodes, labels, rounds): every node of the pairs held here and the smallest document of its component.

    pairs: (u, v) global indices, any rank may hold any pair; owner_of: the rank grouping each node's edges."""
    edges = _route_both_ways(ex, pairs, owner_of)
    nodes_total = int(ex.comm.allreduce_sum(int(run_starts(edges[:, 0]).sum())))
    for rounds in range(round_bound(nodes_total) + 1):
        stars, unsettled = large_star(edges)
        if int(ex.comm.allreduce_sum(unsettled)) == 0:
            return _labels(edges) + (rounds,)
        leaning = unique_pairs(ex.route(stars, owner_of(stars[:, 0]), "components"))
        edges = _route_both_ways(ex, small_star(leaning), owner_of)
    raise RuntimeError(f"near dedup: connected components did not settle in {round_bound(nodes_total)} rounds (a bug)")


def _labels(star_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes held here and their labels, from edges that form stars around each component's smallest node."""
    if len(star_edges) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts, _ = _groups(star_edges)
    nodes = star_edges[starts, 0]
    return nodes, np.minimum(nodes, np.minimum.reduceat(star_edges[:, 1], starts))


@dataclass
class Keepers:
    """What `select_keepers` decided, as seen by one rank."""

    removed: np.ndarray  # this rank's removed documents (global indices), ascending
    assignments: tuple[np.ndarray, np.ndarray, np.ndarray]  # (kept, removed, similarity) of the removed held here
    greedy_rounds: int  # pull rounds deciding the greedy set where the documents live (identical on every rank)
    component_rounds: int  # component rounds of the residual (0 when the pull rounds decided everything)

    @property
    def rounds(self) -> int:
        """Exchange rounds in all, for DedupResult.rounds."""
        return self.greedy_rounds + self.component_rounds


def greedy_round_bound(nodes: int) -> int:
    """Pull rounds before what is undecided goes to the residual solve: ceil(log2 n) for n documents with a lower
    neighbour, so the rounds stay logarithmic even on a chain in keep order (one document a round)."""
    return math.ceil(math.log2(max(nodes, 2)))


def select_keepers(
    ex: Exchange, pairs: np.ndarray, similarity: np.ndarray, doc_index: np.ndarray, keys: np.ndarray, owner_of: OwnerOf
) -> Keepers:
    """The greedy independent set in keep order of the verified pairs (u, v), u ranked below v, v held here."""
    records = Records.of(np.asarray(pairs, np.int64).reshape(-1, 2))
    bound = greedy_round_bound(int(ex.comm.allreduce_sum(len(records.nodes))))
    greedy_rounds, undecided = decide_in_rounds(ex, records, owner_of, bound)
    component_rounds = 0
    if undecided:
        residual = close_for_residual(ex, records, owner_of)
        removed, component_rounds = solve_residual(ex, residual, records, doc_index, keys, owner_of)
        records.finish(removed)
        greedy_rounds += 1
    assignments = assign_removed(ex, records, np.asarray(similarity, np.float64), doc_index, keys, owner_of)
    return Keepers(records.nodes[records.state == REMOVED], assignments, greedy_rounds, component_rounds)


def solve_residual(
    ex: Exchange, pairs: np.ndarray, records: Records, doc_index: np.ndarray, keys: np.ndarray, owner_of: OwnerOf
) -> tuple[np.ndarray, int]:
    """(removed documents held here, component rounds) of the greedy walk over the documents still undecided and
    the pairs (u, v) among them (v held here; a pair whose u was just removed is left out where u lives): each
    component's undecided documents (with their keep order) and pairs go to the rank holding its smallest document,
    which walks all its components at once; only the removed documents' holders hear of them."""
    nodes, labels, rounds = component_labels(ex, pairs, owner_of)
    undecided = records.state_of(nodes) == UNDECIDED
    key_of_node = keys[positions_of(doc_index, nodes[undecided], "solve_residual")].view(np.int64)
    node_rows = ex.route(np.column_stack([nodes[undecided], key_of_node]), owner_of(labels[undecided]),
                         "component nodes")  # fmt: skip
    label = labels[np.searchsorted(nodes, pairs[:, 1])] if len(nodes) else np.zeros(0, np.int64)  # u's too
    pair_rows = ex.route(pairs, owner_of(label), "component pairs")  # the label only routes: 16 B a pair
    removed = greedy_removed(node_rows[:, 0], node_rows[:, 1].view(np.uint64), pair_rows)
    return ex.route(removed, owner_of(removed), "decisions"), rounds


def greedy_removed(nodes: np.ndarray, keys: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The nodes the greedy walk in keep order (key, index) removes, over whole components given by their pairs
    (a pair with an end outside `nodes` is ignored): a node no kept neighbour claimed is kept and claims its higher
    neighbours."""
    order = np.lexsort((nodes, keys))
    by_index = np.argsort(nodes)
    rank_of = np.empty(len(nodes), np.int64)
    rank_of[order] = np.arange(len(nodes))
    sorted_nodes = nodes[by_index]
    at = np.minimum(np.searchsorted(sorted_nodes, pairs), max(len(nodes) - 1, 0))
    inside = (sorted_nodes[at] == pairs).all(axis=1) if len(nodes) else np.zeros(len(pairs), bool)
    ends = rank_of[by_index[at[inside]]]  # (pairs inside, 2): positions in keep order
    removed = _walk(len(nodes), ends.min(axis=1), ends.max(axis=1))
    return nodes[order][removed]


def _walk(count: int, lower: np.ndarray, higher: np.ndarray) -> np.ndarray:
    """Removed mask of the greedy set over nodes 0..count-1 in that order, edges lower -> higher.

    One step per kept node: bytearray.find jumps over the removed ones at C speed."""
    by_lower = np.argsort(lower, kind="stable")
    bounds = np.searchsorted(lower[by_lower], np.arange(count + 1))
    targets = higher[by_lower]
    state = bytearray(count)
    removed = np.frombuffer(state, np.uint8)
    node = state.find(0)
    while node != -1:
        removed[targets[bounds[node] : bounds[node + 1]]] = 1
        node = state.find(0, node + 1)
    return removed.astype(bool)
