"""The token shards' per-document index: every token range is its document's encoding, ids are unique, counts
add up with the manifest, metadata is carried or null, and a document id is found. In-process: no process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from support.documents import stdlib_docs

from data_pipeline import inspect_dataset
from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.errors import PipelineError
from data_pipeline.shards import INDEX_SCHEMA, ShardError, find_document, read_index, read_manifest
from data_pipeline.stages.tokenize import run_tokenize_stage
from data_pipeline.tokenizer import load_tokenizer

RECIPE = ["tokenizer.vocab_size=700", "shards.target_bytes=6000", "shards.validation_fraction=0.2"]


def kept_record(i: int, text: str) -> dict:
    """Every third document has a url, every fifth no source: as kept/ from jsonl, WARC and older outputs."""
    record = {"id": f"doc-{i:04d}", "text": text}
    if i % 5:
        record["source"] = f"crawl/part{i % 2}.jsonl"
    if i % 3 == 0:
        record["url"] = f"https://example.org/page/{i}"
    return record


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("indexed")
    records = [kept_record(i, t) for i, t in enumerate(stdlib_docs(80))]
    (out / "kept").mkdir()
    for part in range(2):
        lines = [json.dumps(r) + "\n" for r in records[part * 40 : (part + 1) * 40]]
        (out / "kept" / f"part-{part:05d}.jsonl").write_text("".join(lines))
    run_tokenize_stage(LocalComm(), out, load_recipe(None, RECIPE), quiet=True)
    return out, {r["id"]: r for r in records}


def shard_tokens(path: Path) -> np.ndarray:
    with pa.ipc.open_file(pa.memory_map(str(path), "r")) as reader:
        return reader.get_batch(0).column("tokens").values.to_numpy(zero_copy_only=False)


def test_every_token_range_is_its_documents_encoding(dataset: tuple[Path, dict[str, dict]]) -> None:
    out, records = dataset
    processor, info = load_tokenizer(out)
    index = read_index(out).to_pylist()
    shards = {row["shard"]: shard_tokens(out / "shards" / row["shard"]) for row in index}
    for row in index:
        tokens = shards[row["shard"]][row["offset"] : row["offset"] + row["length"]]
        text = records[row["doc_id"]]["text"]
        assert tokens.tolist() == [*processor.encode(text), info["eos_id"]]
        assert processor.decode(tokens[:-1].tolist()) == processor.decode(processor.encode(text))


def test_ids_are_unique_and_counts_add_up_with_the_manifest(dataset: tuple[Path, dict[str, dict]]) -> None:
    out, records = dataset
    manifest = read_manifest(out)
    index = read_index(out)
    assert sorted(index["doc_id"].to_pylist()) == sorted(records)  # every kept document once, no other
    assert len(manifest["splits"]["train"]["shards"]) > 1  # the test covers offsets restarting per shard
    for split, entry in manifest["splits"].items():
        rows = read_index(out, split)
        assert len(rows) == entry["num_docs"]
        assert sum(rows["length"].to_pylist()) == entry["num_tokens"]
        for shard in entry["shards"]:
            mine = [r for r in rows.to_pylist() if r["shard"] == Path(shard["path"]).name]
            assert len(mine) == shard["num_docs"]
            ends = [r["offset"] + r["length"] for r in mine]
            assert [r["offset"] for r in mine] == [0, *ends[:-1]] and ends[-1] == shard["num_tokens"]


def test_source_and_url_are_carried_and_absent_ones_are_null(dataset: tuple[Path, dict[str, dict]]) -> None:
    out, records = dataset
    for row in read_index(out).to_pylist():
        record = records[row["doc_id"]]
        assert (row["source"], row["url"]) == (record.get("source"), record.get("url"))


def test_a_document_id_is_found_and_an_unknown_one_is_not(dataset: tuple[Path, dict[str, dict]]) -> None:
    out, records = dataset
    found = find_document(out, "doc-0003")
    assert found is not None and found["url"] == "https://example.org/page/3"
    assert found["split"] in ("train", "validation") and found["shard"].endswith(".arrow")
    assert find_document(out, "no-such-doc") is None


def test_pipeline_inspect_doc_traces_an_id_to_its_page_and_text(dataset: tuple[Path, dict[str, dict]]) -> None:
    out, records = dataset
    processor, _ = load_tokenizer(out)
    lines = inspect_dataset.document_lines(out, "doc-0003", max_chars=10_000)
    record = records["doc-0003"]
    assert lines[2] == f"source: {record['source']}  url: {record['url']}"
    assert lines[3] == f"text: {processor.decode(processor.encode(record['text']))!r}"
    with pytest.raises(PipelineError, match="no document 'gone'"):
        inspect_dataset.document_lines(out, "gone", 80)


def test_a_dataset_without_indexes_is_named(tmp_path: Path, dataset: tuple[Path, dict[str, dict]]) -> None:
    out, _ = dataset
    manifest = read_manifest(out)
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            del shard["index"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="no per-document index"):
        read_index(tmp_path)
    assert read_index(out).schema.names == [*INDEX_SCHEMA.names, "split"]
