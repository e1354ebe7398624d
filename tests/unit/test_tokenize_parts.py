"""The tokenize stage at scale: kept parts dealt to ranks by bytes, one stat per part in all, and a marker per part
so that a run killed at one rank count and resumed at another gives the uninterrupted run's dataset."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.documents import stdlib_docs, write_kept
from support.sim_comm import run_ranks
from test_tokenizer_sample import texts as story_texts

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.stages import tokenize
from data_pipeline.stages.tokenize import deal_parts, run_tokenize_stage
from data_pipeline.tasks import load_balance, plan_tasks

MB = 1 << 20
RECIPE = load_recipe(None, ["tokenizer.vocab_size=400", "shards.target_bytes=4000", "shards.validation_fraction=0.1"])
PARTS = 6


def loads(sizes: list[int], shares: list[list[str]]) -> np.ndarray:
    size_of = {f"kept/part-{i:05d}.jsonl": s for i, s in enumerate(sizes)}
    return np.array([sum(size_of[p] for p in share) for share in shares], dtype=np.float64)


def dealt(sizes: list[int], world_size: int) -> list[list[str]]:
    return deal_parts({f"kept/part-{i:05d}.jsonl": s for i, s in enumerate(sizes)}, world_size)


def lpt_bound(sizes: list[int], world_size: int) -> float:
    """Largest-first greedy's max/mean bound: the most loaded rank holds one part (no dealing does better than the
    largest part), or it was the least loaded (<= the mean) when it took its last part, which is at most the
    (N+1)-th largest, since every rank already held one."""
    ordered, mean = sorted(sizes, reverse=True), sum(sizes) / world_size
    return max(ordered[0], mean + ordered[world_size]) / mean


def test_log_normal_parts_on_2048_ranks_meet_the_greedy_bound():
    """20,480 parts (10 a rank), log-normal sizes (median 64 MiB, sigma 0.5): max/mean 1.017 by bytes (the greedy
    bound is 1.167 here), where dealing contiguous runs by count (the old rank_share) gives 1.68."""
    sizes = [int(s) for s in np.random.default_rng(0).lognormal(np.log(64 * MB), 0.5, 20480)]
    shares = dealt(sizes, 2048)
    assert sorted(p for share in shares for p in share) == [f"kept/part-{i:05d}.jsonl" for i in range(len(sizes))]
    assert all(share == sorted(share) for share in shares)  # each rank's parts in part order
    by_bytes = loads(sizes, shares)
    assert by_bytes.max() / by_bytes.mean() <= min(lpt_bound(sizes, 2048), 1.05)
    by_count = loads(sizes, [[f"kept/part-{i:05d}.jsonl" for i in range(r * 10, r * 10 + 10)] for r in range(2048)])
    assert by_count.max() / by_count.mean() > 1.5


def test_the_parts_a_scan_leaves_balance_within_1_01_on_2048_ranks():
    """The realistic case: 18,000 input files, log-normal sizes (median 64 MiB, sigma 1.5: some of 10+ GB), cut
    into the scan's 128 MiB tasks (38,574), each task's kept part 30-90% of it: 1.0014 by bytes, 1.67 by count."""
    rng = np.random.default_rng(0)
    files = [int(s) for s in rng.lognormal(np.log(64 * MB), 1.5, 18000)]
    tasks = plan_tasks([f"f{i}.jsonl" for i in range(len(files))], files, task_bytes=128 * MB)
    sizes = [int(t.size * keep) for t, keep in zip(tasks, rng.uniform(0.3, 0.9, len(tasks)), strict=True)]
    by_bytes = loads(sizes, dealt(sizes, 2048))
    assert by_bytes.max() / by_bytes.mean() <= min(lpt_bound(sizes, 2048), 1.01)
    owners = [r for r in range(2048) for _ in range(r * len(sizes) // 2048, (r + 1) * len(sizes) // 2048)]
    assert load_balance(sizes, owners, 2048) > 1.5  # the old contiguous dealing by count


def test_a_part_larger_than_a_rank_share_gets_a_rank_of_its_own():
    shares = dealt([100, 1, 1, 1, 1, 1, 1], 3)
    assert shares[0] == ["kept/part-00000.jsonl"] and sorted(len(s) for s in shares) == [1, 3, 3]


def dataset(out: Path) -> dict:
    """What a training run reads: the manifest (but its timings and date), every file under shards/ by content,
    and the documents' order per split."""
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("timings_s", "created_unix"):
        manifest.pop(key)
    files = {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}
    order = {
        split: [d for row in entry["shards"] for d in pq.read_table(out / row["index"])["doc_id"].to_pylist()]
        for split, entry in manifest["splits"].items()
    }
    return {"manifest": manifest, "files": files, "order": order}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return stdlib_docs(60)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, texts) -> dict:
    out = write_kept(tmp_path_factory.mktemp("whole"), texts, parts=PARTS)
    run_tokenize_stage(LocalComm(), out, RECIPE, quiet=True)
    return dataset(out)


def test_killed_at_2_ranks_resumed_at_3_gives_the_uninterrupted_dataset(tmp_path, texts, uninterrupted, monkeypatch):
    out = write_kept(tmp_path, texts, parts=PARTS)
    encode, encoded = tokenize.encode_to_shards, []

    def killed_after_writing_part_3(processor, info, part, *args):
        rows = encode(processor, info, part, *args)
        if part.name == "part-00003.jsonl":  # its shards are written, its marker never will be
            (part.parent.parent / "shards" / "train-part-00003-00099.arrow").write_bytes(b"of a longer attempt")
            raise OSError("killed")
        return rows

    monkeypatch.setattr(tokenize, "encode_to_shards", killed_after_writing_part_3)
    with pytest.raises(OSError, match="killed"):
        run_ranks(2, lambda comm: run_tokenize_stage(comm, out, RECIPE, quiet=True))
    finished = {p.stem.removeprefix("tokenize-") for p in (out / ".stages").glob("tokenize-part-*.json")}
    assert 0 < len(finished) < PARTS and "part-00003" not in finished

    def recorded(processor, info, part, *args):
        encoded.append(part.stem)
        return encode(processor, info, part, *args)

    monkeypatch.setattr(tokenize, "encode_to_shards", recorded)
    run_ranks(3, lambda comm: run_tokenize_stage(comm, out, RECIPE, quiet=True))
    assert sorted(encoded) == sorted({f"part-{i:05d}" for i in range(PARTS)} - finished)  # only the unfinished
    assert dataset(out) == uninterrupted


def test_a_rerun_at_another_rank_count_encodes_nothing(tmp_path, texts, uninterrupted, monkeypatch):
    out = write_kept(tmp_path, texts, parts=PARTS)
    run_ranks(4, lambda comm: run_tokenize_stage(comm, out, RECIPE, quiet=True))
    assert dataset(out) == uninterrupted
    monkeypatch.setattr(tokenize, "encode_to_shards", lambda *args: pytest.fail(f"encoded {args[2]} again"))
    run_ranks(3, lambda comm: run_tokenize_stage(comm, out, RECIPE, quiet=True))
    assert dataset(out) == uninterrupted


def test_each_kept_part_is_statted_once_in_all(tmp_path, texts, monkeypatch):
    """Not every rank stats every part (2,048 ranks x 18k parts on a shared file system): rank 0 stats each part
    once and shares the result, the other ranks stat none, on a first run and on a rerun that reuses everything."""
    out = write_kept(tmp_path, texts, parts=7)
    kept_dir, real_stat, rank_of_thread = str(out / "kept"), os.stat, threading.local()
    stats: list[list[str]] = [[] for _ in range(3)]

    def counted(path, *args, **kwargs):
        if str(path).startswith(kept_dir + os.sep) and hasattr(rank_of_thread, "rank"):  # a part, not kept/
            stats[rank_of_thread.rank].append(Path(path).name)
        return real_stat(path, *args, **kwargs)

    def rank(comm):
        rank_of_thread.rank = comm.rank
        return run_tokenize_stage(comm, out, RECIPE, quiet=True)

    monkeypatch.setattr(os, "stat", counted)
    for attempt in ("first", "rerun"):
        for seen in stats:
            seen.clear()
        run_ranks(3, rank)
        parts = [f"part-{i:05d}.jsonl" for i in range(7)]
        assert [sorted(seen) for seen in stats] == [parts, [], []], attempt


def test_a_sample_drawn_on_3_ranks_trains_the_1_rank_model(tmp_path, monkeypatch):
    """Above the parse budget each rank samples the parts dealt to it; rank 0 trains on all the samples."""
    recipe = load_recipe(overrides=["tokenizer.vocab_size=300", "tokenizer.input_sentence_size=101"])
    one, three = (write_kept(tmp_path / name, story_texts(2400), parts=5) for name in ("one", "three"))
    run_tokenize_stage(LocalComm(), one, recipe, quiet=True)
    drawn = []
    sample = tokenize.sample_documents
    monkeypatch.setattr(tokenize, "sample_documents", lambda files, *args: drawn.append(files) or sample(files, *args))
    run_ranks(3, lambda comm: run_tokenize_stage(comm, three, recipe, quiet=True))
    assert sorted(p.name for files in drawn for p in files) == [f"part-{i:05d}.jsonl" for i in range(5)]
    assert len(drawn) == 3  # every rank drew its own parts' sample
    model = "tokenizer/spm.model"
    assert (one / model).read_bytes() == (three / model).read_bytes()
