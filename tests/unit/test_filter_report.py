"""Filters that say what they drop: per-input counts, a warning when an input is mostly dropped, DIR/dropped/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.corpus import write_jsonl
from support.documents import GOOD, MAN_PAGE, python_file

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.drop_log import DropLog, filter_warnings, merge_examples, read_dropped
from data_pipeline.ledger import Ledger, LedgerError
from data_pipeline.stages.dedup import run_dedup


def prose(i: int) -> str:
    return f"Chapter {i}. " + GOOD


@pytest.fixture
def corpus(tmp_path: Path) -> list[str]:
    """web.jsonl: 6 prose docs + 1 too short; code.jsonl: 8 Python files + 1 bad line (web filters drop them)."""
    web = write_jsonl(tmp_path / "web.jsonl", [prose(i) for i in range(6)] + ["too short"], "w")
    code = write_jsonl(tmp_path / "code.jsonl", [python_file(i) for i in range(8)], "c")
    with open(code, "a") as f:
        f.write("{not json\n")
    return [str(web), str(code)]


def run(tmp_path: Path, inputs: list[str], *overrides: str, out: str = "out") -> dict:
    recipe = load_recipe(overrides=["dedup.near=false", "dedup.exact=false", "workers=1", *overrides])
    return run_dedup(LocalComm(), inputs, tmp_path / out, recipe, quiet=True)


def test_stats_break_every_input_down_by_reason(tmp_path: Path, corpus: list[str]) -> None:
    stats = run(tmp_path, corpus)
    web, code = corpus
    assert stats["per_input"] == {
        code: {"read": 9, "kept": 0, "dropped": {"bad_input:malformed_json": 1, "filter:curly_braces": 8}},
        web: {"read": 7, "kept": 6, "dropped": {"filter:word_count": 1}},
    }
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert saved["per_input"] == stats["per_input"] and stats["input_docs"] == 16


def test_a_mostly_dropped_input_is_warned_about_by_name_and_rule(tmp_path: Path, corpus: list[str], capsys) -> None:
    stats = run(tmp_path, corpus)
    web, code = corpus
    (warning,) = stats["filter_warnings"]
    assert f"dropped 8 of 8 documents (100%) of {code}: filter:curly_braces=8" in warning
    assert "filters.profile" in warning
    err = capsys.readouterr().err  # printed although the run was --quiet
    assert f"warning: the filters dropped 8 of 8 documents (100%) of {code}" in err and web not in err


def test_the_right_profile_silences_the_warning(tmp_path: Path, corpus: list[str]) -> None:
    _, code = corpus
    stats = run(tmp_path, [code], "filters.profile=code")
    assert stats["filter_warnings"] == [] and stats["per_input"][code]["kept"] == 8


def test_dropped_folder_lists_each_document_rule_and_value(tmp_path: Path, corpus: list[str]) -> None:
    run(tmp_path, corpus)
    web, code = corpus
    records = read_dropped(tmp_path / "out")
    assert records == [{"id": "w6", "source": web, "rule": "filter:word_count", "value": 2}] + [
        {"id": f"c{i}", "source": code, "rule": "filter:curly_braces", "value": 2} for i in range(8)
    ]


def test_the_drop_log_is_byte_identical_on_a_rerun_elsewhere(tmp_path: Path, corpus: list[str]) -> None:
    run(tmp_path, corpus, out="a")
    run(tmp_path, corpus, out="b")
    a, b = (tmp_path / d / "dropped" / "part-00000.jsonl.gz" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()


def test_the_end_summary_shows_inputs_and_examples(tmp_path: Path, corpus: list[str], capsys) -> None:
    recipe = load_recipe(overrides=["dedup.near=false", "dedup.exact=false", "workers=1"])
    run_dedup(LocalComm(), corpus, tmp_path / "out", recipe, quiet=False)
    err = capsys.readouterr().err
    web, code = corpus
    assert f"{code}: 9 read -> 0 kept; dropped: filter:curly_braces=8, bad_input:malformed_json=1" in err
    assert f"{web}: 7 read -> 6 kept; dropped: filter:word_count=1" in err
    assert f"filter:curly_braces value=2: c0 ({code}) " in err and "filter:word_count value=2: w6" in err
    assert err.count("filter:curly_braces value=2:") == 3  # three examples per rule


def test_warning_counts_only_documents_that_reached_the_filters() -> None:
    ledger = Ledger()
    ledger.read(10, source="a"), ledger.drop("bad_input:malformed_json", 6, source="a")
    ledger.drop("filter:word_count", 2, source="a"), ledger.keep(2, source="a")  # 2 of 4 readable: not > half
    ledger.read(3, source="b"), ledger.drop("filter:stop_words", 2, source="b"), ledger.keep(1, source="b")
    ledger.check()
    (warning,) = filter_warnings(ledger.to_stats())
    assert warning.startswith("the filters dropped 2 of 3 documents (67%) of b: filter:stop_words=2")


def test_a_count_without_its_source_breaks_the_per_input_check() -> None:
    ledger = Ledger()
    ledger.read(2, source="a"), ledger.keep(source="a")
    ledger.drop("near_dup")  # the driver forgot to say which input: that input no longer adds up
    with pytest.raises(LedgerError, match="does not add up for input a: read=2 but kept=1"):
        ledger.check()
    ledger = Ledger()
    ledger.read(2, source="a"), ledger.keep(2, source="a")
    ledger.read(), ledger.drop("near_dup")  # totals and input `a` add up, but one document has no input
    with pytest.raises(LedgerError, match="without its source"):
        ledger.check()


def test_merged_per_input_counts_add_up_over_ranks() -> None:
    a, b = Ledger(), Ledger()
    a.read(3, source="x"), a.keep(3, source="x")
    b.read(2, source="x"), b.drop("exact_dup", 2, source="x"), b.read(1, source="y"), b.keep(source="y")
    total = Ledger.merged([a, b])
    total.check()
    assert total.to_stats()["per_input"] == {
        "x": {"read": 5, "kept": 3, "dropped": {"exact_dup": 2}},
        "y": {"read": 1, "kept": 1, "dropped": {}},
    }


def test_drop_log_keeps_no_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "dropped" / "part-00000.jsonl.gz"
    with pytest.raises(RuntimeError), DropLog(path) as log:
        log.add("d1", "in.jsonl", "filter:word_count", 3.0, "three words here")
        raise RuntimeError("killed")
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_examples_merge_in_rank_order_and_keep_the_first_few() -> None:
    rank0 = {"filter:a": [{"id": "1"}, {"id": "2"}]}
    rank1 = {"filter:a": [{"id": "3"}, {"id": "4"}], "filter:b": [{"id": "5"}]}
    merged = merge_examples([rank0, rank1], k=3)
    assert merged == {"filter:a": [{"id": "1"}, {"id": "2"}, {"id": "3"}], "filter:b": [{"id": "5"}]}


def test_docs_profile_keeps_a_man_page_the_web_profile_drops(tmp_path: Path) -> None:
    pages = write_jsonl(tmp_path / "man.jsonl", [MAN_PAGE.replace("gzip", f"tool{i}") for i in range(4)], "m")
    web = run(tmp_path, [str(pages)], out="web")
    docs = run(tmp_path, [str(pages)], "filters.profile=docs", out="docs")
    assert (web["kept_docs"], docs["kept_docs"]) == (0, 4)
    assert len(web["filter_warnings"]) == 1 and docs["filter_warnings"] == []


def test_a_warning_names_the_five_largest_rules_and_counts_the_rest() -> None:
    ledger = Ledger()
    ledger.read(28, source="in.jsonl")
    for n in range(1, 8):
        ledger.drop(f"filter:rule{n}", n, source="in.jsonl")
    (warning,) = filter_warnings(ledger.to_stats())
    assert "filter:rule7=7, filter:rule6=6, filter:rule5=5, filter:rule4=4, filter:rule3=3, 2 more rules;" in warning
