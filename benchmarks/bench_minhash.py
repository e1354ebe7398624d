"""MinHash signature throughput: ours vs datasketch's MinHash.bulk on one core, same shingles and num_perm.

Two comparisons, each printed with its ratio:
- end to end (text -> signature): ours (`compute_signatures`, xxh3 word hashes, exact Mersenne permutations)
  vs datasketch fed the same normalised 5-word shingles as bytes with its default hash (sha1) and scheme;
- permutations only: both fed the identical shingle hashes (datasketch through `hashfunc`): our default
  Mersenne-prime family against datasketch's "legacy" scheme (the same family), and our "affine32" scheme against
  datasketch's default "affine32" (bit-identical signatures).
One-core rates use process CPU time (best of 3), so other jobs on a shared machine do not stretch them; the
2-core scaling of `compute_signatures(workers=2)` needs wall time and is only meaningful on an idle machine.

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


def docs_per_second(fn, count: int, repeat: int = 3, clock=time.process_time) -> float:
    """Best of `repeat` runs. One-core runs use this process's CPU time, which other load does not inflate."""
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
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
    ours_affine = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1, scheme="affine32"), n)
    datasketch_default = docs_per_second(lambda: datasketch_end_to_end(texts, k), n, 1)
    row("end to end (ours mersenne61) vs datasketch default (sha1)", ours, datasketch_default)
    row("end to end (ours affine32) vs datasketch default (sha1)", ours_affine, datasketch_default)

    hashes = [shingle_hashes(t) for t in texts]
    as_ints = [h.tolist() for h in hashes]
    perms = Permutations.from_seed(k, 1)
    affine_perms = Permutations.from_seed(k, 1, "affine32")
    for ours_scheme, theirs, ours_perms in (("mersenne61", "legacy", perms), ("affine32", "affine32", affine_perms)):
        ours_rate = docs_per_second(lambda p=ours_perms: signatures_from_hashes(hashes, p), n)
        anchor = docs_per_second(
            lambda s=theirs: MinHash.bulk(as_ints, num_perm=k, hashfunc=lambda v: v >> 32, scheme=s), n
        )
        row(f"same hashes, permutations only: {ours_scheme} vs datasketch {theirs}", ours_rate, anchor)

    # the pool's work happens in child processes: wall time for both sides (noisy on a loaded machine)
    one_wall = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1), n, clock=time.perf_counter)
    two_wall = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=2), n, clock=time.perf_counter)
    label = "2-core scaling (wall clock): workers=2 vs workers=1"
    print(f"{label:<58} {two_wall:10.0f} vs {one_wall:10.0f} docs/s   ratio {two_wall / one_wall:5.2f}x")


if __name__ == "__main__":
    main()
