"""Each quality rule on a crafted text that must fail it and on clean prose that must pass every rule."""

from __future__ import annotations

import dataclasses

import pytest

from data_pipeline.config import FiltersConfig
from data_pipeline.filters import RULES, TextStats, drop_reason, failed_rule

GOOD = (
    "The river town woke slowly under a pale morning sky, and the bakers opened their doors first.\n"
    "Children walked to school along the old stone bridge with their bags and their small lunches.\n"
    "A fisherman repaired his nets near the harbor while gulls argued over scraps of bread.\n"
    "By noon the market square was crowded with farmers selling apples, cheese and fresh honey.\n"
    "Visitors often asked about the clock tower, which had stopped at a quarter past three years ago.\n"
    "Nobody in town seemed to mind, because the bells still rang for weddings and for every harvest festival."
)


def only(rule: str, **thresholds) -> FiltersConfig:
    """A config with every rule off except `rule` (and the given thresholds)."""
    switches = {name: name == rule for name, _ in RULES}
    return FiltersConfig(**switches, **thresholds)


def lines(*parts: str) -> str:
    return "\n".join(parts)


SENTENCE = "the quick brown fox jumps over the lazy dog and then runs far away."
BAD_TEXTS = {
    "word_count": "Too short to be a real document, with the words.",
    "mean_word_length": " ".join(["a an to of"] * 30) + ".",
    "lorem_ipsum": GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "curly_braces": GOOD + "\nfunction main() { return 0; }",
    "symbol_ratio": GOOD.replace(".", " ### ..."),
    "alpha_words": GOOD + " " + " ".join(str(n) for n in range(100, 400)),
    "stop_words": " ".join(f"alpha{i} beta{i} gamma{i}." for i in range(30)),
    "bullet_lines": lines(*(f"- point number {i} about the topic." for i in range(20))),
    "ellipsis_lines": lines(*(f"and then story part {i} went on..." for i in range(10))),
    "terminal_punctuation": lines(*(f"a heading line number {i} without an ending of the kind" for i in range(20))),
    "short_lines": lines(*(f"short line {i}" for i in range(40)), GOOD),
    "newline_ratio": lines(*(f"word{i} the" for i in range(60))) + ".",
    "min_sentences": " ".join(["the words go on and on without ending"] * 8),
    "repeated_lines": lines(GOOD, *([SENTENCE] * 8)),
    "dup_line_chars": lines(GOOD, SENTENCE, SENTENCE),
    "repeated_paragraphs": "\n\n".join([GOOD, SENTENCE * 3, SENTENCE * 3, SENTENCE * 3]),
    "top_ngrams": GOOD + " " + "the market " * 60,
    "dup_ngrams": GOOD + " " + (" ".join(f"w{i}" for i in range(10)) + " ") * 12,
}


def test_every_rule_has_a_crafted_failure() -> None:
    assert set(BAD_TEXTS) == {name for name, _ in RULES}


def test_clean_prose_passes_every_rule() -> None:
    assert failed_rule(GOOD, FiltersConfig()) is None


@pytest.mark.parametrize("rule", sorted(BAD_TEXTS))
def test_rule_drops_its_crafted_text_with_its_reason(rule: str) -> None:
    keep = dict(RULES)[rule]
    assert keep(TextStats(GOOD), FiltersConfig())
    assert not keep(TextStats(BAD_TEXTS[rule]), FiltersConfig())
    assert drop_reason(BAD_TEXTS[rule], only(rule)) == f"filter:{rule}"


@pytest.mark.parametrize("rule", sorted(BAD_TEXTS))
def test_switching_a_rule_off_keeps_the_text(rule: str) -> None:
    assert drop_reason(BAD_TEXTS[rule], dataclasses.replace(only(rule), **{rule: False})) is None


def test_thresholds_move_the_decision() -> None:
    text = BAD_TEXTS["word_count"]
    assert drop_reason(text, only("word_count")) == "filter:word_count"
    assert drop_reason(text, only("word_count", min_words=5)) is None
    assert drop_reason(GOOD, only("word_count", min_words=10, max_words=20)) == "filter:word_count"


def test_master_switch_and_first_failing_rule_wins() -> None:
    assert drop_reason(BAD_TEXTS["curly_braces"], FiltersConfig(enabled=False)) is None
    both = BAD_TEXTS["lorem_ipsum"] + " {"
    order = [name for name, _ in RULES]
    expected = min(("lorem_ipsum", "curly_braces"), key=order.index)
    assert drop_reason(both, FiltersConfig()) == f"filter:{expected}"


def test_dup_ngrams_shortcut_matches_checking_every_n() -> None:
    """The one-pass shortcut must decide exactly like checking all of n = 5..10 against their limits."""
    import random

    from data_pipeline.filters import _dup_ngram_char_ratio, dup_ngrams

    cfg = FiltersConfig()
    rng = random.Random(0)
    decisions = set()
    for trial in range(300):
        vocab = [f"w{i}" for i in range(rng.randint(3, 40))]
        words = [rng.choice(vocab) for _ in range(rng.randint(20, 120))]
        if trial % 3 == 0:  # plant one repeated run of 5..12 words
            run = words[: rng.randint(5, 12)]
            words += run
        stats = TextStats(" ".join(words))
        limits = {
            n: cfg.max_dup_5gram_char_ratio
            - (cfg.max_dup_5gram_char_ratio - cfg.max_dup_10gram_char_ratio) * (n - 5) / 5
            for n in range(5, 11)
        }
        naive = all(_dup_ngram_char_ratio(stats.lower_words, n) <= limits[n] for n in range(5, 11))
        assert dup_ngrams(stats, cfg) == naive
        decisions.add(naive)
    assert decisions == {True, False}
