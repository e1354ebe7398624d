"""`pipeline train-tokenizer` as a command, and the round trip over the built-in demo corpus that `pipeline demo-corpus`
writes (tokenizer behaviour in-process is tests/unit/test_tokenizer.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.documents import stdlib_docs, write_kept

from data_pipeline.config import TokenizerConfig
from data_pipeline.tokenizer import (
    load_tokenizer,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return stdlib_docs()


def test_cli_train_tokenizer(tmp_path, corpus):
    write_kept(tmp_path / "in", corpus[:60])
    cmd = [sys.executable, "-m", "data_pipeline.cli", "train-tokenizer", "--input", str(tmp_path / "in"), "--output"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "out"), "--set", "tokenizer.vocab_size=450"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / "out" / "tokenizer" / "tokenizer.json").read_text())
    assert info["vocab_size"] == 450 and info["sha256"] in done.stdout
    big = subprocess.run([*cmd, str(tmp_path / "big")], capture_output=True, text=True)
    assert big.returncode != 0 and "--set tokenizer.vocab_size=" in big.stderr
    assert "Traceback" not in big.stderr


def test_round_trip_on_every_document_of_the_builtin_demo_corpus(tmp_path):
    from data_pipeline.demo_corpus import write_demo_corpus

    corpus_path = tmp_path / "demo.jsonl"
    count, _ = write_demo_corpus(corpus_path)
    settings = TokenizerConfig(vocab_size=4000, input_sentence_size=50_000)
    train_tokenizer([corpus_path], tmp_path, settings)
    processor, _ = load_tokenizer(tmp_path)
    texts = [json.loads(line)["text"] for line in corpus_path.read_text(encoding="utf-8").splitlines()]
    assert len(texts) == count > 1000
    decoded = [processor.decode(ids) for ids in processor.encode(texts)]
    assert [i for i, (a, b) in enumerate(zip(texts, decoded, strict=True)) if a != b] == []
