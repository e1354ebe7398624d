"""Near-duplicates in scripts written without spaces (Chinese, Japanese, Thai): character shingles find them.

The texts are made here from each script's code points with a seeded generator (Zipf-weighted letters and a
punctuation mark every few letters, as in real text); copies get one or two substituted letters. "Found" means a
candidate of datasketch's MinHashLSH at threshold 0.8 fed our signatures, so the test does not depend on our LSH.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from data_pipeline.config import RecipeError, load_recipe
from data_pipeline.dedup.minhash import compute_signatures, estimated_jaccard, hash_normalize, shingle_hashes

SCRIPTS = {  # letters, clause punctuation
    "chinese": (np.arange(0x4E00, 0x4E00 + 3000), "，。、"),
    "japanese": (
        np.r_[np.tile(np.arange(0x3041, 0x3094), 6), np.arange(0x30A1, 0x30F7), np.arange(0x4E00, 0x5600)],
        "、。",
    ),
    "thai": (np.r_[np.arange(0x0E01, 0x0E2F), np.arange(0x0E30, 0x0E3A), np.arange(0x0E40, 0x0E4D)], " "),
}


def script_text(rng: np.random.Generator, script: str, chars: int = 525, punctuate: bool = True) -> str:
    letters, marks = SCRIPTS[script]
    weights = 1.0 / np.arange(1, len(letters) + 1)
    out = [chr(c) for c in rng.choice(letters, chars, p=weights / weights.sum())]
    if punctuate:
        for position in sorted(rng.choice(chars, chars // 13, replace=False), reverse=True):
            out.insert(position, marks[rng.integers(len(marks))])
    return "".join(out)


def plant_edits(rng: np.random.Generator, text: str, script: str, edits: int) -> str:
    """`edits` letters replaced by a different letter of the same script."""
    letters = SCRIPTS[script][0]
    alphabet = set(map(chr, letters))
    chars = list(text)
    for i in rng.choice([i for i, c in enumerate(chars) if c in alphabet], edits, replace=False):
        chars[i] = chr(letters[(np.flatnonzero(letters == ord(chars[i]))[0] + 1 + rng.integers(50)) % len(letters)])
    return "".join(chars)


def exact_jaccard(a: str, b: str, shingle: str) -> float:
    sa, sb = (set(shingle_hashes(t, 5, shingle).tolist()) for t in (a, b))
    return len(sa & sb) / len(sa | sb)


def lsh_candidates(signatures: np.ndarray, threshold: float = 0.8) -> set[tuple[int, int]]:
    """Pairs (i < j) that datasketch's MinHashLSH at `threshold` returns for our signatures."""
    lsh = MinHashLSH(threshold=threshold, num_perm=signatures.shape[1])
    sketches = [MinHash(num_perm=signatures.shape[1], hashvalues=row, scheme="legacy") for row in signatures]
    for i, sketch in enumerate(sketches):
        lsh.insert(i, sketch)
    return {(min(i, j), max(i, j)) for i, sketch in enumerate(sketches) for j in lsh.query(sketch) if j != i}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_planted_edits_are_found_and_unrelated_documents_are_not(script):
    rng = np.random.default_rng(sorted(SCRIPTS).index(script))
    originals = [script_text(rng, script) for _ in range(12)]
    copies = [plant_edits(rng, text, script, 1 + i % 2) for i, text in enumerate(originals)]
    texts = originals + copies
    planted = {(i, i + len(originals)) for i in range(len(originals))}

    signatures = compute_signatures(texts, workers=1)  # shingle="auto": character 5-grams for these scripts
    assert lsh_candidates(signatures) == planted
    for a, b in planted:
        truth = exact_jaccard(texts[a], texts[b], "auto")
        assert truth >= 0.95
        assert (
            abs(estimated_jaccard(signatures[a], signatures[b]) - truth)
            <= 4.5 * np.sqrt(truth * (1 - truth) / 128) + 0.01
        )
    # word 5-grams of the same texts: an edited letter changes a whole clause "word" and 5 shingles of ~40
    assert np.mean([exact_jaccard(texts[a], texts[b], "words") for a, b in planted]) < 0.8
    assert all(exact_jaccard(*pair, "chars") < 0.02 for pair in zip(originals[::2], originals[1::2], strict=True))


@pytest.mark.parametrize("script", ["chinese", "thai"])
def test_unpunctuated_document_is_one_word_but_many_character_shingles(script):
    rng = np.random.default_rng(7)
    text = script_text(rng, script, 300, punctuate=False)
    copy = plant_edits(rng, text, script, 1)
    assert len(shingle_hashes(text, 5, "words")) == 1
    assert exact_jaccard(text, copy, "words") == 0.0
    assert len(shingle_hashes(text, 5, "auto")) == len(hash_normalize(text)) - 4  # NFKC splits Thai sara am
    assert exact_jaccard(text, copy, "auto") >= 0.96


def test_auto_decides_letter_by_letter_so_a_pair_across_any_han_share_stays_alike():
    """A per-document choice at a 25% Han share gave J 0.000 to copies on either side of the line."""
    chinese = script_text(np.random.default_rng(1), "chinese", 200, punctuate=False)
    english = " ".join(f"word{i}" for i in range(60))
    assert np.array_equal(shingle_hashes(english, 5, "auto"), shingle_hashes(english, 5, "words"))
    assert len(shingle_hashes(chinese, 5, "auto")) == len(chinese) - 4  # characters
    assert len(shingle_hashes(chinese[:20] + " " + english, 5, "auto")) == 20 + 60 - 4  # both kinds of token
    # a page at 28% Han letters and its copy at 23% (25 Han letters dropped): most shingles still shared,
    # where characters for one and words for the other share none
    latin = sum(c.isalnum() for c in english[:300])
    page, copy = english[:300] + chinese[:100], english[:300] + chinese[:75]
    assert 100 / (100 + latin) > 0.25 > 75 / (75 + latin)
    assert exact_jaccard(page, copy, "auto") > 0.8
    assert not set(shingle_hashes(page, 5, "chars").tolist()) & set(shingle_hashes(copy, 5, "words").tolist())
    # the two forced modes never share a shingle hash, even for one-token documents
    assert shingle_hashes("中", 5, "words")[0] != shingle_hashes("中", 5, "chars")[0]


def test_recipe_rejects_an_unknown_shingle_mode():
    assert load_recipe(overrides=["dedup.shingle=chars"]).dedup.shingle == "chars"
    assert load_recipe().dedup.shingle == "auto"
    with pytest.raises(RecipeError, match="dedup.shingle.*words|chars|auto"):
        load_recipe(overrides=["dedup.shingle=letters"])


@pytest.mark.slow
def test_pipeline_dedup_removes_unpunctuated_chinese_copies_only_with_character_shingles(tmp_path):
    """`dedup.shingle` reaches the stage: auto removes every one-letter copy, words (one "word" each) none."""
    rng = np.random.default_rng(3)
    originals = [script_text(rng, "chinese", 400, punctuate=False) for _ in range(8)]
    records = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(originals)]
    records += [{"id": f"copy-{i}", "text": plant_edits(rng, t, "chinese", 1)} for i, t in enumerate(originals)]
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    removed = {}
    for mode in ("auto", "words"):
        out = tmp_path / mode
        cmd = [sys.executable, "-m", "data_pipeline.cli", "dedup", "--input", str(corpus), "--output", str(out)]
        cmd += ["--quiet", "--set", "filters.enabled=false", "--set", "workers=1", "--set", f"dedup.shingle={mode}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        removed[mode] = json.loads((out / "stats.json").read_text())["dropped"].get("near_dup", 0)
    assert removed == {"auto": 8, "words": 0}
