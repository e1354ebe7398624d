"""`pipeline dedup` end to end through the console script, on a small corpus with planted duplicates.

The corpus spreads over jsonl, jsonl.gz and parquet files and holds: clean documents, an exact copy and a near
copy (one word changed) of earlier ones, a lorem-ipsum page the filters must drop, and bad records. Every check
is on the output folder: the ledger adds up, clusters.jsonl names the right ids, kept/ is in input order, rejects
name file and line, a rerun skips, a damaged output is rebuilt byte-identical, a changed input is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.corpus import story
from support.pipeline_runs import output_hashes, planted_corpus, read_jsonl, read_parts, same_outputs

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / ".venv" / "bin" / "pipeline"
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return planted_corpus(tmp_path)


def run_pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    return subprocess.run([str(PIPELINE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def dedup(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_pipeline(
        "dedup", "--input", str(corpus), "--output", str(out), "--set", "workers=1", *extra, cwd=corpus.parent
    )


@pytest.mark.slow
def test_dedup_end_to_end(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = dedup(corpus, out)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_docs"] == 17 and stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values())
    assert stats["dropped"] == {
        "bad_input:empty_text": 1, "bad_input:malformed_json": 1, "exact_dup": 1, "filter:lorem_ipsum": 1, "near_dup": 1,
    }  # fmt: skip
    clusters = read_jsonl(out / "dedup" / "clusters.jsonl")
    assert [(c["kind"], c["kept"], c["removed"]) for c in clusters] == [
        ("exact", "doc-3", ["copy-of-3"]),
        ("near", "doc-5", ["near-5"]),
    ]
    assert 0.8 < clusters[1]["similarity"][0] < 1.0
    assert stats["tasks"] == 3 and len(list((out / "kept").glob("part-*.jsonl"))) == 3  # one task per input file
    kept = read_parts(out / "kept")
    gz = str(corpus / "b.jsonl.gz")
    assert [d["id"] for d in kept] == [*(f"doc-{i}" for i in range(10)), f"{gz}:8", "doc-11"]
    assert {d["source"] for d in kept} == {str(corpus / n) for n in ("a.jsonl", "b.jsonl.gz", "c.parquet")}
    rejects = read_parts(out / "rejects")
    assert [(r["source"], r["line"], r["reason"]) for r in rejects] == [
        (str(corpus / "a.jsonl"), 7, "bad_input:malformed_json"),
        (str(corpus / "c.parquet"), 2, "bad_input:empty_text"),
    ]
    assert "near cluster: kept doc-5 removed ['near-5']" in result.stderr
    assert stats["lsh"]["bands"] * stats["lsh"]["rows"] <= 128


@pytest.mark.slow
def test_rerun_skips_and_outputs_are_deterministic(corpus: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert dedup(corpus, first).returncode == 0
    before = output_hashes(first)
    rerun = dedup(corpus, first)
    assert rerun.returncode == 0 and "skipped" in rerun.stderr
    assert output_hashes(first) == before
    assert dedup(corpus, second, "--quiet").returncode == 0
    same_outputs(first, second)


@pytest.mark.slow
def test_damaged_output_is_rebuilt_and_changed_input_refused(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert dedup(corpus, out, "--quiet").returncode == 0
    kept_part = out / "kept" / "part-00001.jsonl"
    good = kept_part.read_bytes()
    kept_part.write_bytes(good[: len(good) // 2])  # as if killed while writing
    rebuilt = dedup(corpus, out)
    assert rebuilt.returncode == 0 and "skipped" not in rebuilt.stderr
    assert kept_part.read_bytes() == good
    (corpus / "a.jsonl").write_text((corpus / "a.jsonl").read_text() + json.dumps({"text": story(99)}) + "\n")
    changed = dedup(corpus, out)
    assert changed.returncode != 0
    assert "other inputs or another recipe" in changed.stderr and len(changed.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_strict_missing_input_and_bad_recipe_fail_with_one_line(corpus: Path, tmp_path: Path) -> None:
    strict = dedup(corpus, tmp_path / "strict", "--strict", "--quiet")
    assert strict.returncode != 0 and f"{corpus / 'a.jsonl'}:7: bad input (malformed_json)" in strict.stderr
    missing = run_pipeline("dedup", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "m"), cwd=tmp_path)
    assert missing.returncode != 0 and "nope" in missing.stderr and not (tmp_path / "m").exists()
    bad = dedup(corpus, tmp_path / "bad", "--set", "dedup.treshold=0.5")
    assert bad.returncode != 0 and "dedup.treshold" in bad.stderr
    assert all(len(r.stderr.strip().splitlines()) == 1 for r in (strict, missing, bad))


@pytest.mark.slow
@pytest.mark.mpi
def test_two_mpi_ranks_give_the_same_documents(corpus: Path, tmp_path: Path) -> None:
    single, double = tmp_path / "n1", tmp_path / "n2"
    assert dedup(corpus, single, "--quiet").returncode == 0
    cmd = [str(MPIEXEC), "-n", "2", str(PIPELINE), "dedup", "--input", str(corpus), "--output", str(double), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for sub in ("kept", "rejects"):  # the same task parts, whichever rank wrote them
        assert {p.name: p.read_bytes() for p in (double / sub).glob("*")} == {
            p.name: p.read_bytes() for p in (single / sub).glob("*")
        }
    assert (double / "dedup" / "clusters.jsonl").read_bytes() == (single / "dedup" / "clusters.jsonl").read_bytes()
    assert (
        json.loads((double / "stats.json").read_text())["dropped"]
        == json.loads((single / "stats.json").read_text())["dropped"]
    )


@pytest.mark.slow
def test_dedup_never_imports_torch(corpus: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from data_pipeline.cli import main; "
        f"rc = main(['dedup', '--input', {str(corpus)!r}, '--output', {str(tmp_path / 'o')!r}, '--quiet']); "
        "print(rc, 'torch' in sys.modules)"
    )
    result = subprocess.run([str(REPO / ".venv/bin/python"), "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["0", "False"], result.stderr


def test_scan_in_worker_processes_decides_like_one_process() -> None:
    from data_pipeline.config import FiltersConfig, load_recipe
    from data_pipeline.documents import Document
    from data_pipeline.executor import ordered_map, worker_pool
    from data_pipeline.steps import Steps, init_steps, scan_batch

    texts = [story(i) for i in range(60)] + ["short text {"] * 30 + ["Lorem ipsum " + story(i) for i in range(30)]
    texts = [Document(f"d{i}", text, "in.jsonl", i + 1) for i, text in enumerate(texts)]
    dedup_cfg = load_recipe(overrides=["dedup.num_perm=32"]).dedup
    one = Steps(FiltersConfig(), dedup_cfg).scan(texts)
    batches = [texts[i : i + 7] for i in range(0, len(texts), 7)]
    with worker_pool(2, init_steps, (FiltersConfig(), dedup_cfg)) as pool:
        parts = list(ordered_map(pool, scan_batch, iter(batches), ahead=3))
    reasons = [v and v[0] for v in one.verdicts]
    assert [v and v[0] for p in parts for v in p.verdicts] == reasons
    assert np.array_equal(np.concatenate([p.signatures for p in parts]), one.signatures)
    assert np.array_equal(np.concatenate([p.keys for p in parts]), one.keys)
    assert reasons.count(None) == 60 and reasons.count("filter:lorem_ipsum") == 30 and one.signatures.shape == (60, 32)


@pytest.mark.slow
@pytest.mark.mpi
def test_strict_failure_under_mpi_names_the_rank_and_record_and_ends_the_job(corpus: Path, tmp_path: Path) -> None:
    cmd = [str(MPIEXEC), "-n", "2", str(PIPELINE), "dedup", "--input", str(corpus), "--output", str(tmp_path / "o")]
    result = subprocess.run([*cmd, "--strict", "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("pipeline dedup:")]
    # a rank that meets a bad record names itself and the record; the first to abort ends the others
    assert ours and all(line.startswith(("pipeline dedup: rank 0 of 2: error: ", "pipeline dedup: rank 1 of 2: error: "))
                        and ": bad input (" in line for line in ours), result.stderr  # fmt: skip
    named = (f"{corpus / 'a.jsonl'}:7: bad input (malformed_json)", f"{corpus / 'c.parquet'}:2: bad input (empty_text)")
    assert any(record in line for line in ours for record in named), result.stderr
    assert not (tmp_path / "o" / ".stages" / "dedup.json").exists()


@pytest.mark.slow
def test_affine32_scheme_finds_the_same_clusters_and_bad_scheme_is_refused(corpus: Path, tmp_path: Path) -> None:
    default, fast = tmp_path / "default", tmp_path / "fast"
    assert dedup(corpus, default).returncode == 0
    assert dedup(corpus, fast, "--set", "dedup.scheme=affine32").returncode == 0
    assert read_jsonl(fast / "dedup" / "clusters.jsonl") != [] and [
        (c["kept"], c["removed"]) for c in read_jsonl(fast / "dedup" / "clusters.jsonl")
    ] == [(c["kept"], c["removed"]) for c in read_jsonl(default / "dedup" / "clusters.jsonl")]
    bad = dedup(corpus, tmp_path / "bad", "--set", "dedup.scheme=sha1")
    assert bad.returncode != 0 and "dedup.scheme" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
