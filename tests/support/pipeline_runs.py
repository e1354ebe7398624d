"""The dedup output folder as tests read it, and the small corpus with planted duplicates both tiers run it on.

The corpus spreads over jsonl, jsonl.gz and parquet files and holds: clean documents, an exact copy and a near
copy (one word changed) of earlier ones, a lorem-ipsum page the filters must drop, and bad records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from support.corpus import near_copy, story


def planted_corpus(tmp_path: Path) -> Path:
    """Write the corpus to tmp_path/corpus: a.jsonl (a broken last line), b.jsonl.gz (copies, lorem, no id),
    c.parquet (an empty text)."""
    data = tmp_path / "corpus"
    data.mkdir()
    texts = [story(i) for i in range(12)]
    a = [{"id": f"doc-{i}", "text": texts[i]} for i in range(6)]
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a) + '{"id": "broken", "text": \n')
    b = [{"id": f"doc-{i}", "text": texts[i]} for i in range(6, 10)]
    b += [{"id": "copy-of-3", "text": texts[3]}, {"id": "near-5", "text": near_copy(texts[5])}]
    b += [{"id": "lorem", "text": "Lorem ipsum dolor sit amet. " + texts[11]}, {"text": texts[10]}]
    (data / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in b).encode()))
    pq.write_table(pa.table({"id": ["doc-11", "empty"], "text": [story(111), "   "]}), data / "c.parquet")
    return data


def output_hashes(out: Path) -> dict[str, str]:
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_parts(folder: Path) -> list[dict]:
    """kept/ or rejects/: the task parts concatenated in task order (= global input order)."""
    return [r for part in sorted(folder.glob("part-*.jsonl")) for r in read_jsonl(part)]


def same_outputs(a: Path, b: Path) -> None:
    """Every output byte-identical except timings.json (wall times) and stats.json's per-rank resources."""
    ha, hb = output_hashes(a), output_hashes(b)
    assert set(ha) == set(hb)
    assert {k for k in ha if ha[k] != hb[k]} - {"timings.json", "stats.json", ".stages/dedup.json"} == set()
    strip = [{k: v for k, v in json.loads((d / "stats.json").read_text()).items() if k != "resources"} for d in (a, b)]
    assert strip[0] == strip[1]
