"""The tiny but real dataset the trainer tests share: a SentencePiece model, Arrow token shards and a manifest.

`build_tiny_dataset` writes the folders `pipeline run` writes (tokenizer/, shards/, manifest.json with the fields
the trainer reads, but no recipe, ledger or marker files) from `support.corpus.synthetic_docs`, so trainer,
export and evaluate tests can share it without running the whole pipeline. Tokens are the real SentencePiece
encoding of that text (vocab 256), so a model trained on it has something to learn and export tests can decode
what they generate.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.corpus import synthetic_docs

TINY_VOCAB = 256


def build_tiny_dataset(out: Path, n_train: int = 400, n_val: int = 40, seed: int = 0) -> Path:
    """tokenizer/spm.model (+ tokenizer.json), shards/{train,validation}-00000.arrow, manifest.json."""
    import numpy as np

    from data_pipeline.config import TokenizerConfig
    from data_pipeline.shards import split_entry, write_manifest, write_shard
    from data_pipeline.stages.tokenize import dataset_manifest
    from data_pipeline.tokenizer import load_tokenizer, train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    docs = synthetic_docs(n_train + n_val, seed)
    corpus = out / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    settings = TokenizerConfig(vocab_size=TINY_VOCAB, byte_fallback=False, character_coverage=1.0, num_threads=1)
    train_tokenizer([corpus], out, settings)
    processor, info = load_tokenizer(out)
    (out / "shards").mkdir(exist_ok=True)
    splits = {}
    for split, part in (("train", docs[:n_train]), ("validation", docs[n_train:])):
        tokens = [np.array(processor.encode(t) + [info["eos_id"]], dtype=np.int64) for t in part]
        ids = [f"{split}-{i}" for i in range(len(part))]
        row = write_shard(
            out / "shards" / f"{split}-00000.arrow",
            ids,
            tokens,
            vocab_size=info["vocab_size"],
            eos_id=info["eos_id"],
            tokenizer_sha256=info["sha256"],
        )
        splits[split] = split_entry([row])
    write_manifest(out, dataset_manifest(info, splits))
    return out
