"""Each quality rule on a crafted text that must fail it and on clean prose that must pass every rule."""

from __future__ import annotations

import dataclasses

import pytest
from support.documents import GOOD, MAN_PAGE, PYTHON_SOURCE

from data_pipeline.config import FiltersConfig, RecipeError, load_recipe, save_recipe
from data_pipeline.filters import RULES, TextStats, drop_reason, failed_rule


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
    "line_length": GOOD + "\n" + "var a=1;" * 200,
    "alnum_chars": GOOD + "\n" + "|  |  |  |  |\n" * 150,
}
EXPECTED_VALUES = {  # the measured value a dropped text records (how far past its limit it is)
    "word_count": 10,
    "curly_braces": 1,
    "lorem_ipsum": 1,
    "line_length": 1600,
}


def test_every_rule_has_a_crafted_failure() -> None:
    assert set(BAD_TEXTS) == {name for name, _ in RULES}


def test_clean_prose_passes_every_rule() -> None:
    assert failed_rule(GOOD, only_all()) is None


def only_all() -> FiltersConfig:
    """Every rule on, the rules web text leaves off included."""
    return FiltersConfig(**{name: True for name, _ in RULES})


@pytest.mark.parametrize("rule", sorted(BAD_TEXTS))
def test_rule_drops_its_crafted_text_with_its_reason(rule: str) -> None:
    measure = dict(RULES)[rule]
    assert measure(TextStats(GOOD), FiltersConfig()) is None
    value = measure(TextStats(BAD_TEXTS[rule]), FiltersConfig())
    assert value is not None
    assert drop_reason(BAD_TEXTS[rule], only(rule)) == (f"filter:{rule}", float(value))
    if rule in EXPECTED_VALUES:
        assert value == EXPECTED_VALUES[rule]


@pytest.mark.parametrize("rule", sorted(BAD_TEXTS))
def test_switching_a_rule_off_keeps_the_text(rule: str) -> None:
    assert drop_reason(BAD_TEXTS[rule], dataclasses.replace(only(rule), **{rule: False})) is None


def test_thresholds_move_the_decision() -> None:
    text = BAD_TEXTS["word_count"]
    assert drop_reason(text, only("word_count")) == ("filter:word_count", 10.0)
    assert drop_reason(text, only("word_count", min_words=5)) is None
    assert drop_reason(GOOD, only("word_count", min_words=10, max_words=20)) == ("filter:word_count", 98.0)


def test_master_switch_and_first_failing_rule_wins() -> None:
    assert drop_reason(BAD_TEXTS["curly_braces"], FiltersConfig(enabled=False)) is None
    both = BAD_TEXTS["lorem_ipsum"] + " {"
    order = [name for name, _ in RULES]
    expected = min(("lorem_ipsum", "curly_braces"), key=order.index)
    assert drop_reason(both, FiltersConfig())[0] == f"filter:{expected}"


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
        assert (dup_ngrams(stats, cfg) is None) == naive
        decisions.add(naive)
    assert decisions == {True, False}


# ---------------------------------------------------------------------------------------------- profiles


MINIFIED_JS = "!function(e,t){" + "var a=e.b||{};a.c=function(n){return n*2};" * 60 + "}(window);"
DATA_DUMP = "\n".join("|".join(["----"] * 8) + "|" + f"{i:04d}" for i in range(80))


def recipe_filters(*overrides: str) -> FiltersConfig:
    return load_recipe(overrides=list(overrides)).filters


@pytest.mark.parametrize(
    "profile, text, kept",
    [
        ("web", GOOD, True),
        ("web", PYTHON_SOURCE, False),
        ("code", PYTHON_SOURCE, True),
        ("code", MINIFIED_JS, False),
        ("code", DATA_DUMP, False),
        ("web", MAN_PAGE, False),
        ("docs", MAN_PAGE, True),
        ("docs", GOOD, True),
        ("docs", DATA_DUMP, False),
        ("none", DATA_DUMP, True),
        ("none", MINIFIED_JS, True),
    ],
)
def test_each_profile_keeps_its_kind_of_text_and_drops_junk(profile: str, text: str, kept: bool) -> None:
    assert (drop_reason(text, recipe_filters(f"filters.profile={profile}")) is None) == kept


def test_code_profile_names_the_stack_rules() -> None:
    cfg = recipe_filters("filters.profile=code")
    assert drop_reason(MINIFIED_JS, cfg)[0] == "filter:line_length"
    assert drop_reason(DATA_DUMP, cfg)[0] == "filter:alnum_chars"


def test_keys_set_in_the_recipe_win_over_the_profile(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("filters:\n  profile: code\n  curly_braces: true\n")
    cfg = load_recipe(recipe, ["filters.min_words=3"]).filters
    assert (cfg.profile, cfg.curly_braces, cfg.min_words, cfg.stop_words) == ("code", True, 3, False)
    assert drop_reason(PYTHON_SOURCE, cfg) == ("filter:curly_braces", 2.0)  # `items = {}`, `defaults or {}`


def test_none_profile_runs_only_the_rules_switched_back_on() -> None:
    cfg = recipe_filters("filters.profile=none", "filters.word_count=true")
    assert drop_reason(DATA_DUMP, cfg) is None
    assert drop_reason("three short words", cfg) == ("filter:word_count", 3.0)


def test_saved_recipe_with_a_profile_loads_back_equal(tmp_path) -> None:
    recipe = load_recipe(overrides=["filters.profile=docs", "filters.min_words=12"])
    save_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == recipe


def test_unknown_profile_is_named_with_a_suggestion() -> None:
    with pytest.raises(RecipeError, match=r"filters.profile must be one of web, docs, code, none; did you mean 'code'"):
        recipe_filters("filters.profile=cod")
