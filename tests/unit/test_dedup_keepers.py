"""Keepers decided where the documents live (components.select_keepers, greedy_rounds.py): the sequential greedy's
kept set and assignments on any rank count and task layout, within the stated rounds, and no hot rank for a giant
star or pivot clique.

Multi-rank cases run on simulated ranks (threads meeting in every collective, tests/support/sim_comm.py).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from support.graphs import graph
from support.sim_comm import run_ranks

from data_pipeline.dedup.clusters import Exchange, rank_key
from data_pipeline.dedup.components import greedy_round_bound, select_keepers
from data_pipeline.dedup.lsh import BUCKET_PIVOTS

RANK_COUNTS = (1, 2, 3, 4, 8)


def layouts(n: int, size: int) -> dict[str, np.ndarray]:
    """Which rank holds each document: interleaved (as assign_tasks deals equal tasks), contiguous blocks, random."""
    blocks = np.concatenate([np.full(len(b), r) for r, b in enumerate(np.array_split(np.arange(n), size))])
    return {"interleaved": np.arange(n) % size, "contiguous": blocks,
            "random": np.random.default_rng(size).integers(0, size, n)}  # fmt: skip


def star(n: int, centre_first: bool) -> np.ndarray:
    """A template and its n - 1 copies: the centre is document 0 (first in keep order) or n - 1 (last)."""
    centre = 0 if centre_first else n - 1
    leaves = np.arange(1, n) if centre_first else np.arange(n - 1)
    return np.sort(np.column_stack([np.full(n - 1, centre), leaves]), axis=1)


def pivot_clique(n: int) -> np.ndarray:
    """What LSH proposes for n identical documents: every member paired with the BUCKET_PIVOTS lowest-ranked."""
    return np.array([(p, v) for p in range(BUCKET_PIVOTS) for v in range(p + 1, n)], np.int64)


CASES = {  # name: (pairs, keep priority of each document)
    "chain in keep order": (graph("chain", 300), np.zeros(300, np.int64)),
    "chain against keep order": (graph("chain", 300), -np.arange(300)),  # keep=longest, lengths growing
    "chain of 200 in keep order": (graph("chain", 200), np.zeros(200, np.int64)),  # 8 rounds: the closing pull removes
    "zigzag chain": (graph("zigzag", 300), np.zeros(300, np.int64)),
    "shuffled chain": (graph("shuffled_chain", 300, seed=3), np.zeros(300, np.int64)),
    "star, centre first": (star(300, True), np.zeros(300, np.int64)),
    "star, centre last": (star(300, False), np.zeros(300, np.int64)),
    "clique": (graph("clique", 40), np.zeros(40, np.int64)),
    "pivot clique": (pivot_clique(300), np.zeros(300, np.int64)),
    "tree": (graph("tree", 300), np.zeros(300, np.int64)),
    "grid": (graph("grid", 324), np.zeros(324, np.int64)),
    "random": (graph("random", 300, seed=4), np.random.default_rng(4).integers(0, 3, 300)),
    "random, dense": (
        np.unique(np.sort(np.random.default_rng(6).integers(0, 200, (1200, 2)), axis=1), axis=0),
        np.random.default_rng(6).integers(0, 2, 200),
    ),  # fmt: skip
}


def reference_keepers(pairs: np.ndarray, similarity: np.ndarray, priority: np.ndarray) -> list[tuple]:
    """The sequential greedy, as sorted (kept, removed, similarity): walk by (priority, index); a document no kept
    neighbour claimed is kept; a removed one goes to its most similar kept lower neighbour (ties: the lower-ranked)."""
    order = sorted(np.unique(pairs).tolist(), key=lambda d: (int(priority[d]), d))
    position = {doc: at for at, doc in enumerate(order)}
    lower = defaultdict(list)
    for (a, b), sim in zip(pairs.tolist(), similarity.tolist(), strict=True):
        u, v = (a, b) if position[a] < position[b] else (b, a)
        lower[v].append((u, sim))
    kept, assignments = set(), []
    for doc in order:
        claims = [(u, sim) for u, sim in lower[doc] if u in kept]
        if claims:
            u, sim = min(claims, key=lambda claim: (-claim[1], position[claim[0]]))
            assignments.append((u, doc, sim))
        else:
            kept.add(doc)
    return sorted(assignments)


def keepers_on(size: int, owners: np.ndarray, pairs: np.ndarray, priority: np.ndarray, similarity: np.ndarray):
    """select_keepers on `size` simulated ranks, rank r holding the documents with owners == r, pairs oriented
    lower-ranked first and held by their higher document's rank (as verification leaves them). Per rank: (removed,
    assignments as tuples, greedy rounds, component rounds, bytes received)."""
    keys = rank_key(priority)
    position = np.empty(len(priority), np.int64)
    position[np.lexsort((np.arange(len(priority)), keys))] = np.arange(len(priority))
    oriented = np.where((position[pairs[:, 0]] < position[pairs[:, 1]])[:, None], pairs, pairs[:, ::-1])

    def rank(comm):
        doc_index = np.flatnonzero(owners == comm.rank)
        mine = owners[oriented[:, 1]] == comm.rank
        ex = Exchange(comm)
        keepers = select_keepers(ex, oriented[mine], similarity[mine], doc_index, keys[doc_index],
                                 lambda i: owners[np.asarray(i, np.int64)])  # fmt: skip
        assignments = list(zip(*(a.tolist() for a in keepers.assignments), strict=True))
        return keepers.removed.tolist(), assignments, keepers.greedy_rounds, keepers.component_rounds, ex.received

    return run_ranks(size, rank)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_keepers_as_the_sequential_greedy_on_any_rank_count_and_layout(case):
    """Kept set, removed documents' holders, assignments and rounds at N = 1, 2, 3, 4, 8, three layouts each;
    similarities are MinHash-like (k/128), so equal best similarities and their tie rule are exercised."""
    pairs, priority = CASES[case]
    similarity = np.random.default_rng(len(pairs)).integers(100, 129, len(pairs)) / 128
    expected = reference_keepers(pairs, similarity, priority)
    records = len(pairs) if case.startswith("chain") else None  # a chain's documents but its first have a record
    for size in RANK_COUNTS:
        for layout, owners in layouts(int(pairs.max()) + 1, size).items():
            per_rank = keepers_on(size, owners, pairs, priority, similarity)
            assert sorted(t for part in per_rank for t in part[1]) == expected, (case, size, layout)
            assert sorted(i for part in per_rank for i in part[0]) == sorted(t[1] for t in expected)
            for r, part in enumerate(per_rank):  # a rank learns, and assigns, only its own removed documents
                assert all(owners[i] == r for i in part[0]) and [t[1] for t in part[1]] == part[0]
            check_rounds(case, pairs, {part[2:4] for part in per_rank}, records)


def check_rounds(case: str, pairs: np.ndarray, rounds: set[tuple[int, int]], records: int | None) -> None:
    """The stated bound: at most greedy_round_bound + 1 pulls (of the documents with a lower neighbour, at most the
    n documents in pairs), then the residual's component rounds, at most ceil(log2 n); every rank agrees. Stars and
    cliques settle in one pull; a chain in keep order, exactly: one document a round, the closing pull, the rest."""
    assert len(rounds) == 1
    greedy, components = rounds.pop()
    n = len(np.unique(pairs))
    assert greedy <= greedy_round_bound(n) + 1 and components <= math.ceil(math.log2(n)), case
    if "star" in case or "clique" in case:
        assert (greedy, components) == (1, 0), case
    if records is not None:  # one document decided a round, then the closing pull, which removes one more when the
        bound = greedy_round_bound(records)  # last round kept one: the rest is one chain for the components
        residual = n - bound - 1 - (bound % 2 == 0)
        assert (greedy, components) == (bound + 1, math.ceil(math.log2(residual)))


def test_chain_rounds_against_the_old_bound():
    """The issue's case: 1,999 rounds before components; 11 component rounds with one-rank walks; now 12 pulls
    (11 rounds, one document each, and the closing one) and 11 component rounds for the 1,988 documents left."""
    n = 2000
    pairs = graph("chain", n)
    for size in (2, 4, 16):
        per_rank = keepers_on(size, np.arange(n) % size, pairs, np.zeros(n, np.int64), np.full(n - 1, 0.9))
        assert {part[2:4] for part in per_rank} == {(12, 11)}
        assert sorted(i for part in per_rank for i in part[0]) == list(range(1, n, 2))


SOLVE_PULLS = 2  # a star or a pivot clique: one greedy round, then the pull of the keepers' states


@pytest.mark.parametrize("shape", ["star", "pivot clique"])
@pytest.mark.parametrize("size", [4, 8])
def test_a_giant_component_is_decided_where_its_members_live(shape, size):
    """A template with M = 8,000 near copies spread over the ranks. Before, every member and pair went to the rank
    holding document 0 (24 B a pair and 16 B a member, besides each round's edges: 496 kB of the star at N = 4).
    Now a rank receives per pull 16 B per (asking rank, lower neighbour held here) and at most 16 B per distinct
    lower neighbour of its own pairs: O(N) + O(M/N) at worst (a star's copies all ask about one centre)."""
    m = 8000
    pairs = star(m, True) if shape == "star" else pivot_clique(m)
    owners = np.arange(m) % size
    per_rank = keepers_on(size, owners, pairs, np.zeros(m, np.int64), np.full(len(pairs), 0.9))
    assert sorted(i for part in per_rank for i in part[0]) == list(range(1, m))
    assert {t[0] for part in per_rank for t in part[1]} == {0}  # every copy assigned to the template
    before = 24 * len(pairs) + 16 * m  # what the rank solving the component received, edges not counted
    for r, part in enumerate(per_rank):
        asked_here = np.unique(pairs[:, 0][owners[pairs[:, 0]] == r])  # the lower neighbours held here
        lower = np.unique(pairs[owners[pairs[:, 1]] == r, 0])  # the distinct lower neighbours of its pairs
        bound = SOLVE_PULLS * 16 * (size * len(asked_here) + len(lower))
        assert part[2:4] == (SOLVE_PULLS - 1, 0)
        assert sum(part[4].values()) <= bound <= SOLVE_PULLS * 16 * (size + 1) * BUCKET_PIVOTS < before, r
