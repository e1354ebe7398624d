"""The tokenizer export: transformers' tokenizer built from our SentencePiece model encodes like it (the model export of
a real run is tests/integration/test_export.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.documents import ROUND_TRIP_TEXTS

ROOT = Path(__file__).resolve().parents[2]


def python_documentation(count: int = 120) -> list[str]:
    """The first documents of the built-in corpus (pydoc topics: prose with code): text fixed by the Python
    version, so the tokenizer a test trains on it does not change when this repository's own files do (it once
    trained on pretrain/*.py and flipped with every edit)."""
    from itertools import islice

    from data_pipeline.demo_corpus import topic_documents

    return [doc["text"] for doc in islice(topic_documents(), count)]


def tokenizer_corpus(tmp: Path) -> Path:
    """Python's documentation and the edge-case texts as pipeline documents."""
    docs = python_documentation() + ROUND_TRIP_TEXTS
    path = tmp / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return path


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Seeded random strings over ASCII, whitespace runs, control-piece spellings and rare Unicode."""
    import random

    rng = random.Random(seed)
    atoms = list("abcdefghij klmnop  XYZ019.,;()") + ["\n", "\t", "   ", "<s>", "</s>", "<unk>", "<0x41>", "▁"]
    atoms += ["é", "ß", "中", "語", "🤗", "\u200b", "\u00a0", "ﬁ"]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 40))) for _ in range(count)]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_hf_tokenizer_encodes_like_sentencepiece(tmp_path: Path, model_type: str) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from data_pipeline.config import TokenizerConfig
    from data_pipeline.tokenizer import train_tokenizer
    from pretrain.interop.hf_tokenizer import save_hf_tokenizer

    corpus = tokenizer_corpus(tmp_path)
    settings = TokenizerConfig(vocab_size=700, model_type=model_type, num_threads=1)
    train_tokenizer([corpus], tmp_path / "ds", settings)
    model_path = tmp_path / "ds" / "tokenizer" / "spm.model"
    save_hf_tokenizer(model_path, tmp_path / "hf", model_max_length=128)
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    lines = [line for p in sorted((ROOT / "data_pipeline").glob("*.py"))[:3] for line in p.read_text().splitlines()]
    texts = ROUND_TRIP_TEXTS + lines + random_texts(300)
    mismatches = [t for t in texts if hf.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts encode differently, e.g. {mismatches[:3]}"
    assert all(hf.decode(sp.encode(t)) == sp.decode(sp.encode(t)) for t in texts)
    assert (hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (sp.eos_id(), sp.bos_id(), sp.unk_id())
    assert hf.encode("x y", add_special_tokens=True) == sp.encode("x y")  # no BOS/EOS added: training had none
