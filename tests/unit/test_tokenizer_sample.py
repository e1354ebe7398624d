"""The tokenizer's training sample drawn by the ranks in parallel gives the model a serial scan gives."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support.corpus import STORY_WORDS
from support.documents import write_kept

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.stages.tokenize import deal_parts, run_tokenize_stage
from data_pipeline.tokenizer import document_fraction, kept_files, sample_documents, train_tokenizer


def texts(n: int) -> list[str]:
    words = STORY_WORDS[:12]
    return [" ".join(words[(i * 7 + k) % len(words)] + str(k % 13) for k in range(60)) for i in range(n)]


def test_parallel_sample_trains_the_same_model_as_a_serial_scan(tmp_path: Path) -> None:
    recipe = load_recipe(overrides=["tokenizer.vocab_size=300", "tokenizer.input_sentence_size=101"])
    out = write_kept(tmp_path / "staged", texts(2400), parts=4)
    files = kept_files(out)
    fraction = document_fraction(files, recipe.tokenizer.input_sentence_size)
    assert 0.05 < fraction < 0.9  # the corpus is above the parse budget: a sample is drawn
    shares = deal_parts({p: p.stat().st_size for p in files}, 3)
    split = {p.name: p for share in shares for p in sample_documents(share, fraction, tmp_path / "s3")}
    whole = sample_documents(files, fraction, tmp_path / "s1")
    assert [split[p.name].read_bytes() for p in whole] == [p.read_bytes() for p in whole]  # any rank count
    serial = train_tokenizer(files, tmp_path / "serial", recipe.tokenizer)
    run_tokenize_stage(LocalComm(), out, recipe, quiet=True)
    model = (out / "tokenizer" / "spm.model").read_bytes()
    assert hashlib.sha256(model).hexdigest() == serial["sha256"]
    assert not (out / "tokenizer" / "sample").exists()
