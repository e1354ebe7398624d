"""The ledger: counts merge across ranks, and a run whose counts do not add up fails loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.ledger import Ledger, LedgerError
from data_pipeline.stages.dedup import run_dedup


def test_merge_sums_counts_and_checks() -> None:
    a, b = Ledger(), Ledger()
    a.read(5), a.keep(3), a.drop("exact_dup", 2)
    b.read(4), b.keep(1), b.drop("exact_dup"), b.drop("filter:word_count", 2)
    total = Ledger.merged([a, b])
    total.check()
    assert total.to_stats() == {
        "input_docs": 9,
        "kept_docs": 4,
        "dropped": {"exact_dup": 3, "filter:word_count": 2},
        "per_input": {},
    }


@pytest.mark.parametrize(
    "mutate", [lambda ledger: ledger.keep(), lambda ledger: ledger.read(), lambda ledger: ledger.drop("near_dup")]
)
def test_check_fails_when_a_document_is_lost_or_double_counted(mutate) -> None:
    ledger = Ledger()
    ledger.read(2), ledger.keep(), ledger.drop("near_dup")
    ledger.check()
    mutate(ledger)
    with pytest.raises(LedgerError, match="does not add up"):
        ledger.check()


def test_a_run_with_a_broken_ledger_fails_and_writes_no_stats(tmp_path: Path, monkeypatch) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"text {i}"}) + "\n" for i in range(4)))
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    original_keep = Ledger.keep
    monkeypatch.setattr(Ledger, "keep", lambda self, n=1, source=None: original_keep(self, n + 1, source))  # a bug
    with pytest.raises(LedgerError):
        run_dedup(LocalComm(), [str(corpus)], tmp_path / "out", recipe, quiet=True)
    assert not (tmp_path / "out" / "stats.json").exists()
    assert not (tmp_path / "out" / ".stages" / "dedup.json").exists()
