"""`pipeline dedup --against DIR` through the console script: a new snapshot deduplicated against a dataset built
earlier, whose files stay untouched (the in-process cases are tests/unit/test_dedup_incremental.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from support.corpus import near_copy, story

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / ".venv" / "bin" / "pipeline"


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
