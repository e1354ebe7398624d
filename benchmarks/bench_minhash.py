"""MinHash signature throughput on one core: ours vs datasketch's MinHash.bulk and rensa's RMinHash.

Rows, each printed with its anchor and the ratio:
- text -> signature: ours (`compute_signatures`: folding, word 5-gram shingles, hashing and exact Mersenne
  permutations, compiled) vs the same 5-word shingles made in Python (`text.lower().split()`, identical to our
  folding on this corpus of lowercase words) and given to datasketch (`MinHash.bulk`, sha1, default scheme) and,
  when it is installed, to rensa (`RMinHash.digest_matrix_from_token_sets`, its fastest batch entry point, and
  one `RMinHash` per document);
- permutations only, the identical shingle hashes on both sides: our default Mersenne-prime family against
  datasketch's "legacy" (the same family), our "affine32" against datasketch's affine32 (bit-identical), and
  our default against rensa's Rust multiply-shift family fed the flat hash buffer (a different family: the
  cost of numba against hand-written SIMD Rust, not a like-for-like estimate).
One-core rates use process CPU time (best of --repeat), so other jobs on a shared machine do not stretch them;
the 2-core scaling of `compute_signatures(workers=2)` needs wall time and is only meaningful on an idle machine.
rensa is not a project dependency: install it into a separate environment to get its rows.

    .venv/bin/python benchmarks/bench_minhash.py [--docs 3000] [--words 350] [--num-perm 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from datasketch import MinHash

from data_pipeline.dedup.lsh import planted_corpus
from data_pipeline.dedup.minhash import Permutations, compute_signatures, shingle_hashes_batch, signatures_from_hashes

try:
    from rensa import RMinHash
except ImportError:  # optional anchor
    RMinHash = None


def docs_per_second(fn, count: int, repeat: int, clock=time.process_time) -> float:
    """Best of `repeat` runs. One-core runs use this process's CPU time, which other load does not inflate."""
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return count / best


def python_shingles(texts: list[str]) -> list[list[str]]:
    """Word 5-grams as a Python user makes them (what datasketch and rensa are given)."""
    shingles = []
    for text in texts:
        words = text.lower().split()
        shingles.append([" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))])
    return shingles


def rensa_per_document(texts: list[str], num_perm: int) -> None:
    for shingles in python_shingles(texts):
        sketch = RMinHash(num_perm, 1)
        sketch.update(shingles)
        sketch.digest()


def row(label: str, ours: float, anchor_name: str, anchor: float) -> None:
    print(f"{label:<62} ours {ours:8.0f} docs/s  {anchor_name:<10} {anchor:8.0f} docs/s  ratio {ours / anchor:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--words", type=int, default=350)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts, _ = planted_corpus(args.docs, 0, words=args.words, seed=0)
    n, k, r = len(texts), args.num_perm, args.repeat
    mean_chars = sum(map(len, texts)) / n
    print(f"{n} docs x {args.words} words ({mean_chars:.0f} chars), word 5-gram shingles, num_perm={k}, one core")
    compute_signatures(texts[:10], num_perm=k, workers=1)  # compile (or load the cached kernels) outside the clock
    compute_signatures(texts[:10], num_perm=k, workers=1, scheme="affine32")

    ours = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1), n, r)
    ours_affine = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1, scheme="affine32"), n, r)
    datasketch = docs_per_second(
        lambda: MinHash.bulk([[s.encode() for s in d] for d in python_shingles(texts)], num_perm=k), n, 1
    )
    row("text -> signature: ours (mersenne61) vs datasketch (sha1)", ours, "datasketch", datasketch)
    row("text -> signature: ours (affine32) vs datasketch (sha1)", ours_affine, "datasketch", datasketch)
    if RMinHash is not None:
        batch = docs_per_second(lambda: RMinHash.digest_matrix_from_token_sets(python_shingles(texts), k, 1), n, r)
        single = docs_per_second(lambda: rensa_per_document(texts, k), n, r)
        row("text -> signature: ours (mersenne61) vs rensa batch matrix", ours, "rensa", batch)
        row("text -> signature: ours (mersenne61) vs rensa RMinHash per doc", ours, "rensa", single)
    else:
        print("rensa is not installed: its rows are skipped")

    python_rate = docs_per_second(lambda: python_shingles(texts), n, r)
    all_hashes, counts = shingle_hashes_batch(texts)
    hashes = np.split(all_hashes, np.cumsum(counts)[:-1])
    as_ints = [h.tolist() for h in hashes]
    for scheme, theirs in (("mersenne61", "legacy"), ("affine32", "affine32")):
        perms = Permutations.from_seed(k, 1, scheme)
        ours_rate = docs_per_second(lambda p=perms: signatures_from_hashes(hashes, p), n, r)
        anchor = docs_per_second(
            lambda s=theirs: MinHash.bulk(as_ints, num_perm=k, hashfunc=lambda v: v >> 32, scheme=s), n, 1
        )
        row(f"same hashes, permutations only: {scheme} vs datasketch {theirs}", ours_rate, "datasketch", anchor)
        if scheme == "mersenne61":
            shingling = docs_per_second(lambda: shingle_hashes_batch(texts), n, r)
            print(f"where ours spends a document: shingling {1e6 / shingling:.1f} us, mersenne61 permutations "
                  f"{1e6 / ours_rate:.1f} us, Python shingling for datasketch/rensa {1e6 / python_rate:.1f} us")  # fmt: skip
    if RMinHash is not None:
        offsets = np.r_[0, np.cumsum(counts)].astype(np.uint64)
        perms = Permutations.from_seed(k, 1)
        ours_rate = docs_per_second(lambda: signatures_from_hashes(hashes, perms), n, r)
        anchor = docs_per_second(lambda: RMinHash.digest_matrix_from_flat_token_hashes(all_hashes, offsets, k, 1), n, r)
        row("same hashes, permutations only: mersenne61 vs rensa (Rust)", ours_rate, "rensa", anchor)

    # the pool's work happens in child processes: wall time for both sides (noisy on a loaded machine)
    one_wall = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=1), n, r, time.perf_counter)
    two_wall = docs_per_second(lambda: compute_signatures(texts, num_perm=k, workers=2), n, r, time.perf_counter)
    row("2-core scaling (wall clock): workers=2 vs workers=1", two_wall, "workers=1", one_wall)


if __name__ == "__main__":
    main()
