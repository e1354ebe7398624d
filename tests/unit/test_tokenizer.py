"""SentencePiece training: exact round trips, determinism, recorded ids, and errors a user can act on."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.documents import stdlib_docs, write_kept

from data_pipeline.config import RecipeError, TokenizerConfig
from data_pipeline.tokenizer import (
    TokenizerError,
    kept_files,
    load_tokenizer,
    train_tokenizer,
)

ADVERSARIAL = [
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 😀😀 and flags 🇯🇵",
    "combining: e\u0301 a\u0308\u0323 Z\u0336\u0335 — NFC é vs NFD e\u0301 must stay distinct",
    "right-to-left: שלום עולם, مرحبا بالعالم \u202eevil\u202c",
    "CJK 中文字符 日本語のテキスト 한국어 텍스트 ｆｕｌｌｗｉｄｔｈ １２３",
    "control \x00\x01\x07\x1b[31m\x7f zero-width \u200b\u200d BOM \ufeff soft\u00adhyphen",
    "  leading and trailing spaces  ",
    "tabs\tand\t\ttabs\nnew\n\n\nlines\r\nwindows line ends\r",
    "ligatures ﬁ ﬂ, circled ① ⑵, superscript x² — NFKC would change every one of these",
    "def f(x):\n    return x  # indentation matters\n",
    "",
    " ",
    "\n",
    "digits 1234567890 3.14159 0xDEADBEEF",
    "surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 🀄",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return stdlib_docs()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    out = write_kept(tmp_path_factory.mktemp("tok"), corpus + ADVERSARIAL)
    info = train_tokenizer(kept_files(out), out, TokenizerConfig(vocab_size=800, num_threads=2))
    return out, info


@pytest.fixture(scope="module")
def processor(trained):
    return load_tokenizer(trained[0])[0]


def test_round_trip_is_exact_on_corpus_and_adversarial_unicode(processor, corpus):
    for text in corpus + ADVERSARIAL:
        assert processor.decode(processor.encode(text)) == text


def test_unseen_characters_fall_back_to_bytes_not_unk(trained):
    processor, info = load_tokenizer(trained[0])
    text = "never seen: \U0001fae0 \u0b95\u0bcd \U00013000 ꙮ"
    ids = processor.encode(text)
    assert info["unk_id"] not in ids
    assert processor.decode(ids) == text


def test_nfkc_would_have_broken_the_round_trip(trained):
    """Why normalization is 'identity': the default nmt_nfkc rule rewrites these characters."""
    import unicodedata

    processor, _ = load_tokenizer(trained[0])
    for text in ["ﬁ", "①", "１２３", "x²"]:
        assert unicodedata.normalize("NFKC", text) != text
        assert processor.decode(processor.encode(text)) == text


def test_files_ids_and_sha256_recorded(trained):
    out, info = trained
    folder = out / "tokenizer"
    model = (folder / "spm.model").read_bytes()
    assert info["sha256"] == hashlib.sha256(model).hexdigest()
    assert json.loads((folder / "tokenizer.json").read_text()) == info
    assert (info["unk_id"], info["bos_id"], info["eos_id"], info["pad_id"]) == (0, 1, 2, 3)
    assert info["vocab_size"] == 800
    vocab_lines = (folder / "spm.vocab").read_text(encoding="utf-8").split("\n")
    assert len([line for line in vocab_lines if line]) >= 799  # "\n" is a piece: its row spans two lines


def test_digits_are_split_and_newline_is_one_piece(processor):
    pieces = processor.encode("year 20241231", out_type=str)
    assert all(len(p) == 1 for p in pieces if p.isdigit())
    assert processor.encode("\n") == [processor.piece_to_id("\n")]


def test_training_twice_gives_identical_model_bytes(tmp_path, corpus):
    out = write_kept(tmp_path, corpus)
    models = []
    for run in range(2):
        info = train_tokenizer(kept_files(out), tmp_path / f"run{run}", TokenizerConfig(vocab_size=600))
        models.append((tmp_path / f"run{run}" / "tokenizer" / "spm.model").read_bytes())
        assert hashlib.sha256(models[-1]).hexdigest() == info["sha256"]
    assert models[0] == models[1]


def test_unigram_option(tmp_path, corpus):
    out = write_kept(tmp_path, corpus[:60])
    info = train_tokenizer(kept_files(out), out, TokenizerConfig(vocab_size=500, model_type="unigram"))
    processor, _ = load_tokenizer(out)
    assert info["model_type"] == "unigram" and processor.vocab_size() == 500
    for text in ADVERSARIAL:
        assert processor.decode(processor.encode(text)) == text


def test_too_large_vocab_says_which_setting_to_lower(tmp_path, corpus):
    out = write_kept(tmp_path, corpus[:5])
    with pytest.raises(TokenizerError, match=r"--set tokenizer.vocab_size=\d+"):
        train_tokenizer(kept_files(out), out, TokenizerConfig(vocab_size=32000))


def test_bad_settings_and_inputs_are_named(tmp_path):
    with pytest.raises(RecipeError, match="tokenizer.model_type"):
        TokenizerConfig(model_type="wordpiece")
    with pytest.raises(TokenizerError, match="no \\*.jsonl"):
        kept_files(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "ok"}\nnot json\n')
    with pytest.raises(TokenizerError, match="bad.jsonl:2"):
        train_tokenizer([tmp_path / "bad.jsonl"], tmp_path, TokenizerConfig(vocab_size=100))


def test_tampered_model_is_refused(tmp_path, corpus):
    out = write_kept(tmp_path, corpus[:40])
    train_tokenizer(kept_files(out), out, TokenizerConfig(vocab_size=400))
    model = out / "tokenizer" / "spm.model"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(TokenizerError, match="sha256 differs"):
        load_tokenizer(out)


def test_known_limit_literal_u2581_decodes_as_space(processor):
    """Documented limit: SentencePiece's space marker has no escape, so a literal '▁' comes back as ' '."""
    assert processor.decode(processor.encode("a▁b")) == "a b"


def test_large_corpus_is_sampled_by_line_hash_independent_of_parts(tmp_path, corpus):
    from data_pipeline.tokenizer import document_fraction, iter_documents

    one = kept_files(write_kept(tmp_path / "one", corpus, parts=1))
    three = kept_files(write_kept(tmp_path / "three", corpus, parts=3))
    fraction = document_fraction(one, input_sentence_size=101)  # budget 4 x 101 x 500 bytes, below the corpus
    assert 0.05 < fraction < 0.8
    assert document_fraction(one, input_sentence_size=1_000_000) == 1.0
    sampled = [doc["text"] for doc, _ in iter_documents(one, fraction)]
    assert sampled == [doc["text"] for doc, _ in iter_documents(three, fraction)]
    assert 0 < len(sampled) < len(corpus) and set(sampled) <= set(corpus)
    info = train_tokenizer(one, tmp_path, TokenizerConfig(vocab_size=600, input_sentence_size=101))
    assert info["vocab_size"] == 600


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581"), max_size=80))
def test_round_trip_of_arbitrary_unicode(processor, text):
    assert processor.decode(processor.encode(text)) == text
