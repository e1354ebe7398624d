"""A dataset's dedup index: the exact keys, MinHash signatures and ids of its kept documents, kept with it so that
a later snapshot is deduplicated against it without rescanning it (`pipeline dedup --against DIR`).

Layout, `DIR/dedup/index/`:

    manifest.json        {"settings": {num_perm, ngram, seed, scheme, shingle}, "signatures": bool,
                          "tasks": [{"folder": "t-00000", "docs": n}, ...], "docs": total}
    t-NNNNN/keys.u64     (n, 2) uint64 xxh3_128 of each kept text (exact dedup's key)
    t-NNNNN/signatures.u32  (n, num_perm) uint32 MinHash signatures (absent rows when near dedup was off)
    t-NNNNN/ids.jsonl    each kept document's id, one JSON string a line

One folder per task of the dataset, its documents in kept/ order. Bytes per document: 16 of key, 4 * num_perm
of signature (512 at 128) and the id's JSON line. The manifest is fingerprinted only by what a key or a
signature depends on (`INDEX_SETTINGS`), so a later run with another threshold, band layout or keep rule reuses
it; another num_perm, ngram, seed, scheme or shingle mode gives signatures that cannot be compared, and is
refused naming the key (`check_settings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.errors import PipelineError

INDEX_DIR = "dedup/index"
MANIFEST = "manifest.json"
INDEX_SETTINGS = ("num_perm", "ngram", "seed", "scheme", "shingle")  # what keys and signatures depend on
FILES = ("keys.u64", "signatures.u32", "ids.jsonl")


class IndexMismatch(PipelineError):
    """An earlier dataset's index cannot be compared with this run (missing, or other hash settings)."""


def ids_at(ids_file: Path, ordinals: np.ndarray) -> list[str]:
    """Ids at these ordinals (sorted) of an ids.jsonl (one JSON string a line), streaming it: only those are held."""
    wanted, found = set(ordinals.tolist()), {}
    with open(ids_file, encoding="utf-8") as f:
        for ordinal, line in enumerate(f):
            if ordinal in wanted:
                found[ordinal] = json.loads(line)
    return [found[o] for o in ordinals.tolist()]


def index_settings(dedup: dict) -> dict:
    """The dedup settings a key or signature depends on (a `dedup` recipe section as a dict)."""
    return {k: dedup[k] for k in INDEX_SETTINGS}


def task_folder(dataset: Path, task_index: int) -> Path:
    return Path(dataset) / INDEX_DIR / f"t-{task_index:05d}"


def manifest_path(dataset: Path) -> Path:
    return Path(dataset) / INDEX_DIR / MANIFEST


def manifest(settings: dict, signatures: bool, docs_per_task: list[int]) -> dict:
    tasks = [{"folder": f"t-{i:05d}", "docs": int(n)} for i, n in enumerate(docs_per_task)]
    return {"settings": settings, "signatures": signatures, "tasks": tasks, "docs": int(sum(docs_per_task))}


def check_settings(dataset: Path, recorded: dict, wanted: dict, need_signatures: bool) -> None:
    """Refuse an index whose keys or signatures were made with other settings, naming each differing key."""
    changed = [
        f"dedup.{k}: {recorded['settings'].get(k)!r} there, {wanted[k]!r} here"
        for k in INDEX_SETTINGS
        if recorded["settings"].get(k) != wanted[k]
    ]
    if need_signatures and not recorded["signatures"]:
        changed.append("dedup.near: false there (no signatures), true here")
    if changed:
        raise IndexMismatch(
            f"--against {dataset}: its dedup index was built with other hash settings ({'; '.join(changed)}); "
            "run with the same settings, or rebuild that dataset with these"
        )


def read_manifest(dataset: Path) -> dict:
    path = manifest_path(dataset)
    if not path.is_file():
        raise IndexMismatch(
            f"--against {dataset}: no dedup index ({path} is missing); give a folder written completely by "
            "`pipeline dedup` or `pipeline run` of this version"
        )
    return json.loads(path.read_text())


@dataclass(frozen=True)
class IndexTask:
    """One task folder of an earlier dataset's index."""

    dataset: Path
    folder: str
    docs: int

    def path(self, name: str) -> Path:
        return Path(self.dataset) / INDEX_DIR / self.folder / name

    def keys(self) -> np.ndarray:
        return np.fromfile(self.path("keys.u64"), np.uint64).reshape(-1, 2)


def open_index(dataset: Path, dedup: dict) -> list[IndexTask]:
    """The index tasks of an earlier dataset, after checking its settings against this run's `dedup` section."""
    recorded = read_manifest(dataset)
    check_settings(dataset, recorded, index_settings(dedup), need_signatures=bool(dedup["near"]))
    return [IndexTask(Path(dataset), t["folder"], int(t["docs"])) for t in recorded["tasks"]]
