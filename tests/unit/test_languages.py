"""Every language: each document's label and score, the language list, and quality rules that read the language.

The multilingual set is Python's tutorial in seven languages (tests/support/multilingual_docs.py). Under the rules of
English (what the pipeline applied to every text before), every translation was dropped: German, French,
Spanish and Russian by stop_words, Chinese and Japanese by word_count. The tests check both sides.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.multilingual_docs import PASSAGES

from data_pipeline.config import FiltersConfig, ReadConfig
from data_pipeline.documents import Document, Reject
from data_pipeline.filters import TextStats, UrlBlocklist, _dup_ngram_char_ratio, failed_rule
from data_pipeline.language import identify
from data_pipeline.readers import read_file
from data_pipeline.steps import QualityFilter
from data_pipeline.tasks import Task, count_range_lines, read_task

DOCS = FiltersConfig.from_profile("docs")


def keep_rate(language: str, cfg: FiltersConfig, rules_language: str | None = None) -> float:
    texts = PASSAGES[language]
    return sum(failed_rule(t, cfg, rules_language or identify(t)[0]) is None for t in texts) / len(texts)


@pytest.mark.parametrize("language", sorted(PASSAGES))
def test_every_translation_gets_its_label_and_is_kept_as_often_as_the_english_original(language: str) -> None:
    assert [identify(t)[0] for t in PASSAGES[language]] == [language] * len(PASSAGES[language])
    assert all(identify(t)[1] > 0.8 for t in PASSAGES[language])
    assert keep_rate(language, DOCS) == keep_rate("en", DOCS) == 1.0
    if language != "en":  # what English rules did to the same text
        assert keep_rate(language, DOCS, rules_language="en") == 0.0


def test_the_language_list_drops_other_languages_and_low_scores() -> None:
    german = Document("d1", PASSAGES["de"][0], "in.jsonl", 1)
    score = identify(german.text)[1]
    assert QualityFilter(FiltersConfig.from_profile("docs", languages=["en"])).verdict(german) == (
        "filter:language",
        score,
    )
    assert QualityFilter(FiltersConfig.from_profile("docs", languages=["en", "de"])).verdict(german) is None
    strict = FiltersConfig.from_profile("docs", languages=["de"], min_language_score=min(1.0, score + 0.001))
    assert QualityFilter(strict).verdict(german) == ("filter:language", score)


def test_stop_words_are_counted_per_language_and_the_rule_is_off_without_a_list() -> None:
    cfg = FiltersConfig.from_profile("none", stop_words=True)
    german = "Die Katze und der Hund sitzen mit den Kindern im Garten."
    assert failed_rule(german, cfg, "de") is None
    assert failed_rule(german, cfg, "en") == ("stop_words", 0.0)  # "the", "and" ... are not in it
    assert failed_rule("Ninapenda kusoma vitabu vya historia kila siku.", cfg, "sw") is None  # no Swahili list


def test_scripts_without_spaces_count_characters_as_words() -> None:
    text = "列表数据类型还有一些其他方法。方法 append 在列表末尾添加一个元素。"
    stats = TextStats(text, "zh")
    han = sum("\u4e00" <= c <= "\u9fff" for c in text)
    assert len(stats.words) == han + 1  # every Han character, and "append" once
    assert len(TextStats(text, "en").words) == 3  # what the English rules saw: 3 "words"
    cfg = FiltersConfig.from_profile("none", word_count=True, mean_word_length=True, min_words=25)
    assert failed_rule(text, cfg, "zh") is None  # 28 words, no mean-length rule for one-character words
    assert failed_rule(text, cfg, "en") == ("word_count", 3.0)


def test_gopher_duplicate_ngrams_count_repeats_only() -> None:
    """A page quoting one 40-word passage twice: the second copy repeats, the first does not."""
    passage = [f"quoted{i}" for i in range(40)]
    filler = [f"filler{i}" for i in range(400)]
    words = filler[:200] + passage + filler[200:] + passage
    total = sum(map(len, words))
    repeated = sum(map(len, passage))
    assert _dup_ngram_char_ratio(words, 5) == pytest.approx(repeated / total)
    assert _dup_ngram_char_ratio(words, 10) == pytest.approx(repeated / total)
    assert round(repeated / total, 3) == 0.075  # counting both copies gave 0.151: over the web limit 0.15
    page = " ".join(words)
    assert failed_rule(page, FiltersConfig.from_profile("none", dup_ngrams=True)) is None


def test_url_blocklist_matches_domains_with_their_subdomains_and_url_prefixes(tmp_path: Path) -> None:
    listed = tmp_path / "block.txt"
    listed.write_text("# spam\nexample.com\nnews.example.org/ads/  # one section only\nhttps://www.SHOP.net\n")
    blocklist = UrlBlocklist.from_file(str(listed))
    blocked = [
        "http://example.com/",
        "https://a.b.example.com/x",
        "https://news.example.org/ads/1",
        "https://www.news.example.org/ads/",
        "http://shop.net:8080/cart",
        "https://user@www.example.com",
    ]
    allowed = ["https://badexample.com/", "https://example.com.evil.io/", "https://news.example.org/world/",
               "https://example.org/ads/", "ftp://net/"]  # fmt: skip
    assert [u for u in blocked if not blocklist.blocks(u)] == []
    assert [u for u in allowed if blocklist.blocks(u)] == []
    page = Document("p", PASSAGES["en"][0], "crawl.warc.gz", 1, {"url": "https://docs.example.com/tutorial"})
    verdict = QualityFilter(FiltersConfig.from_profile("docs", url_blocklist=str(listed))).verdict(page)
    assert verdict == ("filter:url_blocklist", 1.0)


def _records(tmp_path: Path) -> list[dict]:
    return [
        {"id": "a", "text": PASSAGES["en"][0], "url": "https://x.org/a", "license": "cc-by", "source": "crawl-7",
         "language": "xx"},
        {"id": "b", "text": PASSAGES["de"][0], "url": "https://x.org/b", "stars": 3},
    ]  # fmt: skip


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize(
    ("keep_fields", "expected"),
    [
        ("all", [{"url": "https://x.org/a", "license": "cc-by"}, {"url": "https://x.org/b", "stars": 3}]),
        (["license", "stars", "missing"], [{"license": "cc-by"}, {"stars": 3}]),
        ("none", [{}, {}]),
    ],
)
def test_input_fields_named_by_keep_fields_reach_the_kept_record(
    tmp_path: Path, suffix: str, keep_fields: object, expected: list[dict]
) -> None:
    path = tmp_path / f"in{suffix}"
    records = _records(tmp_path)
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        columns = dict.fromkeys(k for r in records for k in r)
        pq.write_table(pa.Table.from_pylist([{**columns, **r} for r in records]), path)
    docs = list(read_file(str(path), ReadConfig(keep_fields=keep_fields)))
    # parquet has a column per field: a record without one reads it as null
    meta = [{k: v for k, v in d.meta.items() if v is not None} for d in docs]
    assert meta == expected
    kept = docs[0].to_record()
    assert (kept["source"], kept["language"]) == (str(path), "en")  # the pipeline's own fields are its own


def test_a_long_line_inside_a_byte_range_is_rejected_without_being_held(tmp_path: Path) -> None:
    cfg = ReadConfig(max_chars=1000)  # lines over 12 * 1000 + 1 MiB bytes cannot hold a text
    good = json.dumps({"text": "a short document"}).encode() + b"\n"
    long_line = b'{"text": "' + b"x" * (8 << 20) + b'"}\n'
    path = tmp_path / "big.jsonl"
    path.write_bytes(good * 3 + long_line + good * 2)
    task = Task(0, str(path), start=10, end=path.stat().st_size - 5)  # a range: from inside line 1 to the end
    tracemalloc.start()
    items = list(read_task(task, cfg, first_line=2))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(type(i).__name__, i.line) for i in items] == [
        ("Document", 2), ("Document", 3), ("Reject", 4), ("Document", 5), ("Document", 6)
    ]  # fmt: skip
    assert isinstance(items[2], Reject) and items[2].reason == "too_long"
    assert peak < 2 << 20  # the 8 MiB line was never held whole (plain readline() held all of it)
    assert count_range_lines(task) == 5


def test_the_recipe_refuses_language_names_that_are_not_codes() -> None:
    from data_pipeline.config import RecipeError, load_recipe

    assert load_recipe(overrides=["filters.languages=[en, de, wuu]"]).filters.languages == ["en", "de", "wuu"]
    assert load_recipe().filters.languages == "all"
    for wrong in ("[English]", "[en-US]", "en"):
        with pytest.raises(RecipeError, match="filters.languages"):
            load_recipe(overrides=[f"filters.languages={wrong}"])
