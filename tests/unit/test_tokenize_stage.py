"""The tokenize stage: shards and manifest from kept/, the split, reruns, and failures that leave no manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.documents import stdlib_docs, write_kept
from test_tokenizer import ADVERSARIAL

from data_pipeline.comm import LocalComm, collective
from data_pipeline.config import load_recipe
from data_pipeline.errors import PipelineError, RankFailed
from data_pipeline.markers import StageMismatch
from data_pipeline.shards import TokenStream, read_manifest
from data_pipeline.stages.tokenize import is_validation, run_tokenize_stage
from data_pipeline.tokenizer import load_tokenizer

RECIPE = ["tokenizer.vocab_size=700", "shards.target_bytes=20000", "shards.validation_fraction=0.1"]


def recipe(*extra: str):
    return load_recipe(None, [*RECIPE, *extra])


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return stdlib_docs(100) + ADVERSARIAL


@pytest.fixture(scope="module")
def built(tmp_path_factory, texts):
    out = write_kept(tmp_path_factory.mktemp("run"), texts, parts=1)
    (out / "stats.json").write_text(
        json.dumps({"input_docs": len(texts) + 5, "kept_docs": len(texts), "dropped": {"x": 5}})
    )
    stats = run_tokenize_stage(LocalComm(), out, recipe(), quiet=True)
    return out, stats


def expected_streams(out, texts) -> dict[str, np.ndarray]:
    """Encode each doc on its own, EOS appended, in kept order, routed by the id hash."""
    processor, info = load_tokenizer(out)
    streams = {"train": [], "validation": []}
    for i, text in enumerate(texts):
        split = "validation" if is_validation(f"doc-{i:06d}", 0.1) else "train"
        streams[split].append(np.array([*processor.encode(text), info["eos_id"]]))
    return {s: np.concatenate(v) for s, v in streams.items()}


def test_token_streams_equal_encoding_each_document_in_order(built, texts):
    out, stats = built
    expected = expected_streams(out, texts)
    for split in ("train", "validation"):
        ts = TokenStream(out, split)
        assert ts.num_tokens == len(expected[split]) == stats[f"{split}_num_tokens"]
        np.testing.assert_array_equal(ts.window(0, ts.num_tokens), expected[split])
    assert stats["train_num_docs"] + stats["validation_num_docs"] == len(texts)
    assert stats["validation_num_docs"] > 0


def test_manifest_records_tokenizer_ledger_recipe_and_dtype(built):
    out, _ = built
    manifest = read_manifest(out)
    tok = json.loads((out / "tokenizer" / "tokenizer.json").read_text())
    assert manifest["tokenizer"]["sha256"] == tok["sha256"] and manifest["eos_id"] == tok["eos_id"]
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == 700
    assert manifest["ledger"]["dropped"] == {"x": 5}
    assert manifest["recipe"]["shards"]["validation_fraction"] == 0.1
    assert len(manifest["splits"]["train"]["shards"]) > 3  # target_bytes cut several shards
    assert all(r["path"].startswith("shards/train-part-00000-") for r in manifest["splits"]["train"]["shards"])


def test_rerun_skips_completed_work(built):
    out, stats = built
    shards = sorted((out / "shards").glob("*.arrow"))
    before = {p: p.stat().st_mtime_ns for p in [*shards, out / "tokenizer" / "spm.model"]}
    again = run_tokenize_stage(LocalComm(), out, recipe(), quiet=True)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert {k: v for k, v in again.items() if k != "timings_s"} == {k: v for k, v in stats.items() if k != "timings_s"}
    assert (out / "manifest.json").is_file()


def test_same_stream_from_one_or_three_kept_parts(tmp_path, texts):
    one = write_kept(tmp_path / "one", texts[:40], parts=1)
    three = write_kept(tmp_path / "three", texts[:40], parts=3)
    for out in (one, three):
        run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    for split in ("train", "validation"):
        a, b = TokenStream(one, split), TokenStream(three, split)
        np.testing.assert_array_equal(a.window(0, a.num_tokens), b.window(0, b.num_tokens))


def test_changed_kept_documents_are_retokenized(tmp_path, texts):
    out = write_kept(tmp_path, texts[:30])
    first = run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    write_kept(tmp_path, texts[:25])
    second = run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    assert second["train_num_docs"] + second["validation_num_docs"] == 25
    assert second["train_num_tokens"] < first["train_num_tokens"]
    assert sum(r["num_docs"] for r in read_manifest(out)["splits"]["train"]["shards"]) == second["train_num_docs"]


def test_failure_removes_the_stale_manifest_and_names_the_file_and_line(tmp_path, texts):
    out = write_kept(tmp_path, texts[:30])
    run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    with open(out / "kept" / "part-00000.jsonl", "a") as f:
        f.write('{"id": "broken"}\n')
    with pytest.raises(PipelineError, match=r"part-00000.jsonl:31"):
        run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    assert not (out / "manifest.json").exists()


def test_collective_failure_reaches_every_rank():
    class TwoRanks(LocalComm):
        size = 2

        def allgather(self, obj):
            return [obj, "OSError: kept/part-00001.jsonl: Permission denied"]

    with pytest.raises(RankFailed, match=r"1 of 2 rank\(s\); rank 1: OSError: kept/part-00001.jsonl"):
        collective(TwoRanks(), "tokenization", lambda: 42)


def test_the_failing_rank_raises_its_own_error():
    def fail():
        raise KeyError("own")

    with pytest.raises(KeyError, match="own"):
        collective(LocalComm(), "tokenization", fail)


def test_validation_split_is_a_stable_hash_of_the_id():
    ids = [f"doc-{i}" for i in range(20000)]
    chosen = [i for i in ids if is_validation(i, 0.005)]
    assert len(chosen) == 90  # about 0.5% of 20000; pinned: a change of hash or rule moves documents
    assert chosen[:5] == ["doc-225", "doc-1008", "doc-1494", "doc-1498", "doc-1582"]
    assert set(chosen) <= {i for i in ids if is_validation(i, 0.05)}  # growing the fraction only adds docs
    assert not any(is_validation(i, 0.0) for i in ids)


def test_uint32_shards_for_a_large_vocabulary(tmp_path):
    from data_pipeline.shards import ShardWriter, token_dtype
    from data_pipeline.stages.tokenize import encode_batch

    class Fake:  # encode_batch only needs .encode; the token ids exceed uint16
        def encode(self, texts, num_threads):
            return [[70000 + len(t), 5] for t in texts]

    arrays = encode_batch(Fake(), ["ab", "c"], eos_id=2, dtype=token_dtype(100000), threads=1)
    assert [a.tolist() for a in arrays] == [[70002, 5, 2], [70001, 5, 2]] and arrays[0].dtype == np.uint32
    writer = ShardWriter(tmp_path, "t", vocab_size=100000, eos_id=2, tokenizer_sha256="0")
    for i, a in enumerate(arrays):
        writer.add(str(i), a)
    assert writer.close()[0].num_tokens == 6


def test_no_validation_split_when_no_document_falls_in_it(tmp_path, texts):
    out = write_kept(tmp_path, texts[:20])
    stats = run_tokenize_stage(LocalComm(), out, recipe("shards.validation_fraction=0", "tokenizer.vocab_size=400"))
    manifest = read_manifest(out)
    assert list(manifest["splits"]) == ["train"] and manifest["validation_fraction"] == 0
    assert stats["validation_num_docs"] == 0 and stats["train_num_docs"] == 20


def shard_mtimes(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in [*(out / "shards").glob("*.arrow"), out / "tokenizer" / "spm.model"]}


@pytest.mark.parametrize(
    "change, named",
    [
        ("tokenizer.vocab_size=800", "tokenizer.vocab_size: 700 -> 800"),
        ("tokenizer.model_type=unigram", "tokenizer.model_type: 'bpe' -> 'unigram'"),
        ("shards.validation_fraction=0.2", "shards.validation_fraction: 0.1 -> 0.2"),
    ],
)
def test_changed_settings_on_a_complete_dataset_are_refused_and_named(built, change, named):
    out, _ = built
    before = shard_mtimes(out)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(StageMismatch) as err:
        run_tokenize_stage(LocalComm(), out, recipe(change), quiet=True)
    assert named in str(err.value) and "new --output folder" in str(err.value)
    assert shard_mtimes(out) == before and (out / "manifest.json").read_bytes() == manifest


def test_encode_threads_change_nothing_and_are_not_refused(built):
    out, _ = built
    before = shard_mtimes(out)
    run_tokenize_stage(LocalComm(), out, recipe("shards.encode_threads=1"), quiet=True)
    assert shard_mtimes(out) == before


def test_deleting_the_manifest_allows_retokenizing_in_place(tmp_path, texts):
    out = write_kept(tmp_path, texts[:30])
    run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=400"), quiet=True)
    (out / "manifest.json").unlink()
    run_tokenize_stage(LocalComm(), out, recipe("tokenizer.vocab_size=500"), quiet=True)
    assert read_manifest(out)["vocab_size"] == 500
