"""`pipeline dedup --against DIR` through the console script: a new snapshot deduplicated against a dataset built
earlier, whose files stay untouched (the in-process cases are tests/unit/test_dedup_incremental.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.corpus import near_copy, story

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / ".venv" / "bin" / "pipeline"
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"


def dedup(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    command = [str(PIPELINE), "dedup", "--set", "workers=1", "--quiet", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.slow
def test_a_new_snapshot_against_an_earlier_dataset(tmp_path: Path) -> None:
    v1_in = write_jsonl(tmp_path / "v1.jsonl", [{"id": f"old-{i}", "text": story(i)} for i in range(8)])
    assert dedup(tmp_path, "--input", str(v1_in), "--output", "v1").returncode == 0
    before = tree_hashes(tmp_path / "v1")
    new = [{"id": f"new-{i}", "text": story(100 + i)} for i in range(6)]
    new += [{"id": "copy-of-old-2", "text": story(2)}, {"id": "near-of-old-5", "text": near_copy(story(5))}]
    new_in = write_jsonl(tmp_path / "new.jsonl", new)
    done = dedup(tmp_path, "--input", str(new_in), "--against", "v1", "--output", "v2")
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "v2" / "stats.json").read_text())
    assert stats["dropped"] == {"exact_dup_earlier": 1, "near_dup_earlier": 1}
    assert stats["input_docs"] == 8 == stats["kept_docs"] + 2
    records = [json.loads(line) for line in (tmp_path / "v2" / "dedup" / "clusters.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["dataset"], r["kept"], r["removed"]) for r in records] == [
        ("exact_earlier", "v1", "old-2", ["copy-of-old-2"]),
        ("near_earlier", "v1", "old-5", ["near-of-old-5"]),
    ]
    assert tree_hashes(tmp_path / "v1") == before
    refused = dedup(tmp_path, "--input", str(new_in), "--against", "v1", "--output", "v3", "--set", "dedup.ngram=3")
    assert refused.returncode == 2 and "dedup.ngram: 5 there, 3 here" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def kept_ids(out: Path) -> list[str]:
    return [
        json.loads(line)["id"] for p in sorted((out / "kept").glob("*.jsonl")) for line in p.read_text().splitlines()
    ]


@pytest.mark.slow
def test_two_mpi_ranks_keep_what_one_process_keeps(tmp_path: Path) -> None:
    for part in range(2):  # two tasks per dataset, so each rank reads one index task
        write_jsonl(tmp_path / f"v1-{part}.jsonl", [{"id": f"old-{i}", "text": story(i)} for i in range(part, 8, 2)])
    assert dedup(tmp_path, "--input", "v1-*.jsonl", "--output", "v1").returncode == 0
    new = [{"id": f"new-{i}", "text": story(100 + i)} for i in range(6)]
    new += [{"id": f"copy-of-old-{i}", "text": story(i)} for i in (1, 6)] + [
        {"id": "near", "text": near_copy(story(3))}
    ]
    for part in range(2):
        write_jsonl(tmp_path / f"new-{part}.jsonl", new[part::2])
    args = ["dedup", "--input", "new-*.jsonl", "--against", "v1", "--set", "workers=1", "--quiet"]
    assert dedup(tmp_path, *args[1:], "--output", "one").returncode == 0
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "data_pipeline.cli", *args, "--output", "two"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert kept_ids(tmp_path / "two") == kept_ids(tmp_path / "one") and len(kept_ids(tmp_path / "one")) == 6
    stats = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert stats["dropped"] == {"exact_dup_earlier": 2, "near_dup_earlier": 1} and stats["ranks"] == 2
    clusters = (tmp_path / "one" / "dedup" / "clusters.jsonl").read_text()
    assert clusters == (tmp_path / "two" / "dedup" / "clusters.jsonl").read_text()
