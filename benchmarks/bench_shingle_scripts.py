"""Which shingles find near-duplicates in scripts written without spaces: a planted-edit measurement.

For Chinese, Japanese and Thai text generated here (Zipf-weighted characters of each script, punctuation every
few characters, as in real text), it plants k one-character substitutions in 525-character documents and prints
the exact Jaccard similarity of original and copy under word 5-grams and under character n-grams for several n,
and the largest Jaccard between two unrelated documents (the false-positive side). `dedup.shingle=auto` uses
character `dedup.ngram`-grams (default 5) for such documents; this table is why 5.

    .venv/bin/python benchmarks/bench_shingle_scripts.py [--chars 525] [--docs 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_pipeline.dedup.minhash import shingle_hashes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' corpus: tests/support/corpus.py
from support.corpus import SCRIPTS, plant_edits, script_text  # noqa: E402


def jaccard(a: str, b: str, ngram: int, shingle: str) -> float:
    """Exact Jaccard similarity of the two documents' shingle sets."""
    sa, sb = (set(shingle_hashes(text, ngram, shingle).tolist()) for text in (a, b))
    return len(sa & sb) / len(sa | sb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=525)
    parser.add_argument("--docs", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    settings = [(5, "words")] + [(n, "chars") for n in (2, 3, 4, 5, 6, 8)]
    print(f"{args.chars}-character documents; mean exact Jaccard of {args.docs} planted pairs per cell; "
          "last column: the largest Jaccard among unrelated pairs")  # fmt: skip
    header = " ".join(f"{'k=' + str(k):>7}" for k in (1, 5, 10, 25, 50))
    print(f"{'script':<9} {'shingles':<13} {header} {'unrelated':>10}")
    for script in SCRIPTS:
        docs = [script_text(rng, script, args.chars) for _ in range(args.docs)]
        for ngram, mode in settings:
            cells = []
            for edits in (1, 5, 10, 25, 50):
                copies = [plant_edits(rng, d, script, edits) for d in docs]
                cells.append(np.mean([jaccard(d, c, ngram, mode) for d, c in zip(docs, copies, strict=True)]))
            unrelated = max(jaccard(docs[i], docs[i + 1], ngram, mode) for i in range(0, args.docs - 1, 2))
            row = " ".join(f"{c:7.3f}" for c in cells)
            print(f"{script:<9} {mode + ' ' + str(ngram) + '-gram':<13} {row} {unrelated:10.3f}")


if __name__ == "__main__":
    main()
