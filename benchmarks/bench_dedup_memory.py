"""Peak memory of MinHash-LSH near dedup at 1M synthetic documents, as bytes per document beyond the signatures.

Each measurement runs in its own child process and reads that child's ru_maxrss:
- anchor: build the (n, num_perm) uint32 signatures (10% of documents are perturbed copies of others, so
  there are real candidate pairs and clusters) and the int64 document index;
- measured: the same, then `find_near_duplicates` (band keys, routing, run finding, verification, keepers).
The difference divided by n is what LSH costs per document on top of the signatures; the target is <= 300 B.
`--clustered` makes 30% of the documents near copies (5% of values changed) in clusters of up to 100,000
(sizes 100k, 30k, 10k, 3k, 1k, then 10 each), the issue's adversarial corpus.

    .venv/bin/python benchmarks/bench_dedup_memory.py [--docs 1000000] [--num-perm 128] [--threshold 0.8]
                                                      [--clustered]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

TARGET_BYTES_PER_DOC = 300


def synthetic_signatures(docs: int, num_perm: int, seed: int = 0) -> np.ndarray:
    """Random signatures; every 10th document copies an earlier one with ~10% of its values changed."""
    rng = np.random.default_rng(seed)
    signatures = rng.integers(0, 1 << 32, size=(docs, num_perm), dtype=np.uint32)
    for start in range(0, docs, 100_000):  # in slices, so the anchor's peak is the signatures themselves
        copies = np.arange(max(start, 1), min(start + 100_000, docs))
        copies = copies[copies % 10 == 0]
        originals = rng.integers(0, copies, dtype=np.int64)
        signatures[copies] = signatures[originals]
        changed = rng.random((len(copies), num_perm)) < 0.1
        signatures[copies] ^= (changed * rng.integers(1, 1 << 32, size=changed.shape, dtype=np.uint32)).astype(
            np.uint32
        )
    return signatures


def clustered_signatures(docs: int, num_perm: int, seed: int = 0) -> np.ndarray:
    """Random signatures, then 30% of the documents made near copies (5% of values changed) of a cluster head, in
    clusters of 100k, 30k, 10k, 3k, 1k and then 10 members; copies sit anywhere after their head."""
    rng = np.random.default_rng(seed)
    signatures = rng.integers(0, 1 << 32, size=(docs, num_perm), dtype=np.uint32)
    for head, members in near_clusters(docs, rng):
        for start in range(0, len(members), 10_000):  # in slices: the anchor's peak stays the signatures
            part = members[start : start + 10_000]
            signatures[part] = signatures[head]
            changed = rng.random((len(part), num_perm)) < 0.05
            noise = rng.integers(1, 1 << 32, size=changed.shape, dtype=np.uint32)
            signatures[part] ^= (changed * noise).astype(np.uint32)
    return signatures


def near_clusters(docs: int, rng: np.random.Generator, share: float = 0.3) -> Iterator[tuple[int, np.ndarray]]:
    """(head, members) over a random order of the documents: `share` of them are members, in clusters of 100k,
    30k, 10k, 3k, 1k and then 10. The issue's adversarial layout, shared with bench_pipeline_scale's corpus."""
    copies_left, sizes = int(share * docs), [100_000, 30_000, 10_000, 3_000, 1_000]
    order = rng.permutation(docs)
    at = 0
    while copies_left > 0 and at < docs:
        size = min(sizes.pop(0) if sizes else 10, copies_left, docs - at - 1)
        yield int(order[at]), order[at + 1 : at + 1 + size]
        at, copies_left = at + 1 + size, copies_left - size


def child(mode: str, docs: int, num_perm: int, threshold: float, clustered: bool) -> None:
    from data_pipeline.comm import LocalComm
    from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates

    params = LSHParams.from_threshold(threshold, num_perm)  # both children import the same libraries
    signatures = (clustered_signatures if clustered else synthetic_signatures)(docs, num_perm)
    doc_index = np.arange(docs, dtype=np.int64)
    report = {"removed": 0, "seconds": 0.0}
    if mode == "dedup":
        start = time.perf_counter()
        result = find_near_duplicates(LocalComm(), doc_index, signatures, params)
        report = {
            "removed": len(result.removed),
            "seconds": time.perf_counter() - start,
            "largest": result.largest_cluster,
        }
    report["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report))


def measure(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--docs", str(args.docs), "--num-perm", str(args.num_perm)]
    cmd += ["--threshold", str(args.threshold), *(["--clustered"] if args.clustered else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--clustered", action="store_true", help="30%% near copies in clusters up to 100k")
    parser.add_argument("--child", choices=["anchor", "dedup"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.docs, args.num_perm, args.threshold, args.clustered)
        return
    anchor, dedup = measure("anchor", args), measure("dedup", args)
    per_doc = (dedup["max_rss_bytes"] - anchor["max_rss_bytes"]) / args.docs
    signature_bytes = 4 * args.num_perm
    print(
        f"{args.docs} docs{' (30% near copies, clusters up to 100k)' if args.clustered else ''}, "
        f"num_perm={args.num_perm} (signatures {signature_bytes} B/doc), threshold {args.threshold}"
    )
    print(f"anchor (signatures + index only) peak RSS {anchor['max_rss_bytes'] / 2**20:9.1f} MiB")
    print(
        f"near dedup peak RSS                       {dedup['max_rss_bytes'] / 2**20:9.1f} MiB   "
        f"({dedup['seconds']:.1f} s, removed {dedup['removed']}, largest cluster {dedup['largest']})"
    )
    print(
        f"LSH memory beyond signatures: {per_doc:.0f} B/doc   target <= {TARGET_BYTES_PER_DOC} B/doc   "
        f"ratio {per_doc / TARGET_BYTES_PER_DOC:.2f} of target"
    )


if __name__ == "__main__":
    main()
