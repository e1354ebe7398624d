"""MinHash signatures: exact arithmetic, parity with datasketch's estimates, short documents, workers."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from datasketch import MinHash

from data_pipeline.dedup.lsh import planted_corpus
from data_pipeline.dedup.minhash import (
    _WORD_CHAR_SPANS,
    MERSENNE_PRIME,
    Permutations,
    compute_signatures,
    estimated_jaccard,
    hash_normalize,
    shingle_hashes,
    shingle_hashes_batch,
    signatures_from_hashes,
)

P = int(MERSENNE_PRIME)


def test_hash_normalize_folds_case_punctuation_width_and_spaces():
    assert hash_normalize("  Hello,\tWORLD!!\n ﬁne  ") == "hello world fine"
    assert hash_normalize("Ｆｕｌｌ－width") == "full width"
    assert hash_normalize("snake_case... end") == "snake case end"
    assert hash_normalize("กิน ข้าว") == "กิน ข้าว"  # Thai vowel and tone marks are part of the word
    assert hash_normalize("नमस्ते, दुनिया!") == "नमस्ते दुनिया"


def test_word_shingles_are_the_words_of_hash_normalize():
    """The compiled tokenizer splits exactly where hash_normalize puts spaces, on ASCII and beyond."""
    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in range(128)] + list("éÉßİıﬁ½²ж中。、ก ิ่_-—\u0301\u3000")
    for _ in range(300):
        text = "".join(rng.choice(alphabet, rng.integers(0, 60)))
        normalized = hash_normalize(text)
        assert np.array_equal(shingle_hashes(text, 2, "words"), shingle_hashes(normalized, 2, "words")), repr(text)
        assert len(shingle_hashes(text, 2, "words")) == max(1, len(normalized.split()) - 1), repr(text)


def test_letters_digits_and_marks_lie_where_the_tables_look():
    """Code points outside _WORD_CHAR_SPANS are separators; true for the running Python's Unicode database."""
    outside = [range(_WORD_CHAR_SPANS[0][1], _WORD_CHAR_SPANS[1][0]), range(_WORD_CHAR_SPANS[1][1], 0x110000)]
    text = "".join(chr(c) for span in outside for c in span if not 0xD800 <= c < 0xE000)
    assert hash_normalize(text) == ""
    assert all(unicodedata.category(c)[0] not in "LMN" for c in text[::97])


def test_batched_shingles_equal_per_document_shingles():
    texts = ["a b c d e f g", "", "short doc", "x " * 30, "Ünïcode words here and there, again and again"]
    hashes, counts = shingle_hashes_batch(texts, ngram=4)
    assert counts.tolist() == [4, 1, 1, 27, 5]
    assert np.array_equal(hashes, np.concatenate([shingle_hashes(t, ngram=4) for t in texts]))


def test_shingles_count_and_order_sensitivity():
    words = " ".join(f"w{i}" for i in range(12))
    assert len(shingle_hashes(words, ngram=5)) == 12 - 5 + 1
    assert shingle_hashes(words).dtype == np.uint64
    assert not np.array_equal(shingle_hashes("a b c d e"), shingle_hashes("e d c b a"))
    assert np.array_equal(shingle_hashes("A, b c d e!"), shingle_hashes("a b c d e"))


def test_short_documents_get_one_shingle_of_all_words():
    assert len(shingle_hashes("one two three", ngram=5)) == 1
    assert len(shingle_hashes("", ngram=5)) == 1
    assert len(shingle_hashes("", ngram=5, shingle="chars")) == 1
    assert len(shingle_hashes("a\ud800b c", ngram=1)) == 3  # a lone surrogate (surrogateescape input) separates
    assert shingle_hashes("one two three")[0] != shingle_hashes("one two four")[0]
    assert shingle_hashes("one two")[0] != shingle_hashes("two one")[0]
    sigs = compute_signatures(["one two three", "One, two three.", "one two four", ""], workers=1)
    assert np.array_equal(sigs[0], sigs[1])
    assert estimated_jaccard(sigs[0], sigs[2]) < 0.1
    assert len(sigs) == 4


def test_permutations_are_datasketch_legacy_permutations():
    ours = Permutations.from_seed(64, seed=7)
    theirs = MinHash(num_perm=64, seed=7, scheme="legacy").permutations
    assert np.array_equal(ours.a, theirs[0]) and np.array_equal(ours.b, theirs[1])


def test_signature_is_exact_min_of_mersenne_permutations():
    """Every entry equals min over shingles of (a*h + b) mod (2^61-1), computed with Python integers."""
    long_text = " ".join(f"w{i}" for i in range(400))  # its shingles span several kernel blocks
    hashes = [
        shingle_hashes(t) for t in ("the quick brown fox jumps over the lazy dog", long_text, "x", long_text[:900])
    ]
    perms = Permutations.from_seed(32, seed=3)
    sigs = signatures_from_hashes(hashes, perms)
    for doc, doc_hashes in enumerate(hashes):
        h32 = [int(h) >> 32 for h in doc_hashes]
        for k, (a, b) in enumerate(zip(perms.a.tolist(), perms.b.tolist(), strict=True)):
            expected = min((a * h + b) % P for h in h32) & 0xFFFFFFFF
            assert int(sigs[doc, k]) == expected


def test_affine32_scheme_is_bit_identical_to_datasketch():
    texts, _ = planted_corpus(20, 1, (0.1,), words=250, seed=4)
    texts += ["tiny", ""]
    sigs = compute_signatures(texts, num_perm=64, seed=9, workers=1, scheme="affine32")
    for doc, text in enumerate(texts):
        theirs = MinHash(num_perm=64, seed=9, scheme="affine32", hashfunc=lambda v: v >> 32)
        theirs.update_batch(shingle_hashes(text).tolist())
        assert np.array_equal(sigs[doc], theirs.hashvalues), doc


def _true_jaccard(a: str, b: str) -> float:
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(sa & sb) / len(sa | sb)


def _datasketch_jaccard(a: str, b: str, num_perm: int, scheme: str) -> float:
    def feed(text: str) -> MinHash:
        m = MinHash(num_perm=num_perm, seed=1, scheme=scheme, hashfunc=lambda v: v >> 32)
        m.update_batch(shingle_hashes(text).tolist())
        return m

    return feed(a).jaccard(feed(b))


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
def test_estimated_jaccard_matches_datasketch_within_sampling_error(scheme):
    texts, pairs = planted_corpus(60, 1, (0.02, 0.08, 0.2, 0.4), words=150, seed=5)
    sigs = compute_signatures(texts, num_perm=128, workers=1)
    ours, theirs, truth = [], [], []
    for a, b in pairs:
        truth.append(_true_jaccard(texts[a], texts[b]))
        ours.append(float(estimated_jaccard(sigs[a], sigs[b])))
        theirs.append(_datasketch_jaccard(texts[a], texts[b], 128, scheme))
    truth, ours, theirs = map(np.array, (truth, ours, theirs))
    sigma = np.sqrt(truth * (1 - truth) / 128) + 1e-3
    assert np.all(np.abs(ours - truth) <= 4.5 * sigma)
    assert np.all(np.abs(ours - theirs) <= 6.5 * sigma)
    assert abs(np.mean(ours - truth)) < 0.01  # unbiased over 60 pairs
    assert np.mean(np.abs(ours - truth)) <= 1.3 * np.mean(np.abs(theirs - truth)) + 0.005


def test_output_independent_of_workers_and_deterministic():
    texts, _ = planted_corpus(700, 0, words=20, seed=1)
    one = compute_signatures(texts, num_perm=16, workers=1)
    for doc in (0, 511, 512, 699):  # a signature depends only on its own text, not on its batch
        assert np.array_equal(one[doc], compute_signatures([texts[doc]], num_perm=16, workers=1)[0])
    assert compute_signatures([], num_perm=16, workers=1).shape == (0, 16)
    two = compute_signatures(texts, num_perm=16, workers=2)
    assert one.shape == (700, 16) and one.dtype == np.uint32
    assert np.array_equal(one, two)
    assert np.array_equal(one, compute_signatures(texts, num_perm=16, workers=1))
    assert not np.array_equal(one, compute_signatures(texts, num_perm=16, seed=2, workers=1))
    affine = compute_signatures(texts, num_perm=16, workers=1, scheme="affine32")
    assert np.array_equal(affine, compute_signatures(texts, num_perm=16, workers=2, scheme="affine32"))
    assert not np.array_equal(affine, one)


def test_bad_arguments_name_the_setting():
    with pytest.raises(ValueError, match="ngram"):
        shingle_hashes("a b", ngram=0)
    with pytest.raises(ValueError, match="num_perm"):
        compute_signatures(["a"], num_perm=0, workers=1)
    with pytest.raises(ValueError, match="mersenne61, affine32"):
        compute_signatures(["a"], workers=1, scheme="affine64")
    for texts in (["a"], []):
        with pytest.raises(ValueError, match=r"words, chars, auto \(dedup.shingle\)"):
            compute_signatures(texts, workers=1, shingle="char")
