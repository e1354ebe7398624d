"""The real `pipeline run` on 1, 2 and 3 MPI ranks: same kept ids and same token streams; a failing rank ends the job.

Each rank scans its tasks, dedups through collectives, tokenizes the kept parts dealt to it by bytes into shards
named by part; rank 0 writes one manifest. Nothing in the dataset depends on N.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.corpus import FUNCTION_WORDS, prose

from data_pipeline.shards import TokenStream, read_manifest
from data_pipeline.stages.tokenize import deal_parts
from infra.files import temp_path

REPO = Path(__file__).resolve().parents[2]
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"
# read.task_bytes: each input file is cut into byte ranges, so tasks that start mid-file run on other ranks
RECIPE = [
    "tokenizer.vocab_size=500",
    "shards.validation_fraction=0.1",
    "shards.target_bytes=20000",
    "read.task_bytes=8000",
]

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """150 articles, 10 exact copies and 10 near copies, over 5 files so every rank owns some."""
    rng = random.Random(0)
    docs = [prose(rng, FUNCTION_WORDS, 12, 8, 18, per_paragraph=4) for _ in range(150)]
    docs += docs[:10] + [d.replace(".", "!", 1) for d in docs[10:20]]
    folder = tmp_path_factory.mktemp("corpus")
    for f in range(5):
        share = range(f * len(docs) // 5, (f + 1) * len(docs) // 5)
        (folder / f"in-{f}.jsonl").write_text(
            "".join(json.dumps({"id": f"d{i}", "text": docs[i]}) + "\n" for i in share)
        )
    return folder


def pipeline_run(ranks: int, inputs: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [arg for item in RECIPE for arg in ("--set", item)]
    pipeline = [sys.executable, "-m", "data_pipeline.cli", "run", *(a for i in inputs for a in ("--input", i))]
    cmd = [str(MPIEXEC), "-n", str(ranks), *pipeline, "--output", str(out), "--quiet", *sets, *extra]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )


def kept_ids(out: Path) -> list[str]:
    parts = sorted((out / "kept").glob("part-*.jsonl"))
    return [json.loads(line)["id"] for p in parts for line in p.read_text().splitlines()]


def stream(out: Path, split: str) -> np.ndarray:
    ts = TokenStream(out, split)
    return np.asarray(ts.window(0, ts.num_tokens))


@pytest.fixture(scope="module")
def outputs(corpus, tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("runs")
    results = {}
    for ranks in (1, 2, 3):
        done = pipeline_run(ranks, [str(corpus / "*.jsonl")], root / f"n{ranks}")
        assert done.returncode == 0, done.stderr[-3000:]
        results[ranks] = root / f"n{ranks}"
    return results


def test_same_kept_documents_on_1_2_3_ranks(outputs):
    ids = {n: kept_ids(out) for n, out in outputs.items()}
    assert ids[1] == ids[2] == ids[3]
    stats = json.loads((outputs[1] / "stats.json").read_text())
    assert stats["input_docs"] == 170 == stats["kept_docs"] + sum(stats["dropped"].values())
    assert stats["tasks"] > 10  # byte ranges of the 5 files
    assert stats["dropped"].get("exact_dup") == 10 and stats["kept_docs"] == len(ids[1])
    assert not {f"d{i}" for i in range(150, 160)} & set(ids[1])  # the exact copies never survive
    for n, out in outputs.items():  # the same task parts and clusters, whichever rank ran each task
        assert {p.name: p.read_bytes() for p in (out / "kept").iterdir()} == {
            p.name: p.read_bytes() for p in (outputs[1] / "kept").iterdir()
        }, f"{n} ranks"
        assert (out / "dedup/clusters.jsonl").read_bytes() == (outputs[1] / "dedup/clusters.jsonl").read_bytes()


def test_stats_record_each_ranks_memory_and_traffic(outputs):
    for n, out in outputs.items():
        resources = json.loads((out / "stats.json").read_text())["resources"]
        per_rank = resources["per_rank"]
        assert len(per_rank) == n and all(r["peak_rss_rank_bytes"] > 20 * 2**20 for r in per_rank)
        assert all((r["bytes_received"] > 0) == (n > 1) for r in per_rank)  # one rank talks to no one
        assert resources["max"]["bytes_received"] == max(r["bytes_received"] for r in per_rank)


def test_same_tokenizer_and_token_streams_on_1_2_3_ranks(outputs):
    models = {n: (out / "tokenizer" / "spm.model").read_bytes() for n, out in outputs.items()}
    assert models[1] == models[2] == models[3]
    for split in ("train", "validation"):
        streams = [stream(out, split) for out in outputs.values()]
        assert len(streams[0]) > 0
        for other in streams[1:]:
            np.testing.assert_array_equal(streams[0], other)


def test_one_manifest_over_every_parts_shards_in_part_order(outputs):
    manifest = read_manifest(outputs[3])
    rows = manifest["splits"]["train"]["shards"]
    parts_in_order = [r["path"].removeprefix("shards/train-")[:10] for r in rows]  # shards/train-part-00012-00000
    assert parts_in_order == sorted(parts_in_order) and len(set(parts_in_order)) > 3
    kept = len(kept_ids(outputs[3]))
    assert manifest["splits"]["train"]["num_docs"] + manifest["splits"]["validation"]["num_docs"] == kept
    assert manifest["ledger"]["kept_docs"] == kept
    splits = {n: read_manifest(out)["splits"] for n, out in outputs.items()}
    assert splits[1] == splits[2] == splits[3]  # the same shards, byte for byte (sha256), on any N


def test_a_failing_rank_fails_the_job_and_leaves_no_manifest(corpus, tmp_path):
    """One rank's input file is undecodable (a .gz that is not gzip), read with --strict: that rank names it."""
    bad = tmp_path / "in"
    bad.mkdir()
    for f in sorted(corpus.glob("*.jsonl")):
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "zz-last.jsonl.gz").write_bytes(b"this is not gzip data\n" * 4000)
    done = pipeline_run(3, [str(bad / "*.jsonl"), str(bad / "*.jsonl.gz")], tmp_path / "out", "--strict")
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("pipeline run: rank ")]
    assert len(ours) == 1 and " of 3: error: " in ours[0] and "zz-last.jsonl.gz" in ours[0], done.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


STAGE_ONLY = """
import sys
from pathlib import Path
from data_pipeline.comm import get_comm
from data_pipeline.config import load_recipe
from data_pipeline.executor import job_failed
from data_pipeline.stages.tokenize import run_tokenize_stage
try:
    run_tokenize_stage(get_comm(), Path(sys.argv[1]), load_recipe(None, sys.argv[2:]), True)
except BaseException as err:  # as the CLI: the failing rank prints its error and aborts the job
    sys.exit(job_failed("tokenize", err))
"""


def first_train_shard_of(out: Path, rank: int, ranks: int) -> Path:
    """The first train shard of the first kept part the tokenize stage deals to `rank` of `ranks`."""
    sizes = {p.name: p.stat().st_size for p in sorted((out / "kept").glob("part-*.jsonl"))}
    return out / "shards" / f"train-{Path(deal_parts(sizes, ranks)[rank][0]).stem}-00000.arrow"


def test_tokenize_failure_on_one_rank_removes_the_old_manifest(corpus, tmp_path):
    """A finished 2-rank dataset where rank 1 must rewrite a damaged shard of one of its parts but cannot (a
    directory sits on the shard's temporary name). The rerun ends the job with rank 1's error naming the file;
    rank 0 skipped its own intact work; the stale manifest is gone (a dataset with a manifest is always complete)."""
    out = tmp_path / "out"
    assert pipeline_run(2, [str(corpus / "*.jsonl")], out).returncode == 0
    assert (out / "manifest.json").is_file()
    rank0_shard, rank1_shard = first_train_shard_of(out, 0, 2), first_train_shard_of(out, 1, 2)
    rank0_mtime = rank0_shard.stat().st_mtime_ns
    with open(rank1_shard, "ab") as f:
        f.write(b"x")
    temp_path(rank1_shard).mkdir()
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-c", STAGE_ONLY, str(out), *RECIPE]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode != 0
    assert "pipeline tokenize: rank 1 of 2: error: " in done.stderr
    assert f"{rank1_shard.name}: cannot write shard" in done.stderr
    assert not (out / "manifest.json").exists()
    assert rank0_shard.stat().st_mtime_ns == rank0_mtime
