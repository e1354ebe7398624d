"""A second dataset with the tiny dataset's tokenizer, for the mixture tests (unit/test_mixture.py,
integration/test_mixture_train.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_pipeline.shards import read_manifest, split_entry, write_manifest, write_shard


def derived_dataset(source: Path, out: Path, keep_docs: int) -> Path:
    """A copy of `source` (same tokenizer) whose training split holds only its first `keep_docs` documents."""
    shutil.copytree(source, out)
    manifest = read_manifest(out)
    path = out / manifest["splits"]["train"]["shards"][0]["path"]
    batch = pa.ipc.open_file(pa.memory_map(str(path), "r")).get_batch(0)
    docs = [np.asarray(t, dtype=np.int64) for t in batch.column("tokens").to_pylist()[:keep_docs]]
    ids = batch.column("doc_id").to_pylist()[:keep_docs]
    path.unlink()
    meta = {"vocab_size": manifest["vocab_size"], "eos_id": manifest["eos_id"]}
    row = write_shard(path, ids, docs, tokenizer_sha256=manifest["tokenizer"]["sha256"], **meta)
    manifest["splits"]["train"] = split_entry([row])
    write_manifest(out, manifest)
    return out
