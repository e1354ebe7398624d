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

import numpy as np

from data_pipeline.dedup.minhash import shingle_hashes

SCRIPTS = {  # letters to draw from, and the punctuation that ends a clause
    "chinese": (list(range(0x4E00, 0x4E00 + 3000)), "，。、"),
    "japanese": (
        list(range(0x3041, 0x3094)) * 6 + list(range(0x30A1, 0x30F7)) * 2 + list(range(0x4E00, 0x5600)),
        "、。",
    ),
    "thai": (list(range(0x0E01, 0x0E2F)) + list(range(0x0E30, 0x0E3A)) + list(range(0x0E40, 0x0E4D)), " "),
}


def script_text(rng: np.random.Generator, script: str, chars: int) -> str:
    """`chars` letters of `script`, Zipf-weighted like real text, with a punctuation mark every 6-20 letters."""
    letters, punctuation = SCRIPTS[script]
    weights = 1.0 / np.arange(1, len(letters) + 1)
    drawn = rng.choice(letters, chars, p=weights / weights.sum())
    out, next_mark = [], rng.integers(6, 21)
    for i, code in enumerate(drawn):
        out.append(chr(code))
        if i == next_mark:
            out.append(punctuation[rng.integers(len(punctuation))])
            next_mark += rng.integers(6, 21)
    return "".join(out)


def plant_edits(rng: np.random.Generator, text: str, script: str, edits: int) -> str:
    """Replace `edits` distinct letters of `text` with other letters of the same script."""
    letters = SCRIPTS[script][0]
    chars, alphabet = list(text), set(map(chr, letters))
    positions = [i for i, c in enumerate(chars) if c in alphabet]
    for i in rng.choice(positions, edits, replace=False):
        replacement = chars[i]
        while replacement == chars[i]:
            replacement = chr(letters[rng.integers(min(200, len(letters)))])
        chars[i] = replacement
    return "".join(chars)


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
