"""Keepers of the verified-pair graph in a bounded number of exchange rounds: components first, then each one alone.

Which documents a cluster keeps is the greedy independent set of the verified pairs in keep order (see
clusters.py): walking the documents from the lowest-ranked, one is kept unless an already-kept neighbour claims
it. That walk is sequential along a chain, so deciding it across ranks takes one exchange per crossing (a
2,000-document chain dealt round-robin over ranks took 1,999 rounds). It is also local to a connected component:
the greedy set of the graph is the union of its components' greedy sets. So:

1. `component_labels`: the connected components of the verified pairs with Kiveris et al.'s alternating
   large-star / small-star steps ("Connected Components in MapReduce and Beyond", SoCC 2014; the edge-list
   algorithm behind big-graph CC jobs). Edges are grouped by the rank holding their first node (`owner_of`); a
   step rewires every node's edges towards the smallest node it sees, never adding edges. The loop stops when the
   edges form stars around each component's smallest document, its label. The paper proves O(log^2 n) rounds
   (for node labels in random order). Measured here, with global indices as labels: at most ceil(log2 n) rounds
   for n documents in pairs, exactly that on a chain in index order (11 at n = 2,000), fewer on chains in any
   other order, spiders, grids, ladders, trees, stars and cliques, at any task layout
   (tests/unit/test_dedup_components.py, benchmarks/bench_dedup_scaling.py). Past `round_bound(n)` = ceil(log2 n)^2
   + 2 it raises (a bug or an input far from all of those; never a silent wait). A round is two
   `Exchange.route` calls and one allreduce.
2. `select_keepers`: every component's nodes (with their keep order) and verified pairs go to the rank
   holding its label document, which walks the greedy set over all its components at once in keep order on
   flat arrays (one pass, a numpy slice per kept document). Each removed document goes to its most similar kept
   lower-ranked neighbour; only the removed documents' holders hear of them.

The result depends only on the graph and the keep order, never on N or on which rank holds what. Memory on the
rank solving a component of M documents and E pairs: 16 B per document and 24 B per pair in flat arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_pipeline.dedup.clusters import Exchange, OwnerOf, positions_of, run_starts, unique_rows


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
    assignments: tuple[np.ndarray, np.ndarray, np.ndarray]  # (kept, removed, similarity) of components solved here
    rounds: int  # component rounds (identical on every rank)


def select_keepers(
    ex: Exchange, pairs: np.ndarray, similarity: np.ndarray, doc_index: np.ndarray, keys: np.ndarray, owner_of: OwnerOf
) -> Keepers:
    """The greedy independent set in keep order of the verified pairs (u, v), u ranked below v, v held here."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    nodes, labels, rounds = component_labels(ex, pairs, owner_of)
    key_of_node = keys[positions_of(doc_index, nodes, "select_keepers")].view(np.int64)
    node_rows = ex.route(np.column_stack([nodes, key_of_node]), owner_of(labels), "component nodes")
    label = labels[np.searchsorted(nodes, pairs[:, 1])] if len(nodes) else np.zeros(0, np.int64)  # u's too
    edge_rows = np.column_stack([pairs, np.asarray(similarity, np.float64).view(np.int64)])
    edge_rows = ex.route(edge_rows, owner_of(label), "component pairs")  # the label only routes: 24 B a pair
    assignments = greedy_in_keep_order(node_rows[:, 0], node_rows[:, 1].view(np.uint64), edge_rows)
    removed = ex.route(assignments[1], owner_of(assignments[1]), "decisions")
    return Keepers(np.sort(removed), assignments, rounds)


def greedy_in_keep_order(
    nodes: np.ndarray, keys: np.ndarray, edge_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept, removed, similarity) of the greedy set over whole components, from edge rows (u, v, similarity
    bits): walk nodes by (key, index); a node no kept neighbour claimed is kept and claims its higher neighbours.
    Each removed node goes to its most similar kept lower neighbour (ties: the lower-ranked one)."""
    order = np.lexsort((nodes, keys))
    rank_of = np.empty(len(nodes), np.int64)
    rank_of[order] = np.arange(len(nodes))
    by_index = np.argsort(nodes)
    lower = rank_of[by_index[np.searchsorted(nodes[by_index], edge_rows[:, 0])]]
    higher = rank_of[by_index[np.searchsorted(nodes[by_index], edge_rows[:, 1])]]
    removed = _walk(len(nodes), lower, higher)
    take = ~removed[lower] & removed[higher]
    u, v, sim = lower[take], higher[take], edge_rows[take, 2].view(np.float64)
    best = np.lexsort((u, -sim, v))
    best = best[run_starts(v[best])]
    by_rank = nodes[order]
    return by_rank[u[best]], by_rank[v[best]], sim[best]


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
