"""Near-dedup recall where text has no spaces: the band layout against the character shingles' similarities.

Chinese and Japanese paragraphs (200-1,000 letters, generated as in bench_shingle_scripts.py: Zipf-weighted
letters of each script, punctuation every 6-20 letters), each with one copy in which 1-3% of the letters were
replaced. `dedup.shingle=auto` shingles them as character 5-grams; with 1-3% edits their true Jaccard lies between
~0.75 and ~0.95, i.e. mostly on the slope of the LSH S-curve just above the 0.8 threshold, where word-shingled
edits rarely sit. For each band layout the run prints the recall of the pairs with true char 5-gram J >= 0.8
(copy removed as a duplicate of its original), the candidate pairs, and the smallest true Jaccard of any removed
document with the one kept for it (no unjustified removal: the verify bound decides, not the layout). The anchor
is the layout of the previous default (12 x 10); the ratio is recall over the anchor's.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dedup_cjk_recall.py [--docs 1000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.bench_shingle_scripts import jaccard, plant_edits, script_text
from data_pipeline.comm import LocalComm
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates
from data_pipeline.dedup.minhash import compute_signatures

LAYOUTS = ((12, 10), (14, 9), (16, 8), (18, 7))
ANCHOR = (12, 10)


def paragraphs(script: str, docs: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """`docs` originals then one edited copy of each; returns (texts, (original, copy) pairs)."""
    rng = np.random.default_rng(seed)
    originals = [script_text(rng, script, int(rng.integers(200, 1001))) for _ in range(docs)]
    copies = [plant_edits(rng, t, script, max(1, round(rng.uniform(0.01, 0.03) * len(t)))) for t in originals]
    return originals + copies, [(i, docs + i) for i in range(docs)]


def measure(texts: list[str], pairs: list[tuple[int, int]], sigs: np.ndarray, bands: int, rows: int) -> dict:
    params = LSHParams.from_threshold(0.8, 128, bands=bands, rows=rows)
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), sigs, params)
    kept_of = {r: c["kept"] for c in result.clusters.records() for r in c["removed"]}
    close = [(a, b) for a, b in pairs if jaccard(texts[a], texts[b], 5, "chars") >= 0.8]
    found = sum(kept_of.get(b) == a for a, b in close)
    removed_j = [jaccard(texts[k], texts[r], 5, "chars") for r, k in kept_of.items()]
    return {"close": len(close), "found": found, "recall": found / max(1, len(close)),
            "candidates": result.candidate_pairs, "min_removed_j": min(removed_j, default=1.0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"default layout now: {LSHParams.from_threshold(0.8, 128).describe()}")
    for script in ("chinese", "japanese"):
        texts, pairs = paragraphs(script, args.docs, args.seed)
        sigs = compute_signatures(texts, workers=1, shingle="auto")
        js = np.array([jaccard(texts[a], texts[b], 5, "chars") for a, b in pairs])
        print(f"{script}: {len(pairs)} pairs, true char 5-gram J: 5th/50th/95th percentile "
              f"{np.percentile(js, 5):.3f}/{np.percentile(js, 50):.3f}/{np.percentile(js, 95):.3f}, "
              f"{np.mean(js >= 0.8):.1%} at >= 0.8")  # fmt: skip
        anchor = measure(texts, pairs, sigs, *ANCHOR)
        for bands, rows in LAYOUTS:
            m = anchor if (bands, rows) == ANCHOR else measure(texts, pairs, sigs, bands, rows)
            print(f"  {bands:2d} x {rows:2d}: recall at J >= 0.8 {m['recall']:.3f} ({m['found']}/{m['close']}), "
                  f"ratio to {ANCHOR[0]} x {ANCHOR[1]} {m['recall'] / anchor['recall']:.3f}; "
                  f"{m['candidates']} candidate pairs; smallest true J of a removed document {m['min_removed_j']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
