"""Connected components in logarithmic rounds at any rank count and task layout, the pairs a bucket proposes (no
pair missed behind one unlike lower-ranked member), and a chain end to end. The keepers themselves:
test_dedup_keepers.py.

Multi-rank cases run on simulated ranks (threads meeting in every collective, tests/support/sim_comm.py), with documents
dealt round-robin as `assign_tasks` deals equal tasks: a chain then crosses ranks at every step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from support.graphs import graph
from support.sim_comm import run_ranks

from data_pipeline.comm import LocalComm
from data_pipeline.dedup import lsh
from data_pipeline.dedup.clusters import Exchange, unique_rows
from data_pipeline.dedup.components import component_labels, greedy_round_bound, round_bound, unique_pairs
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates

PARAMS = LSHParams.from_threshold(0.8, 128, bands=12, rows=10)  # the decoy signatures are built for 10-row bands
RANK_COUNTS = (1, 2, 4, 16)


FAMILIES = {"chain": 2000, "zigzag": 1500, "bit_reversed_chain": 2048, "shuffled_chain": 1500, "star": 1500,
            "clique": 60, "tree": 1500, "grid": 1600, "random": 1500}  # fmt: skip


def smallest_of_component(n: int, pairs: np.ndarray) -> dict[int, int]:
    """scipy's components: each node of the pairs -> the smallest node of its component."""
    _, labels = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)))
    nodes = np.unique(pairs)
    smallest: dict[int, int] = {}
    for node, label in zip(nodes.tolist(), labels[nodes].tolist(), strict=True):
        smallest.setdefault(label, node)
    return {node: smallest[label] for node, label in zip(nodes.tolist(), labels[nodes].tolist(), strict=True)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_components_in_logarithmic_rounds_at_any_rank_count(family):
    n = FAMILIES[family]
    pairs = graph(family, n)
    expected = smallest_of_component(n, pairs)
    for size in RANK_COUNTS:
        owners = np.arange(n) % size  # round-robin, as assign_tasks deals equal tasks

        def rank(comm, owners=owners):
            mine = owners[pairs[:, 0]] == comm.rank
            return component_labels(Exchange(comm), pairs[mine], lambda i: owners[np.asarray(i, np.int64)])

        per_rank = run_ranks(size, rank)
        found = {int(a): int(b) for part in per_rank for a, b in zip(part[0], part[1], strict=True)}
        assert found == expected, (family, size)
        for r, part in enumerate(per_rank):  # a rank learns labels of its own documents only
            assert np.all(owners[part[0]] == r)
        rounds = {part[2] for part in per_rank}
        assert len(rounds) == 1  # every rank agrees when it is done
        # measured: never more than ceil(log2 n) (a chain of n: exactly that); the guard is round_bound(n)
        assert rounds.pop() <= math.ceil(math.log2(len(expected))) <= round_bound(len(expected)), (family, size)


# ------------------------------------------------------------------------------------ pairs a bucket proposes


def decoy_signatures(decoys: int) -> np.ndarray:
    """`decoys` documents u, then v and w with est. J(v, w) = 122/128 = 0.95, every band they share also shared by
    each u, while est. J(u, x) = 60/128 for any other document x: every u fails verification against all."""
    rng = np.random.default_rng(5)
    v = rng.integers(0, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
    w = v.copy()
    w[np.arange(6) * 10] += np.uint32(1)  # one value in each of bands 0..5: v, w share bands 6..11
    sigs = []
    for _ in range(decoys):
        u = rng.integers(0, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
        u[60:120] = v[60:120]
        sigs.append(u)
    return np.stack([*sigs, v, w])


@pytest.mark.parametrize("decoys", [1, lsh.BUCKET_PIVOTS - 1])
def test_pair_behind_unlike_lower_ranked_members_is_found(decoys):
    """Before: star pairs from the lowest-ranked member only, so v-w (J 0.95) was never proposed; nothing removed."""
    sigs = decoy_signatures(decoys)
    assert float(np.mean(sigs[-1] == sigs[-2])) == pytest.approx(0.953, abs=1e-3)
    assert all(float(np.mean(sigs[i] == sigs[-1])) < 0.5 for i in range(decoys))
    for size in (1, 2, 4):

        def rank(comm):
            index = np.arange(comm.rank, len(sigs), comm.size)
            owner_of = lambda doc: np.asarray(doc) % comm.size  # noqa: E731
            return find_near_duplicates(comm, index, sigs[index], PARAMS, None, None, owner_of)

        per_rank = run_ranks(size, rank)
        assert sorted(i for r in per_rank for i in r.removed.tolist()) == [decoys + 1]  # w, as v's duplicate
        assert [k for r in per_rank for k in r.clusters.kept.tolist()] == [decoys]


def test_pair_is_missed_only_behind_bucket_pivots_unlike_members():
    """The stated bound: v-w is missed when every bucket they share holds BUCKET_PIVOTS documents ranked below
    both, all unlike them; then its cost is one kept near duplicate."""
    sigs = decoy_signatures(lsh.BUCKET_PIVOTS)
    result = find_near_duplicates(LocalComm(), np.arange(len(sigs)), sigs, PARAMS)
    assert result.removed.tolist() == [] and result.verified_pairs == 0


@pytest.mark.parametrize("members", [3, 50])
def test_pairs_a_bucket_proposes(members):
    """A bucket of s members proposes each pair once from each of its BUCKET_PIVOTS lowest-ranked members:
    every pair when s <= BUCKET_PIVOTS + 1, else BUCKET_PIVOTS * s - BUCKET_PIVOTS (BUCKET_PIVOTS + 1) / 2."""
    sigs = np.tile(np.arange(128, dtype=np.uint32), (members, 1))  # identical: one bucket per band
    result = find_near_duplicates(LocalComm(), np.arange(members), sigs, PARAMS)
    p = min(lsh.BUCKET_PIVOTS, members - 1)
    assert result.candidate_pairs == p * members - p * (p + 1) // 2
    assert result.removed.tolist() == list(range(1, members))
    assert result.rounds <= 1  # the pivot pairs are one step from a star around document 0


def test_chain_of_signatures_dealt_round_robin_end_to_end():
    """2,000 signatures, each 20 values away from the one before (est. J 0.84 to its neighbours, 0.69 two apart):
    the keeper selection took 1,999 rounds on 2, 4 and 16 ranks; now 23 (12 pulls, then 11 component rounds for
    the 1,988 documents left: test_dedup_keepers.py), and every other document is removed."""
    n, rng = 2000, np.random.default_rng(11)
    sigs = np.empty((n, 128), np.uint32)
    sigs[0] = rng.integers(0, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
    for i in range(1, n):
        sigs[i] = sigs[i - 1]
        sigs[i, (np.arange(20) + 20 * i) % 128] = rng.integers(0, 1 << 32, 20, dtype=np.uint64).astype(np.uint32)
    for size in (1, 16):

        def rank(comm):
            index = np.arange(comm.rank, n, comm.size)
            owner_of = lambda doc: np.asarray(doc) % comm.size  # noqa: E731
            return find_near_duplicates(comm, index, sigs[index], LSHParams.from_threshold(0.8, 128), None, None,
                                        owner_of)  # fmt: skip

        per_rank = run_ranks(size, rank)
        assert per_rank[0].verified_pairs == n - 1
        assert sorted(i for r in per_rank for i in r.removed.tolist()) == list(range(1, n, 2))
        assert {r.rounds for r in per_rank} == {greedy_round_bound(n - 1) + 1 + math.ceil(math.log2(1988))}


@pytest.mark.parametrize(("rows", "low", "high"), [(0, 0, 1), (1, 0, 9), (5000, 0, 400), (5000, -3, 400),
                                                  (5000, 0, 1 << 40)])  # fmt: skip
def test_unique_pairs_equals_unique_rows(rows, low, high):
    """Sorted by (a, b) without repeats, as clusters.unique_rows, by one 64-bit key (0 <= values < 2^32) or not."""
    pairs = np.random.default_rng(rows).integers(low, high, (rows, 2))
    pairs[: rows // 2, 1] = pairs[: rows // 2, 0]  # rows that differ in b only
    expected = unique_rows(pairs.copy())
    assert np.array_equal(unique_pairs(pairs.copy()), expected) and (high > 1 << 20 or len(expected) < max(rows, 2))
    distinct = expected[::-1].copy()  # no repeats: rewritten in place
    result = unique_pairs(distinct)
    in_place = rows == 0 or high > 1 << 32 or low < 0 or np.shares_memory(result, distinct)
    assert np.array_equal(result, expected) and in_place
