"""Which document a cluster keeps, no chaining, rank-count invariance, and no rank hearing about others' documents.

Multi-rank cases run on simulated ranks (threads meeting in every collective, tests/support/sim_comm.py); the real
mpiexec runs are tests/integration/test_dedup_mpi.py and tests/integration/test_pipeline_mpi.py. The keeper
selection itself (the greedy set against a sequential reference, its rounds at any layout) is tested in
tests/unit/test_dedup_components.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.sim_comm import run_ranks

from data_pipeline.comm import LocalComm
from data_pipeline.dedup.clusters import fetch_ids, keep_priority, owner_of_blocks, rank_key
from data_pipeline.dedup.exact import exact_text_hashes, find_exact_duplicates
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates, planted_corpus, verify_bound
from data_pipeline.dedup.minhash import compute_signatures, shingle_hashes

PARAMS = LSHParams.from_threshold(0.8, 128)  # 16 bands x 8 rows


def chain_signatures() -> np.ndarray:
    """A~B~C: A and C each differ from B in 20 of 128 values (in different bands), so est. J(A,C) = 88/128."""
    rng = np.random.default_rng(0)
    b = rng.integers(0, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
    a, c = b.copy(), b.copy()
    a[0:20] += np.uint32(1)
    c[20:40] += np.uint32(1)
    return np.stack([a, b, c])


def test_chain_keeps_its_far_end():
    sigs = chain_signatures()
    assert PARAMS.rows == 8 and verify_bound(PARAMS) == pytest.approx(0.7293, abs=1e-4)
    result = find_near_duplicates(LocalComm(), np.arange(3), sigs, PARAMS)
    assert (result.candidate_pairs, result.verified_pairs) == (3, 2)  # A-C is a candidate, not verified (0.6875)
    assert result.removed.tolist() == [1]  # B goes with A; C is unlike A and stays
    assert list(result.clusters.records()) == [{"kept": 0, "removed": [1], "similarity": [round(108 / 128, 4)]}]
    # with the middle document first in the keep order, it keeps itself and removes both ends
    middle_first = find_near_duplicates(LocalComm(), np.arange(3), sigs, PARAMS, priority=np.array([1, 0, 1]))
    assert middle_first.removed.tolist() == [0, 2] and middle_first.clusters.kept.tolist() == [1]


def test_removed_documents_clear_the_bound_against_their_kept_document():
    """A random walk of mutations (each text a 3% edit of an earlier one): many chains, none merged through."""
    texts, _ = planted_corpus(4, 0, words=200, seed=3)
    rng = np.random.default_rng(3)
    for _ in range(120):
        tokens = texts[int(rng.integers(len(texts)))].split(" ")
        for position in rng.choice(200, 6, replace=False):
            tokens[position] = f"m{rng.integers(1 << 40)}"
        texts.append(" ".join(tokens))
    sigs = compute_signatures(texts, workers=1)
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), sigs, PARAMS)
    bound = verify_bound(PARAMS)
    pairs = [
        (c["kept"], r, s) for c in result.clusters.records() for r, s in zip(c["removed"], c["similarity"], strict=True)
    ]
    assert len(pairs) == len(result.removed) > 30
    for kept, removed, similarity in pairs:
        estimate = float(np.mean(sigs[kept] == sigs[removed]))
        assert round(estimate, 4) == similarity >= bound
    kept = set(range(len(texts))) - set(result.removed.tolist())
    assert not set(result.clusters.kept.tolist()) - kept


def test_recall_at_jaccard_09_is_kept():
    """Every planted copy with true word 5-gram Jaccard >= 0.9 to its base is removed as the base's duplicate."""
    texts, pairs = planted_corpus(300, 1, (0.005, 0.01, 0.015), words=200, seed=12)
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), compute_signatures(texts, workers=1), PARAMS)
    kept_of = {r: c["kept"] for c in result.clusters.records() for r in c["removed"]}
    shingles = [set(shingle_hashes(t).tolist()) for t in texts]
    close = [(a, b) for a, b in pairs if len(shingles[a] & shingles[b]) >= 0.9 * len(shingles[a] | shingles[b])]
    assert len(close) >= 190
    assert sum(kept_of.get(copy) == base for base, copy in close) >= 0.99 * len(close)


def test_verification_in_small_batches_decides_the_same(monkeypatch):
    import data_pipeline.dedup.lsh as lsh

    texts, _ = planted_corpus(40, 2, (0.005, 0.02, 0.05), words=150, seed=4)
    sigs = compute_signatures(texts, workers=1)
    whole = find_near_duplicates(LocalComm(), np.arange(len(texts)), sigs, PARAMS)
    monkeypatch.setattr(lsh, "VERIFY_BATCH_PAIRS", 3)

    def rank(comm):
        index = np.arange(comm.rank, len(texts), comm.size)
        return find_near_duplicates(comm, index, sigs[index], PARAMS, None, None, lambda i: np.asarray(i) % 3)

    batched = run_ranks(3, rank)
    assert whole.verified_pairs == batched[0].verified_pairs > 40
    assert sorted(k for r in batched for k in r.clusters.kept.tolist()) == whole.clusters.kept.tolist()
    assert np.array_equal(np.sort(np.concatenate([r.removed for r in batched])), whole.removed)


def test_keep_priority_rules():
    lengths = np.array([5, 9, 9, 2])
    assert keep_priority(lengths, "first").tolist() == [0, 0, 0, 0]
    assert keep_priority(lengths, "longest").tolist() == [-5, -9, -9, -2]
    with pytest.raises(ValueError, match="dedup.keep must be one of first, longest, got 'last'"):
        keep_priority(lengths, "last")
    assert np.all(np.diff(rank_key(np.array([-(1 << 62), -1, 0, 1, 1 << 62])).astype(object)) > 0)


def test_keep_longest_in_exact_and_near_dedup_on_any_rank_count():
    base, _ = planted_corpus(2, 0, words=150, seed=5)
    texts = [base[0], base[0] + " tail words", base[1], base[1], base[0] + " tail words"]
    texts += [base[0] + " a much longer tail of words here"]  # near copy of 0 and 1, the longest
    lengths = np.array([len(t) for t in texts])
    sigs = compute_signatures(texts, workers=1)
    hashes = exact_text_hashes(texts)

    def rank(comm, rule):
        index = np.arange(comm.rank, len(texts), comm.size)
        owner_of = lambda i: np.asarray(i) % comm.size  # noqa: E731
        priority = keep_priority(lengths[index], rule)
        exact = find_exact_duplicates(comm, index, hashes[index], priority, owner_of)
        near = find_near_duplicates(comm, index, sigs[index], PARAMS, None, priority, owner_of)
        return (
            list(exact.clusters.records()),
            list(near.clusters.records()),
            exact.removed.tolist(),
            near.removed.tolist(),
        )

    for size in (1, 2, 3):
        for rule, exact_kept, near_kept in (("first", {2: [3], 1: [4]}, {0: [1, 4, 5], 2: [3]}),
                                            ("longest", {2: [3], 1: [4]}, {5: [0, 1, 4], 2: [3]})):  # fmt: skip
            per_rank = run_ranks(size, lambda comm, rule=rule: rank(comm, rule))
            exact = {c["kept"]: c["removed"] for part in per_rank for c in part[0]}
            near = {c["kept"]: c["removed"] for part in per_rank for c in part[1]}
            assert exact == exact_kept, (size, rule)
            assert near == near_kept, (size, rule)
            for r, part in enumerate(per_rank):  # clusters live on the kept document's rank
                assert all(c["kept"] % size == r for c in part[0] + part[1])
                assert all(i % size == r for i in part[2] + part[3])


def test_no_rank_receives_decisions_or_ids_of_documents_it_does_not_hold():
    """Rank 0 and 1 hold unique documents; every duplicate is on rank 2. Apart from its share of band keys and
    exact keys (routed by key value), rank 0 and 1 receive nothing: no removals, no clusters, no ids."""
    fresh, _ = planted_corpus(20, 0, words=120, seed=8)  # 0..19: no copies anywhere
    planted, _ = planted_corpus(30, 2, (0.0, 0.01), words=120, seed=7)  # 30 originals, an exact and a 1% copy each
    texts = fresh + planted
    sigs, hashes = compute_signatures(texts, workers=1), exact_text_hashes(texts)
    counts = [10, 10, len(texts) - 20]
    owner_of = owner_of_blocks(counts)

    def rank(comm):
        index = np.arange(sum(counts[: comm.rank]), sum(counts[: comm.rank + 1]))
        exact = find_exact_duplicates(comm, index, hashes[index], None, owner_of)
        near = find_near_duplicates(comm, index, sigs[index], PARAMS, None, None, owner_of)
        members = np.concatenate([near.clusters.kept, near.clusters.removed])
        ids = fetch_ids(comm, members, owner_of, lambda asked: b"".join(b'"doc%d"\n' % i for i in asked))
        return exact, near, ids, comm.log

    per_rank = run_ranks(3, rank)
    for r in (0, 1):
        exact, near, ids, log = per_rank[r]
        assert {phase for phase, size in exact.received_bytes.items() if size} == {"exact keys"}
        assert {phase for phase, size in near.received_bytes.items() if size} == {"band keys"}
        assert len(exact.clusters) == len(near.clusters) == len(ids) == len(near.removed) == len(exact.removed) == 0
        assert sum(len(part) for kind, got in log if kind == "alltoall" for part in got) == 0  # no id traffic
    exact, near, ids, log = per_rank[2]
    assert len(exact.removed) == 30 and len(near.removed) == 60  # each exact copy, then each 1% copy
    assert set(ids[: len(near.clusters)]) == {b'"doc%d"' % i for i in range(20, 50)}
    for kind, got in log:  # every rank-wide collective carried a number per rank, never a list of documents
        if kind in ("allgather", "bcast", "gather", "allreduce"):
            assert all(np.size(x) <= 2 for x in (got or [])), kind


def test_ids_are_fetched_from_their_holders_only_in_the_order_asked():
    owner_of = owner_of_blocks([3, 3, 3])
    wanted = {0: [7, 1, 4, 7, 1], 1: [], 2: [8]}  # any order, repeats

    def rank(comm):
        asked = []

        def ids_at(indices):
            asked.append(indices.tolist())
            return b"".join(b'"id%d"\n' % i for i in indices)

        found = fetch_ids(comm, np.array(wanted[comm.rank], np.int64), owner_of, ids_at)
        return found, [i for part in asked for i in part]

    per_rank = run_ranks(3, rank)
    assert per_rank[0][0] == [b'"id7"', b'"id1"', b'"id4"', b'"id7"', b'"id1"'] and per_rank[2][0] == [b'"id8"']
    assert per_rank[0][1] == [1] and per_rank[1][1] == [4] and per_rank[2][1] == [7, 8]  # each id asked once


def test_dedup_keep_in_the_stage_on_one_and_two_ranks(tmp_path):
    """`pipeline dedup` end to end (filters off): dedup.keep decides which copy survives, for any rank count."""
    import json

    from data_pipeline.config import RecipeError, load_recipe
    from data_pipeline.stages.dedup import run_dedup

    base, _ = planted_corpus(3, 0, words=120, seed=9)
    texts = [base[0], base[1], base[0] + " and a longer ending", base[2], base[1], base[0] + " end"]
    for part, share in enumerate((texts[:3], texts[3:])):
        lines = [json.dumps({"id": f"f{part}-{i}", "text": t}) + "\n" for i, t in enumerate(share)]
        (tmp_path / f"in-{part}.jsonl").write_text("".join(lines))
    inputs = [str(tmp_path / "in-*.jsonl")]

    def run(rule: str, ranks: int) -> tuple[list[str], list[dict]]:
        out = tmp_path / f"{rule}-{ranks}"
        recipe = load_recipe(None, ["filters.enabled=false", f"dedup.keep={rule}", "workers=1"])
        run_ranks(ranks, lambda comm: run_dedup(comm, inputs, out, recipe, quiet=True))
        kept = [
            json.loads(line)["id"]
            for p in sorted((out / "kept").glob("*.jsonl"))
            for line in p.read_text().splitlines()
        ]
        return kept, [json.loads(line) for line in (out / "dedup" / "clusters.jsonl").read_text().splitlines()]

    first, longest = run("first", 1), run("longest", 1)
    assert first == run("first", 2) and longest == run("longest", 2)
    assert first[0] == ["f0-0", "f0-1", "f1-0"]
    assert first[1] == [
        {"kind": "exact", "kept": "f0-1", "removed": ["f1-1"], "similarity": [1.0]},
        {"kind": "near", "kept": "f0-0", "removed": ["f0-2", "f1-2"], "similarity": first[1][1]["similarity"]},
    ]
    assert longest[0] == ["f0-1", "f0-2", "f1-0"]  # the longest variant of base 0 is kept, in its input position
    assert longest[1][1]["kept"] == "f0-2" and longest[1][1]["removed"] == ["f0-0", "f1-2"]
    with pytest.raises(RecipeError, match=re.escape("dedup.keep use first|longest, got 'last'")):
        load_recipe(None, ["dedup.keep=last"])
