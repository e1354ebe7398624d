"""Near-dedup quality: recall per true-Jaccard bucket, and how similar each removed document is to the one kept for it.

Three corpora, true Jaccard always from the exact word 5-gram shingle sets:
- planted pairs: every base document gets one copy with a controlled fraction of its words replaced. Recall per
  bucket = planted pairs that ended in one cluster, next to the LSH S-curve's expected detection rate
  1 - (1 - J^r)^b (ratio = measured / expected). Target: recall >= 0.99 at Jaccard >= 0.9.
- a chain of documents, each a 3% word mutation of the previous (neighbours alike, ends not): cluster sizes.
- families (`--family-docs`, default 50,000): 10% fresh documents, the rest edits (0.5%-3% of words replaced)
  of one of the 100 documents before them, so edits of edits form long trees whose far members share little. This is where
  merging verified pairs transitively ("chaining") removed documents unlike anything that was kept.
For every removed document the table gives the true Jaccard with the document kept for its cluster (the
distribution, and the shares below 0.5 and 0.1); for the families, the J >= 0.9 (parent, edit) pairs of which
both survived. With `--ranks` the families also run on simulated ranks (threads; tasks of documents dealt
round-robin, as the stage deals equal tasks): the removals must be identical, and the
component rounds are printed.

    .venv/bin/python benchmarks/bench_dedup_quality.py [--base 3000] [--family-docs 50000] [--ranks 4 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from data_pipeline.comm import LocalComm
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates, planted_corpus
from data_pipeline.dedup.minhash import compute_signatures, shingle_hashes

FRACTIONS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.2, 0.35, 0.5)
BUCKETS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0001)
KEPT_BUCKETS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0001)
TASK_DOCS = 250  # documents per task in the simulated-rank runs


def chain_corpus(length: int, words: int, seed: int) -> list[str]:
    """Documents where each is the previous with 3% of words replaced: neighbours similar, ends not."""
    rng = np.random.default_rng(seed)
    tokens = [f"c{rng.integers(1 << 40)}" for _ in range(words)]
    chain = [" ".join(tokens)]
    for _ in range(length - 1):
        for position in rng.choice(words, int(0.03 * words), replace=False):
            tokens[position] = f"c{rng.integers(1 << 40)}"
        chain.append(" ".join(tokens))
    return chain


def family_corpus(
    docs: int, words: int, seed: int, fresh: float = 0.1, recent: int = 100
) -> tuple[list[str], list[tuple[int, int]]]:
    """`fresh` of the documents new; the rest edit one of the `recent` documents before them (a page's successive versions,
    mirrors of mirrors), so edits pile on edits. Returns (texts, (parent, edit) pairs)."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    edits = []
    fresh_texts = iter(planted_corpus(docs, 0, words=words, seed=seed)[0])
    for doc in range(docs):
        if doc < recent or rng.random() < fresh:
            texts.append(next(fresh_texts))
            continue
        parent = doc - 1 - int(rng.integers(recent))
        tokens = texts[parent].split(" ")
        for position in rng.choice(len(tokens), max(1, int(rng.uniform(0.005, 0.03) * words)), replace=False):
            tokens[position] = f"e{rng.integers(1 << 40)}"
        texts.append(" ".join(tokens))
        edits.append((parent, doc))
    return texts, edits


class Shingles:
    """Sorted unique shingle hashes per document, computed once when first needed."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.cache = texts, {}

    def __getitem__(self, doc: int) -> np.ndarray:
        if doc not in self.cache:
            self.cache[doc] = np.unique(shingle_hashes(self.texts[doc]))
        return self.cache[doc]

    def jaccard(self, a: int, b: int) -> float:
        sa, sb = self[a], self[b]
        common = len(np.intersect1d(sa, sb, assume_unique=True))
        return common / (len(sa) + len(sb) - common)


def bucket_of(similarity: float, buckets=BUCKETS) -> int:
    return int(np.searchsorted(buckets, similarity, side="right") - 1)


def label(bucket: int, buckets=BUCKETS) -> str:
    return f"[{buckets[bucket]:.2f}, {min(buckets[bucket + 1], 1.0):.2f}{']' if buckets[bucket + 1] > 1 else ')'}"


def cluster_of(clusters: list[dict]) -> dict[int, int]:
    return {doc: c["kept"] for c in clusters for doc in (c["kept"], *c["removed"])}


def recall_table(params: LSHParams, pairs, truth, clusters: list[dict]) -> float:
    """Print recall per bucket against the S-curve; return recall over pairs with Jaccard >= 0.9."""
    owner = cluster_of(clusters)
    found = [owner.get(a, -1) == owner.get(b, -2) for a, b in pairs]
    print(f"  {'true Jaccard':<14}{'pairs':>7}{'found':>7}{'recall':>8}{'S-curve':>9}{'ratio':>7}")
    for bucket in range(len(BUCKETS) - 1):
        members = [i for i, j in enumerate(truth) if bucket_of(j) == bucket]
        if not members:
            continue
        hits = sum(found[i] for i in members)
        expected = float(np.mean([params.detection_probability(truth[i]) for i in members]))
        ratio = f"{hits / len(members) / expected:7.2f}" if expected > 1e-3 else "      -"
        print(f"  {label(bucket):<14}{len(members):>7}{hits:>7}{hits / len(members):>8.3f}{expected:>9.3f}{ratio}")
    high = [i for i, j in enumerate(truth) if j >= 0.9]
    return sum(found[i] for i in high) / max(1, len(high))


def kept_similarity_table(clusters: list[dict], shingles: Shingles) -> np.ndarray:
    """Print the distribution of true Jaccard between each removed document and its cluster's kept one."""
    truth = np.array([shingles.jaccard(c["kept"], r) for c in clusters for r in c["removed"]])
    counts = np.bincount([bucket_of(j, KEPT_BUCKETS) for j in truth], minlength=len(KEPT_BUCKETS) - 1)
    print(
        f"  true Jaccard(removed, its kept document) of {len(truth)} removed: "
        + ", ".join(f"{label(b, KEPT_BUCKETS)} {c}" for b, c in enumerate(counts) if c)
    )
    share = lambda bound: float(np.mean(truth < bound)) if len(truth) else 0.0  # noqa: E731
    quartiles = np.percentile(truth, [1, 5, 50]) if len(truth) else [0.0] * 3
    print(
        f"  below 0.5: {share(0.5):.1%}, below 0.1: {share(0.1):.1%}, below 0.8: {share(0.8):.1%}; "
        f"1st/5th/50th percentile {quartiles[0]:.3f} / {quartiles[1]:.3f} / {quartiles[2]:.3f}"
    )
    return truth


def summary_line(result, seconds: float) -> str:
    return (
        f"  {len(result.removed)} removed in {len(result.clusters)} clusters, largest {result.largest_cluster}; "
        f"candidate pairs {result.candidate_pairs}, verified {result.verified_pairs}; "
        f"rounds {getattr(result, 'rounds', '-')}; {seconds:.1f} s"
    )


def planted(args: argparse.Namespace, params: LSHParams) -> None:
    texts, pairs = planted_corpus(args.base, 1, FRACTIONS, words=args.words, seed=1)
    chain_start = len(texts)
    texts += chain_corpus(12, args.words, seed=2)
    shingles = Shingles(texts)
    truth = [shingles.jaccard(a, b) for a, b in pairs]
    signatures = compute_signatures(texts, workers=args.workers)
    print(f"\nplanted pairs: {len(texts)} docs, {len(pairs)} pairs and a 12-document 3%-mutation chain")
    started = time.perf_counter()
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), signatures, params)
    print(summary_line(result, time.perf_counter() - started))
    clusters = list(result.clusters.records())
    high_recall = recall_table(params, pairs, truth, clusters)
    kept_similarity_table(clusters, shingles)
    chain_ids = set(range(chain_start, len(texts)))
    sizes = sorted(len(chain_ids & {c["kept"], *c["removed"]}) for c in clusters if c["kept"] in chain_ids)
    print(f"  mutation chain: clusters of sizes {sizes or [0]}")
    print(f"  recall at Jaccard >= 0.9: {high_recall:.4f} (target 0.99: {'met' if high_recall >= 0.99 else 'MISSED'})")


def families(args: argparse.Namespace, params: LSHParams) -> None:
    texts, edits = family_corpus(args.family_docs, args.words, seed=3)
    shingles = Shingles(texts)
    started = time.perf_counter()
    signatures = compute_signatures(texts, workers=args.workers)
    print(
        f"\nfamilies: {len(texts)} docs ({len(edits)} edits of earlier ones); signatures {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), signatures, params)
    print(summary_line(result, time.perf_counter() - started))
    kept_similarity_table(list(result.clusters.records()), shingles)
    removed = set(result.removed.tolist())
    close = [(a, b) for a, b in edits if shingles.jaccard(a, b) >= 0.9]
    both = sum(a not in removed and b not in removed for a, b in close)
    print(
        f"  (parent, edit) pairs with true Jaccard >= 0.9: {len(close)}; both kept: {both} ({both / max(1, len(close)):.2%})"
    )
    for size in args.ranks:
        on_ranks(size, texts, signatures, params, result.removed)


def on_ranks(size: int, texts: list[str], signatures: np.ndarray, params: LSHParams, expected: np.ndarray) -> None:
    """The families on `size` simulated ranks, keep=first and keep=longest, dealt as the stage deals them: tasks
    of TASK_DOCS documents, round-robin over the ranks (so chains of edits cross ranks at every task)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.sim_comm import run_ranks

    from data_pipeline.dedup.clusters import keep_priority

    holder = np.arange(len(texts)) // TASK_DOCS % size

    def owner_of(index: np.ndarray) -> np.ndarray:
        return holder[np.asarray(index, np.int64)]

    lengths = np.array([len(t) for t in texts])
    for rule in ("first", "longest"):

        def rank(comm, rule=rule):
            index = np.flatnonzero(holder == comm.rank)
            priority = keep_priority(lengths[index], rule)
            return find_near_duplicates(comm, index, signatures[index], params, None, priority, owner_of)

        started = time.perf_counter()
        results = run_ranks(size, rank)
        removed = np.sort(np.concatenate([r.removed for r in results]))
        single = expected if rule == "first" else find_near_duplicates(
            LocalComm(), np.arange(len(texts)), signatures, params, None, keep_priority(lengths, rule)
        ).removed  # fmt: skip
        same = "identical to 1 rank" if np.array_equal(removed, single) else "DIFFERS from 1 rank"
        received = max(sum(r.received_bytes.values()) for r in results)
        print(
            f"  {size} simulated ranks, keep={rule}: {results[0].rounds} rounds, {len(removed)} removed ({same}); "
            f"most received by a rank {received / 1e6:.1f} MB; {time.perf_counter() - started:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=3000)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--family-docs", type=int, default=50_000)
    parser.add_argument("--ranks", type=int, nargs="*", default=[4, 16])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    params = LSHParams.from_threshold(args.threshold, 128)
    print(params.describe())
    planted(args, params)
    if args.family_docs:
        families(args, params)


if __name__ == "__main__":
    main()
