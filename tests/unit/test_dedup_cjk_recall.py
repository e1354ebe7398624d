"""Recall where text has no spaces: edited Chinese and Japanese paragraphs, character 5-grams, the default bands.

Each letter edited breaks 5 character shingles, so paragraphs with 1-3% of their letters replaced have a true
Jaccard of ~0.75-0.9: on the slope of the LSH S-curve just above the 0.8 threshold. The default band layout must
find >= 95% of the pairs at J >= 0.8 (the code before 16 x 8 bands: 0.939 and 0.886 here), and remove nothing
but the edited copies.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_shingle_scripts import exact_jaccard, plant_edits, script_text

from data_pipeline.comm import LocalComm
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates
from data_pipeline.dedup.minhash import compute_signatures

PARAGRAPHS = 400


@pytest.mark.parametrize("script", ["chinese", "japanese"])
def test_default_bands_find_edited_paragraphs(script):
    rng = np.random.default_rng(7)
    originals = [script_text(rng, script, int(rng.integers(200, 1001))) for _ in range(PARAGRAPHS)]
    edits = [max(1, round(rng.uniform(0.01, 0.03) * len(t))) for t in originals]
    texts = originals + [plant_edits(rng, t, script, k) for t, k in zip(originals, edits, strict=True)]
    sigs = compute_signatures(texts, workers=1)  # dedup.shingle=auto: character 5-grams for these
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), sigs, LSHParams.from_threshold(0.8, 128))
    kept_of = {r: c["kept"] for c in result.clusters.records() for r in c["removed"]}
    assert all(kept == removed - PARAGRAPHS for removed, kept in kept_of.items())  # only copies, each for its own
    close = [i for i in range(PARAGRAPHS) if exact_jaccard(texts[i], texts[PARAGRAPHS + i], "chars") >= 0.8]
    assert len(close) >= 0.4 * PARAGRAPHS
    recall = sum(kept_of.get(PARAGRAPHS + i) == i for i in close) / len(close)
    assert recall >= 0.95, recall
