"""The pipeline recipe: defaults, YAML then --set layering, and errors that name `section.key`."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.config import PipelineConfig, RecipeError, load_recipe, save_recipe


def test_defaults_match_the_contract() -> None:
    recipe = load_recipe()
    assert (recipe.read.text_field, recipe.read.max_chars, recipe.read.txt_mode) == ("text", 1_000_000, "file")
    assert (recipe.dedup.threshold, recipe.dedup.num_perm, recipe.dedup.ngram, recipe.dedup.verify_threshold) == (
        0.8,
        128,
        5,
        None,
    )
    assert (recipe.tokenizer.vocab_size, recipe.tokenizer.model_type, recipe.shards.target_bytes) == (
        32000,
        "bpe",
        268435456,
    )
    assert recipe.workers == 0


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("dedup:\n  threshold: 0.7\n  num_perm: 64\nfilters:\n  curly_braces: false\nworkers: 3\n")
    recipe = load_recipe(path, ["dedup.threshold=0.9", "dedup.verify_threshold=null", "read.txt_mode=blocks"])
    assert (recipe.dedup.threshold, recipe.dedup.num_perm, recipe.dedup.verify_threshold) == (0.9, 64, None)
    assert recipe.filters.curly_braces is False and recipe.workers == 3 and recipe.read.txt_mode == "blocks"


def test_saved_recipe_loads_back_equal(tmp_path: Path) -> None:
    recipe = load_recipe(overrides=["dedup.bands=16", "dedup.rows=8", "tokenizer.model_type=unigram"])
    save_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == recipe and isinstance(recipe, PipelineConfig)


@pytest.mark.parametrize(
    "override, key",
    [
        ("dedup.treshold=0.8", "dedup.treshold"),
        ("dedupe.threshold=0.8", "dedupe.threshold"),
        ("dedup.threshold=1.5", "dedup.threshold"),
        ("dedup.num_perm=lots", "dedup.num_perm"),
        ("dedup.bands=4", "dedup.bands"),
        ("filters.min_words=-1", "filters.min_words"),
        ("filters.curly_braces=maybe", "filters.curly_braces"),
        ("read.txt_mode=pages", "read.txt_mode"),
        ("tokenizer.model_type=wordpiece", "tokenizer.model_type"),
        ("shards.validation_fraction=1", "shards.validation_fraction"),
        ("workers=-2", "workers"),
        ("nonsense", "nonsense"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    with pytest.raises(RecipeError, match=rf"recipe: {key}\b"):
        load_recipe(overrides=[override])


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dedup:\n  sed: 3\n")
    with pytest.raises(RecipeError, match="dedup.sed.*bad.yaml"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "override, hint",
    [
        ("dedup.treshold=0.8", "did you mean 'dedup.threshold'?"),
        ("dedupe.threshold=0.8", "did you mean 'dedup'?"),
        ("filters.min_word=10", "did you mean 'filters.min_words'?"),
        ("read.text_feild=body", "did you mean 'read.text_field'?"),
        ("worker=2", "did you mean 'workers'?"),
        ("filters.profile=docz", "did you mean 'docs'?"),
    ],
)
def test_typos_get_a_did_you_mean(override: str, hint: str) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(overrides=[override])
    assert hint in str(err.value)


def test_a_typo_in_a_yaml_file_gets_a_did_you_mean_too(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokenizer:\n  vocab_sise: 8000\n")
    with pytest.raises(RecipeError, match=r"tokenizer.vocab_sise: .*bad.yaml.*did you mean 'tokenizer.vocab_size'"):
        load_recipe(bad)


def test_far_off_names_get_no_guess() -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(overrides=["dedup.zzz=1"])
    assert "did you mean" not in str(err.value) and "dedup keys: exact" in str(err.value)
