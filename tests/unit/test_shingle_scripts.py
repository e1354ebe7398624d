"""Near-duplicates in scripts written without spaces (Chinese, Japanese, Thai): character shingles find them.

The texts are made here from each script's code points with a seeded generator (Zipf-weighted letters and a
punctuation mark every few letters, as in real text); copies get one or two substituted letters. "Found" means a
candidate of datasketch's MinHashLSH at threshold 0.8 fed our signatures, so the test does not depend on our LSH.
"""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from support.corpus import SCRIPTS, plant_edits, script_text

from data_pipeline.config import RecipeError, load_recipe
from data_pipeline.dedup.minhash import compute_signatures, estimated_jaccard, hash_normalize, shingle_hashes


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
