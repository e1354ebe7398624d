"""MinHash signature throughput: ours vs datasketch's MinHash.bulk on one core, same shingles and num_perm.

Two comparisons, each printed with its ratio:
- end to end (text -> signature): ours (`compute_signatures`, xxh3 word hashes, exact Mersenne permutations)
  vs datasketch fed the same normalised 5-word shingles as bytes with its default hash (sha1) and scheme;
- permutations only: both fed the identical shingle hashes (datasketch through `hashfunc`), datasketch's
  Mersenne-prime "legacy" scheme (the same hash family as ours) and its default "affine32" scheme.
Then the 2-core scaling of `compute_signatures(workers=2)`. Absolute numbers on a shared machine are noise;
the ratios are the result.

    .venv/bin/python benchmarks/bench_minhash.py [--docs 2000] [--words 300] [--num-perm 128]
"""

from __future__ import annotations

import argparse
import time

from datasketch import MinHash

from data_pipeline.lsh import planted_corpus
from data_pipeline.minhash import (
    Permutations,
    compute_signatures,
    hash_normalize,
    shingle_hashes,
    signatures_from_hashes,
)


def docs_per_second(fn, count: int, repeat: int = 2) -> float:
    """Best of `repeat` runs: the least disturbed by other load on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def datasketch_end_to_end(texts: list[str], num_perm: int) -> None:
    shingle_sets = []
    for text in texts:
        words = hash_normalize(text).split(" ")
        shingle_sets.append([" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))])
    MinHash.bulk(shingle_sets, num_perm=num_perm)


def row(label: str, ours: float, anchor: float) -> None:
    print(f"{label:<58} ours {ours:10.0f} docs/s   datasketch {anchor:10.0f} docs/s   ratio {ours / anchor:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--num-perm", type=int, default=128)
    args = parser.parse_args()
    texts, _ = planted_corpus(args.docs, 0, words=args.words, seed=0)
    n, k = len(texts), args.num_perm
    print(f"{n} docs x {args.words} words, 5-word shingles, num_perm={k}, one core unless stated")

    ours = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1), n)
    row(
        "end to end, datasketch default (sha1, affine32)",
        ours,
        docs_per_second(lambda: datasketch_end_to_end(texts, k), n, 1),
    )

    hashes = [shingle_hashes(t) for t in texts]
    as_ints = [h.tolist() for h in hashes]
    perms = Permutations.from_seed(k, 1)
    ours_perm = docs_per_second(lambda: signatures_from_hashes(hashes, perms), n)
    for scheme in ("legacy", "affine32"):
        anchor = docs_per_second(
            lambda s=scheme: MinHash.bulk(as_ints, num_perm=k, hashfunc=lambda v: v >> 32, scheme=s), n
        )
        row(f"same shingle hashes, permutations only (datasketch {scheme})", ours_perm, anchor)

    two = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=2), n)
    print(
        f"{'2-core scaling: workers=2 vs workers=1':<58} {two:10.0f} vs {ours:10.0f} docs/s   ratio {two / ours:5.2f}x"
    )


if __name__ == "__main__":
    main()
