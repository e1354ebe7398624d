"""Export: SentencePiece -> HF tokenizer parity, ZeRO-3 consolidation (ours and DeepSpeed's own script agree),
refusal of incomplete checkpoints, and the Hugging Face folder loaded by transformers with matching logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [
    "Hello world",
    "",
    " ",
    "   leading, inner  double   and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\n",
    "def f(a, b):\n    return a + b  # comment\n",
    "12345 67.89 3.14159e-10 0x1F",
    "héllo ünïcode naïve café, Ærøskøbing, straße",
    "日本語のテキストと中文和한국어",
    "emoji 🤗🚀 and symbols ∑∫√≠ ① ﬁ",
    "literal control text <s> </s> <unk> <pad> <0x41>",
    "a\u00a0non-breaking\u2009thin\u200bzero-width space",
    "mixed\r\nline\rendings",
]


def tokenizer_corpus(tmp: Path) -> Path:
    """Real prose and code from this repository as pipeline documents."""
    docs = [p.read_text() for p in sorted((ROOT / "pretrain").glob("*.py"))[:6]] + TEXTS
    path = tmp / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return path


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_hf_tokenizer_encodes_like_sentencepiece(tmp_path: Path, model_type: str) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from data_pipeline.tokenizer import TokenizerSettings, train_tokenizer
    from pretrain.hf_tokenizer import save_hf_tokenizer

    corpus = tokenizer_corpus(tmp_path)
    settings = TokenizerSettings(vocab_size=700, model_type=model_type, num_threads=1)
    train_tokenizer([corpus], tmp_path / "ds", settings)
    model_path = tmp_path / "ds" / "tokenizer" / "spm.model"
    save_hf_tokenizer(model_path, tmp_path / "hf", model_max_length=128)
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    lines = [line for p in sorted((ROOT / "data_pipeline").glob("*.py"))[:3] for line in p.read_text().splitlines()]
    texts = TEXTS + lines
    if model_type == "unigram":  # known limit, see pretrain/hf_tokenizer.py: literal control-piece text
        texts = [t for t in texts if "<unk>" not in t and "<s>" not in t and "</s>" not in t and "<0x" not in t]
    mismatches = [t for t in texts if hf.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts encode differently, e.g. {mismatches[:3]}"
    assert all(hf.decode(sp.encode(t)) == sp.decode(sp.encode(t)) for t in texts)
    assert (hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (sp.eos_id(), sp.bos_id(), sp.unk_id())
    assert hf.encode("x y", add_special_tokens=True) == sp.encode("x y")  # no BOS/EOS added: training had none


# --------------------------------------------------------------------------- a real 2-rank ZeRO-3 checkpoint


def trained_run(tmp_path_factory: pytest.TempPathFactory, data: Path, preset: str) -> Path:
    """Train 3 steps on 2 CPU ranks (once per session and preset) and return the run folder."""
    from conftest import run_train

    run_dir = tmp_path_factory.getbasetemp() / f"export-run-{preset}"
    if (run_dir / "checkpoints" / "latest").is_file():
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = ("train.max_steps=3", "train.save_interval=3", "train.micro_batch_size=2", "train.global_batch_tokens=128")
    proc = run_train(2, data, run_dir, sets, extra=("--preset", preset))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
