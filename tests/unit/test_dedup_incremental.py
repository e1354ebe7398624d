"""Incremental dedup (`pipeline dedup --against DIR`) and a threshold change that reuses the scan, in-process.

A new snapshot holds fresh documents, exact and near copies of an earlier dataset's kept documents, and
duplicates among its own documents. Simulated ranks (threads, tests/support/sim_comm.py) run the stage at
N = 1 and N = 3; the earlier dataset has two index tasks, so at N = 3 each rank reads a different share.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from support.sim_comm import run_ranks

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.dedup.index import IndexMismatch
from data_pipeline.dedup.lsh import planted_corpus
from data_pipeline.markers import StageMismatch
from data_pipeline.stages import scan
from data_pipeline.stages.dedup import run_dedup
from data_pipeline.stages.earlier import EarlierShare

SETTINGS = ["filters.enabled=false", "workers=1"]


def edited(text: str, *positions: int) -> str:
    """The text with a word replaced at each position: a near copy (J ~ 0.9 for two edits of 120 words)."""
    words = text.split()
    for p in positions:
        words[p] = f"edit{p}"
    return " ".join(words)


def write_jsonl(path: Path, records: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in records))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1/ (two input files of 20 documents) built by the stage, and new/ (three input files). far-of-fresh-4 is
    J ~ 0.65 from fresh-4: a duplicate at threshold 0.5, not at 0.8."""
    root = tmp_path_factory.mktemp("incremental")
    texts, _ = planted_corpus(64, 0, words=120, seed=5)
    old, fresh = texts[:40], texts[40:]
    (root / "v1-in").mkdir()
    for part in range(2):
        write_jsonl(root / "v1-in" / f"{part}.jsonl", [(f"old-{i}", old[i]) for i in range(part * 20, part * 20 + 20)])
    run_dedup(LocalComm(), [str(root / "v1-in")], root / "v1", load_recipe(None, SETTINGS), quiet=True)
    new = [(f"fresh-{i}", t) for i, t in enumerate(fresh)]
    new += [(f"exact-of-old-{i}", old[i]) for i in (3, 25)]
    new += [(f"near-of-old-{i}", edited(old[i], 5, 60) + " with a longer ending") for i in (7, 30, 31)]
    new += [(f"exact-of-fresh-{i}", fresh[i]) for i in (0, 1)]
    new += [("near-of-fresh-2", edited(fresh[2], 9, 90)), ("far-of-fresh-4", edited(fresh[4], 10, 30, 50, 70, 90))]
    (root / "new").mkdir()
    for part in range(3):
        write_jsonl(root / "new" / f"{part}.jsonl", new[part::3])
    return root


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def kept_ids(out: Path) -> list[str]:
    return [
        json.loads(line)["id"] for p in sorted((out / "kept").glob("*.jsonl")) for line in p.read_text().splitlines()
    ]


def clusters(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "dedup" / "clusters.jsonl").read_text().splitlines()]


def dedup_against(corpora: Path, out: Path, ranks: int, *settings: str) -> dict:
    recipe = load_recipe(None, [*SETTINGS, *settings])
    inputs, against = [str(corpora / "new")], [str(corpora / "v1")]
    return run_ranks(ranks, lambda comm: run_dedup(comm, inputs, out, recipe, quiet=True, against=against))[0]


def test_duplicates_of_the_earlier_dataset_are_dropped_with_their_own_reasons(corpora: Path, tmp_path: Path) -> None:
    before = tree_hashes(corpora / "v1")
    stats = dedup_against(corpora, tmp_path / "one", 1)
    assert stats["dropped"] == {"exact_dup_earlier": 2, "near_dup_earlier": 3, "exact_dup": 2, "near_dup": 1}
    assert stats["input_docs"] == 33 == stats["kept_docs"] + sum(stats["dropped"].values())
    assert stats["kept_docs"] == 25 and stats["clusters"]["near_earlier"] == 3
    earlier = {r["removed"][0]: r for r in clusters(tmp_path / "one") if r["kind"].endswith("_earlier")}
    assert {k: (r["kind"], r["kept"], r["dataset"]) for k, r in earlier.items()} == {
        "exact-of-old-3": ("exact_earlier", "old-3", str(corpora / "v1")),
        "exact-of-old-25": ("exact_earlier", "old-25", str(corpora / "v1")),
        "near-of-old-7": ("near_earlier", "old-7", str(corpora / "v1")),
        "near-of-old-30": ("near_earlier", "old-30", str(corpora / "v1")),
        "near-of-old-31": ("near_earlier", "old-31", str(corpora / "v1")),
    }
    kept = kept_ids(tmp_path / "one")
    assert len(kept) == len(set(kept)) == 25 and "far-of-fresh-4" in kept  # J ~ 0.65: not a duplicate at 0.8
    assert not [i for i in kept if "-of-old-" in i]
    assert tree_hashes(corpora / "v1") == before  # nothing of the earlier dataset was written


def test_one_and_three_ranks_keep_the_same_documents_and_earlier_ones_always_win(
    corpora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = dedup_against(corpora, tmp_path / "one", 1)
    read: list[str] = []
    spilled = EarlierShare.spilled_signatures
    monkeypatch.setattr(EarlierShare, "spilled_signatures",
                        lambda self, *a: read.extend(t.folder for t in self.tasks) or spilled(self, *a))  # fmt: skip
    three = dedup_against(corpora, tmp_path / "three", 3)
    assert sorted(read) == ["t-00000", "t-00001"]  # each index task read by one rank, not by every rank
    assert kept_ids(tmp_path / "one") == kept_ids(tmp_path / "three")
    assert clusters(tmp_path / "one") == clusters(tmp_path / "three")
    assert one["dropped"] == three["dropped"]
    longest = dedup_against(corpora, tmp_path / "longest", 3, "dedup.keep=longest")
    assert longest["dropped"]["near_dup_earlier"] == 3  # the copies are longer, yet the published text stays


def test_the_new_dataset_is_itself_an_earlier_dataset_for_the_next(corpora: Path, tmp_path: Path) -> None:
    dedup_against(corpora, tmp_path / "v2", 1)
    recipe = load_recipe(None, SETTINGS)
    against = [str(corpora / "v1"), str(tmp_path / "v2")]
    stats = run_dedup(LocalComm(), [str(corpora / "new")], tmp_path / "v3", recipe, quiet=True, against=against)
    assert stats["kept_docs"] == 0  # every document is in v1 or v2, or a duplicate of one that is
    # exact: v2's 25 kept ones, the 2 copies of v1 and the 2 copies of fresh ones; near: 3 of v1, 1 of v2
    assert stats["dropped"] == {"exact_dup_earlier": 25 + 2 + 2, "near_dup_earlier": 3 + 1}
    manifest = json.loads((tmp_path / "v2" / "dedup" / "index" / "manifest.json").read_text())
    assert manifest["docs"] == 25 == sum(t["docs"] for t in manifest["tasks"]) and len(manifest["tasks"]) == 3


def test_an_index_of_other_hash_settings_is_refused_naming_the_key(corpora: Path, tmp_path: Path) -> None:
    with pytest.raises(IndexMismatch, match=re.escape("dedup.num_perm: 128 there, 64 here")):
        dedup_against(corpora, tmp_path / "other", 1, "dedup.num_perm=64")
    with pytest.raises(IndexMismatch, match="no dedup index"):
        run_dedup(LocalComm(), [str(corpora / "new")], tmp_path / "x", load_recipe(None, SETTINGS), True,
                  against=[str(corpora / "new")])  # fmt: skip
    stats = dedup_against(corpora, tmp_path / "looser", 1, "dedup.threshold=0.7")  # threshold: the index is reused
    assert stats["dropped"]["near_dup_earlier"] == 3


def test_a_threshold_change_reuses_the_scan_and_equals_a_fresh_run(
    corpora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = [str(corpora / "new")]
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    run_dedup(LocalComm(), inputs, out, load_recipe(None, SETTINGS), quiet=True)
    scanned: list[int] = []
    original = scan.TaskScanner.scan
    monkeypatch.setattr(
        scan.TaskScanner, "scan", lambda self, task, line: scanned.append(task.index) or original(self, task, line)
    )
    looser = load_recipe(None, [*SETTINGS, "dedup.threshold=0.5"])
    changed = run_dedup(LocalComm(), inputs, out, looser, quiet=True)
    assert scanned == []  # no task scanned again
    reference = run_dedup(LocalComm(), inputs, fresh, looser, quiet=True)
    assert len(scanned) == 3  # the fresh run scans all three
    drop = {"resources"}
    assert {k: v for k, v in changed.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}
    assert changed["dropped"]["near_dup"] == 2  # far-of-fresh-4 too, now
    assert kept_ids(out) == kept_ids(fresh) and clusters(out) == clusters(fresh)
    assert (out / "dedup/index/manifest.json").read_bytes() == (fresh / "dedup/index/manifest.json").read_bytes()


def test_a_threshold_change_of_a_tokenized_dataset_is_still_refused(corpora: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_dedup(LocalComm(), [str(corpora / "new")], out, load_recipe(None, SETTINGS), quiet=True)
    (out / "manifest.json").write_text("{}")  # as `pipeline run` leaves it: training runs read the shards
    with pytest.raises(StageMismatch, match=re.escape("dedup.threshold: 0.8 -> 0.6")):
        run_dedup(LocalComm(), [str(corpora / "new")], out, load_recipe(None, [*SETTINGS, "dedup.threshold=0.6"]), True)
