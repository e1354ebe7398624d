"""No metadata storms (issue 20 item 5), on 3 simulated ranks: rank 0 stats each input once and shares it, the
other ranks stat no input; with dedup.keep_work=false each rank deletes only its own tasks' work folders and
rank 0 the emptied dedup/work/ after them; the outputs are those of a run that keeps its work.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from support.corpus import story
from support.pipeline_runs import output_hashes
from support.sim_comm import run_ranks

from data_pipeline import storage
from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.stages.dedup import run_dedup
from data_pipeline.stages.plan import stage_config

SETTINGS = ["workers=1", "dedup.num_perm=32"]
FILES = 7


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """7 jsonl files of 4 stories each; file 6 repeats file 0 (exact duplicates across ranks)."""
    data = tmp_path / "corpus"
    data.mkdir()
    for f in range(FILES):
        texts = [story(10 * (f % 6) + i) for i in range(4)]
        (data / f"{f}.jsonl").write_text(
            "".join(json.dumps({"id": f"{f}-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
        )
    return data


class MetadataCalls:
    """Per simulated rank (a thread): storage.stat and os.stat calls on each input, the dedup/work/ task folders
    a rank's os.stat/os.lstat calls touched, and the folders it gave shutil.rmtree (relative to dedup/work/)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, corpus: Path, out: Path) -> None:
        self.rank = threading.local()
        self.input_stats: dict[int, Counter] = defaultdict(Counter)  # (call, file name) -> calls
        self.work_touched: dict[int, set[str]] = defaultdict(set)
        self.removed: dict[int, list[str]] = defaultdict(list)
        self.corpus, self.work = str(corpus) + "/", str(out / "dedup" / "work")
        for module, name in ((os, "stat"), (os, "lstat"), (shutil, "rmtree"), (storage, "stat")):
            label = f"{module.__name__.split('.')[-1]}.{name}"
            monkeypatch.setattr(module, name, self.counted(label, getattr(module, name)))

    def counted(self, label: str, real):
        def call(path, *args, **kwargs):
            rank = getattr(self.rank, "value", None)
            if rank is not None and isinstance(path, (str, os.PathLike)):
                self.note(rank, label, os.fspath(path))
            return real(path, *args, **kwargs)

        return call

    def note(self, rank: int, label: str, path: str) -> None:
        if label == "shutil.rmtree":
            self.removed[rank].append(os.path.relpath(path, self.work))
        elif path.startswith(self.corpus):
            self.input_stats[rank][label, Path(path).name] += 1
        elif path.startswith(self.work + "/"):
            self.work_touched[rank].add(path[len(self.work) + 1 :].split("/")[0])

    def run(self, ranks: int, fn):
        def on_rank(comm):
            self.rank.value = comm.rank
            return fn(comm)

        return run_ranks(ranks, on_rank)


def test_inputs_are_statted_once_by_rank_0_and_each_rank_deletes_its_own_work(
    corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    kept_work = tmp_path / "kept-work"
    reference = run_dedup(LocalComm(), [str(corpus)], kept_work, load_recipe(None, SETTINGS), quiet=True)
    out = tmp_path / "out"
    calls = MetadataCalls(monkeypatch, corpus, out)
    recipe = load_recipe(None, [*SETTINGS, "dedup.keep_work=false"])
    stats = calls.run(3, lambda comm: run_dedup(comm, [str(corpus)], out, recipe, quiet=True))[0]
    names = [f"{f}.jsonl" for f in range(FILES)]
    # inputs: rank 0 one storage.stat per file (one os.stat, and its listing's os.stat); the other ranks none
    once = {("storage.stat", n): 1 for n in names} | {("os.stat", n): 2 for n in names}
    assert {r: dict(c) for r, c in calls.input_stats.items()} == {0: once}
    # work: each rank touches and deletes only its own tasks' folders and its near dedup band keys; rank 0 then
    # the emptied folder
    owned = {r: sorted(p for p in calls.removed[r] if p.startswith("t-")) for r in range(3)}
    assert sorted(p for r in owned for p in owned[r]) == [f"t-{i:05d}" for i in range(FILES)]
    bands = {r: f"bands-r{r:05d}" for r in range(3)}
    assert all(owned[r] for r in range(3))
    assert all(calls.work_touched[r] == {*owned[r], bands[r]} for r in range(3))
    assert sorted(p for r in range(3) for p in calls.removed[r] if not p.startswith("t-")) == [".", *bands.values()]
    assert calls.removed[0][-1] == "." and not (out / "dedup" / "work").exists()
    # the outputs: those of a 1-rank run that keeps its work
    ignored = ("stats.json", "timings.json", ".stages/dedup.json", "recipe.yaml", "dedup/work/")  # recipe: keep_work
    mine, theirs = ({k: v for k, v in output_hashes(d).items() if not k.startswith(ignored)} for d in (out, kept_work))
    assert mine == theirs and any(k.startswith("kept/") for k in mine)
    drop = ("resources", "ranks")
    assert {k: v for k, v in stats.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}
    assert stats["dropped"]["exact_dup"] == 4


def test_keep_work_does_not_change_the_stage_identity(corpus: Path, tmp_path: Path) -> None:
    """A complete folder made with keep_work=false is skipped, not refused, by a rerun that keeps its work."""
    assert stage_config(load_recipe(None, ["dedup.keep_work=false"])) == stage_config(load_recipe())
    out = tmp_path / "out"
    run_dedup(LocalComm(), [str(corpus)], out, load_recipe(None, [*SETTINGS, "dedup.keep_work=false"]), quiet=True)
    marker = (out / ".stages" / "dedup.json").read_bytes()
    run_dedup(LocalComm(), [str(corpus)], out, load_recipe(None, SETTINGS), quiet=True)
    assert (out / ".stages" / "dedup.json").read_bytes() == marker and not (out / "dedup" / "work").exists()
