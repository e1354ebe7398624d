"""What the quality filters dropped, for audit: one gzip jsonl line per dropped document, and the summary lines.

`DIR/dropped/part-*.jsonl.gz` holds `{"id", "source", "rule", "value"}` for every document a filter dropped:
the rule is the ledger reason (`filter:<rule>`), the value what the rule measured (see filters.py), so a user
can find every document a rule took and see how far past its limit each one was (as datatrove's exclusion
writer does, without copying the texts: ids and sources lead back to them). Each file is one `atomic_write`
(files.py: renamed into place only when complete), with a fixed gzip header, so the same run writes the same bytes.

The end-of-stage report gets, from the merged stats, a per-input breakdown, a warning for every input whose
documents the filters dropped more than half of, and a few dropped examples per rule (kept in memory by
each rank's DropLog, gathered to rank 0).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
from pathlib import Path
from types import TracebackType

from infra.files import atomic_write

DROPPED_DIR = "dropped"
EXAMPLES_PER_RULE = 3
EXCERPT_CHARS = 100
WARN_SHARE = 0.5  # warn when the filters drop more than this share of an input's readable documents
SHOWN_INPUTS = 20  # per-input lines in the end summary (stats.json holds them all)


def _value(value: float) -> float | int:
    """Counts as integers, ratios to 6 decimals: readable, and the same bytes on every run."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 6)


class DropLog:
    """Writes one rank's (or task's) dropped-document records to `path` (a .jsonl.gz) and keeps a few examples."""

    def __init__(self, path: str | os.PathLike, examples_per_rule: int = EXAMPLES_PER_RULE) -> None:
        self.path = Path(path)
        self.examples_per_rule = examples_per_rule
        self.examples: dict[str, list[dict]] = {}
        self.count = 0

    def __enter__(self) -> DropLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open = contextlib.ExitStack()  # closed in __exit__: the gzip end first, then the atomic rename
        raw = self._open.enter_context(atomic_write(self.path, "wb"))
        self._text = io.TextIOWrapper(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0), encoding="utf-8")
        self._open.callback(self._text.close)  # ends the gzip member; GzipFile leaves the file it was given open
        return self

    def add(self, doc_id: str, source: str, rule: str, value: float, text: str | None = None) -> None:
        """Record one dropped document; `text` (optional) gives the report an excerpt for the first few per rule."""
        record = {"id": doc_id, "source": source, "rule": rule, "value": _value(value)}
        self._text.write(json.dumps(record, ensure_ascii=True) + "\n")  # an id may hold lone surrogates
        self.count += 1
        shown = self.examples.setdefault(rule, [])
        if len(shown) < self.examples_per_rule:
            excerpt = " ".join((text or "")[: EXCERPT_CHARS * 2].split())[:EXCERPT_CHARS]
            shown.append(record | {"excerpt": excerpt})

    def __exit__(self, kind: type | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._open.__exit__(kind, error, tb)  # an error here or before it removes the temporary file instead


def part_path(output_dir: str | os.PathLike, part: str) -> Path:
    """DIR/dropped/<part>.jsonl.gz (part: the rank's or task's name, e.g. part-00000)."""
    return Path(output_dir) / DROPPED_DIR / f"{part}.jsonl.gz"


def read_dropped(output_dir: str | os.PathLike) -> list[dict]:
    """Every record under DIR/dropped/, in part order (for tests and small audits)."""
    records = []
    for path in sorted((Path(output_dir) / DROPPED_DIR).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            records += [json.loads(line) for line in f]
    return records


def merge_examples(per_rank: list[dict[str, list[dict]]], k: int = EXAMPLES_PER_RULE) -> dict[str, list[dict]]:
    """The first k examples of each rule over ranks in rank order (= input order), rules sorted."""
    merged: dict[str, list[dict]] = {}
    for examples in per_rank:
        for rule, records in examples.items():
            merged.setdefault(rule, []).extend(records)
    return {rule: merged[rule][:k] for rule in sorted(merged)}


def _readable(counts: dict) -> int:
    """Documents of an input that reached the filters (bad records never did)."""
    bad = sum(n for reason, n in counts["dropped"].items() if reason.startswith("bad_input:"))
    return counts["read"] - bad


def _filtered(counts: dict) -> dict[str, int]:
    return {reason: n for reason, n in counts["dropped"].items() if reason.startswith("filter:")}


def _by_count(dropped: dict[str, int], limit: int | None = None) -> str:
    """`reason=n, ...` largest first; past `limit` reasons, how many more there are."""
    ranked = [f"{reason}={n}" for reason, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))]
    if limit is not None and len(ranked) > limit:
        ranked = [*ranked[:limit], f"{len(ranked) - limit} more rules"]
    return ", ".join(ranked)


def filter_warnings(stats: dict, share: float = WARN_SHARE) -> list[str]:
    """A warning for every input whose readable documents the filters dropped more than `share` of."""
    warnings = []
    for source, counts in stats.get("per_input", {}).items():
        readable, filtered = _readable(counts), _filtered(counts)
        if readable and sum(filtered.values()) > share * readable:
            total = sum(filtered.values())
            warnings.append(
                f"the filters dropped {total} of {readable} documents ({100 * total / readable:.0f}%) of {source}: "
                f"{_by_count(filtered, limit=5)}; if it is not web text, set filters.profile (code, docs or none) or switch "
                f"those rules off ({DROPPED_DIR}/ in the output folder lists each document with its measured value)"
            )
    return warnings


def per_input_lines(stats: dict, limit: int = SHOWN_INPUTS) -> list[str]:
    """`input: read -> kept; dropped by reason` for the first `limit` inputs (all are in stats.json)."""
    per_input = stats.get("per_input", {})
    lines = [
        f"  {source}: {c['read']} read -> {c['kept']} kept; dropped: {_by_count(c['dropped']) or 'none'}"
        for source, c in list(per_input.items())[:limit]
    ]
    if len(per_input) > limit:
        lines.append(f"  ... and {len(per_input) - limit} more inputs (stats.json per_input)")
    return lines


def example_lines(examples: dict[str, list[dict]]) -> list[str]:
    """A few dropped documents per rule: id, source, measured value and the start of the text."""
    lines = []
    for rule, records in examples.items():
        for r in records:
            lines.append(f"  {rule} value={r['value']}: {r['id']} ({r['source']}) {r['excerpt']!r}")
    return lines
