"""The token shard format and TokenStream, which the trainer reads: windows, zero-copy views, checksums, dtypes."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline import shards
from data_pipeline.shards import (
    ShardError,
    ShardWriter,
    TokenStream,
    read_manifest,
    split_entry,
    token_dtype,
    write_manifest,
    write_shard,
)

EOS = 2


def random_docs(rng: np.random.Generator, count: int, vocab: int) -> list[np.ndarray]:
    docs = [rng.integers(3, vocab, size=int(rng.integers(0, 300))) for _ in range(count)]
    return [np.append(d, EOS) for d in docs]


def build_dataset(root, docs, vocab=32000, target_bytes=1000, validation=()) -> np.ndarray:
    """Write docs through ShardWriter (many small shards) and a manifest; return the expected stream."""
    writer = ShardWriter(
        root / "shards", "train", vocab_size=vocab, eos_id=EOS, tokenizer_sha256="0" * 64, target_bytes=target_bytes
    )
    for i, d in enumerate(docs):
        writer.add(f"doc-{i}", d)
    splits = {"train": split_entry(writer.close()), "validation": split_entry(list(validation))}
    write_manifest(root, {"format": "arrow-token-shards/v1", "vocab_size": vocab, "eos_id": EOS, "splits": splits})
    return np.concatenate(docs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    stream = build_dataset(root, random_docs(np.random.default_rng(0), 200, 32000))
    return root, stream


def test_writer_cuts_many_shards_and_counts_add_up(dataset):
    root, stream = dataset
    manifest = read_manifest(root)
    rows = manifest["splits"]["train"]["shards"]
    assert len(rows) > 20
    assert sum(r["num_tokens"] for r in rows) == manifest["splits"]["train"]["num_tokens"] == len(stream)
    assert sum(r["num_docs"] for r in rows) == 200
    assert not list((root / "shards").glob("*.tmp"))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_window_equals_slicing_the_concatenated_stream(dataset, data):
    root, stream = dataset
    ts = _stream(root)
    length = data.draw(st.integers(0, min(3000, len(stream))))
    start = data.draw(st.integers(0, len(stream) - length))
    np.testing.assert_array_equal(ts.window(start, length), stream[start : start + length])


def _stream(root, cache={}) -> TokenStream:  # noqa: B006 -- one verified stream per dataset across examples
    if root not in cache:
        cache[root] = TokenStream(root, "train")
    return cache[root]


def test_samples_tile_the_stream_with_one_shared_token(dataset):
    root, stream = dataset
    ts = _stream(root)
    seq_len = 129
    assert ts.num_samples(seq_len) == (len(stream) - 1) // seq_len
    for index in (0, 1, ts.num_samples(seq_len) - 1):
        sample = ts.sample(index, seq_len)
        np.testing.assert_array_equal(sample, stream[index * seq_len : index * seq_len + seq_len + 1])
    with pytest.raises(IndexError):
        ts.window(len(stream) - 5, 6)
    with pytest.raises(IndexError):
        ts.window(-1, 2)


def test_windows_inside_a_shard_are_zero_copy_views_of_the_mapped_file(dataset):
    root, _ = dataset
    ts = _stream(root)
    first_shard = ts.shard_tokens(0)
    view = ts.window(3, 10)
    assert np.shares_memory(view, first_shard)
    assert not view.flags.owndata and not view.flags.writeable
    assert first_shard.dtype == np.uint16
    crossing = ts.window(len(first_shard) - 4, 8)  # crosses a shard edge: a fresh array by necessity
    assert not np.shares_memory(crossing, first_shard)


def test_shard_file_is_standard_arrow_with_metadata_and_doc_index(dataset):
    root, stream = dataset
    row = read_manifest(root)["splits"]["train"]["shards"][0]
    with pa.memory_map(str(root / row["path"]), "r") as source:
        batch = pa.ipc.open_file(source).get_batch(0)
    meta = {k.decode(): v.decode() for k, v in batch.schema.metadata.items()}
    assert meta["dtype"] == "uint16" and meta["eos_id"] == str(EOS) and meta["vocab_size"] == "32000"
    offsets = batch.column("tokens").offsets.to_numpy()
    values = batch.column("tokens").values.to_numpy()
    assert offsets[-1] == len(values) == row["num_tokens"]
    assert all(values[end - 1] == EOS for end in offsets[1:])  # every document ends with EOS
    assert batch.column("doc_id")[0].as_py() == "doc-0"


def test_checksum_mismatch_names_the_shard(tmp_path):
    build_dataset(tmp_path, random_docs(np.random.default_rng(1), 30, 1000))
    row = read_manifest(tmp_path)["splits"]["train"]["shards"][2]
    path = tmp_path / row["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{path.name}: checksum mismatch"):
        TokenStream(tmp_path, "train")
    TokenStream(tmp_path, "train", verify=False)  # the opt-out still maps the file


def test_missing_shard_and_wrong_count_and_unknown_split_are_named(tmp_path):
    build_dataset(tmp_path, random_docs(np.random.default_rng(2), 30, 1000))
    manifest = read_manifest(tmp_path)
    rows = manifest["splits"]["train"]["shards"]
    rows[0]["num_tokens"] += 1
    write_manifest(tmp_path, manifest)
    with pytest.raises(ShardError, match=rf"{rows[0]['path'].split('/')[-1]}: \d+ tokens, manifest says"):
        TokenStream(tmp_path, "train", verify=False)
    rows[0]["num_tokens"] -= 1
    write_manifest(tmp_path, manifest)
    (tmp_path / rows[1]["path"]).unlink()
    with pytest.raises(ShardError, match=rf"{rows[1]['path'].split('/')[-1]}: shard listed in the manifest is missing"):
        TokenStream(tmp_path, "train", verify=False)
    with pytest.raises(ShardError, match="no split 'test'"):
        TokenStream(tmp_path, "test")


def test_manifest_format_is_checked(tmp_path):
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/v9"}))
    with pytest.raises(ShardError, match="format 'other/v9'"):
        read_manifest(tmp_path)


def test_uint32_above_65536_tokens_and_uint16_at_the_limit(tmp_path):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    docs = [np.array([70000, 100, 65536, EOS]), np.array([131071, EOS])]
    build_dataset(tmp_path, docs, vocab=131072)
    ts = TokenStream(tmp_path, "train")
    assert ts.shard_tokens(0).dtype == np.uint32
    np.testing.assert_array_equal(ts.window(0, 6), np.concatenate(docs))


def test_empty_split_is_a_zero_token_stream(dataset):
    root, _ = dataset
    ts = TokenStream(root, "validation")
    assert ts.num_tokens == 0 and ts.num_samples(128) == 0
    assert len(ts.window(0, 0)) == 0


def test_empty_window_at_the_end_of_the_stream(dataset):
    root, stream = dataset
    ts = _stream(root)
    assert len(ts.window(len(stream), 0)) == 0 and ts.window(len(stream), 0).dtype == np.uint16


def test_write_shard_of_no_documents(tmp_path):
    info = write_shard(tmp_path / "empty.arrow", [], [], vocab_size=100, eos_id=EOS, tokenizer_sha256="x")
    assert (info.num_tokens, info.num_docs) == (0, 0)


def mapped_shards(root) -> set[str]:
    """Shard files this process has memory-mapped now (/proc/self/maps)."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in lines if str(root) in line and line.endswith(".arrow")}


def test_a_stream_keeps_at_most_open_shards_mapped_and_reads_every_one(tmp_path, monkeypatch):
    """A split of ~190k per-part shards must not exceed Linux's 65,530 maps per process: the stream maps each
    shard once to check it, then keeps only the OPEN_SHARDS it read last."""
    root = tmp_path
    stream = build_dataset(root, random_docs(np.random.default_rng(1), 100, 32000))
    monkeypatch.setattr(shards, "OPEN_SHARDS", 3)
    ts = TokenStream(root, "train", verify=False)
    gc.collect()
    assert len(mapped_shards(root)) <= 3
    rows = read_manifest(root)["splits"]["train"]["shards"]
    np.testing.assert_array_equal(ts.window(0, len(stream)), stream)  # crosses every shard
    gc.collect()
    assert len(rows) > 20 and 1 <= len(mapped_shards(root)) <= 3
    assert ts.shard_tokens.cache_info().currsize == 3
