"""The pipeline recipe: defaults, YAML then --set layering, and errors that name `section.key`."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from data_pipeline.config import PipelineConfig, RecipeError, load_recipe, save_recipe
from infra.config_schema import ConfigSchema


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


def test_a_yaml_file_and_set_read_the_same_text_alike(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("dedup:\n  threshold: 7e-1\n  exact: no\n  seed: 1e3\nread:\n  id_field: off\n")
    overrides = ["dedup.threshold=7e-1", "dedup.exact=no", "dedup.seed=1e3", "read.id_field=off"]
    recipe = load_recipe(path)
    assert recipe == load_recipe(overrides=overrides)
    assert (recipe.dedup.threshold, recipe.dedup.exact, recipe.dedup.seed, recipe.read.id_field) == (
        0.7,
        False,
        1000,
        "off",
    )


SECTIONED_MODULE = """
import dataclasses
from typing import Literal, Optional


@dataclasses.dataclass
class Shape:
    layers: int = 2
    rate: float = 0.5
    tied: bool = True
    name: str = "tiny"
    width: int | None = None
    norm: Optional[float] = None
    kind: Literal["a", "b"] = "a"
    betas: tuple[float, float] = (0.9, 0.95)
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Root:
    shape: Shape = dataclasses.field(default_factory=Shape)
    workers: int = 0
"""

GOOD = ["shape.layers=4.0", "shape.rate=1", "shape.tied=off", "shape.name=off", "shape.width=null", "shape.norm=1e-5"]
GOOD += ["shape.kind=b", "shape.betas=[0.8, 1]", "shape.tags=[x, y]", "workers=3"]
BAD = ["shape.layers=2.5", "shape.rate=fast", "shape.tied=2", "shape.name=7", "shape.width=wide", "shape.norm=[]"]
BAD += ["shape.kind=c", "shape.betas=[0.9]", "shape.tags=[1]", "shape.tag=[]", "workers=null", "shap.layers=1"]


def _load_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, header: str):
    path = tmp_path / f"{name}.py"
    path.write_text(header + SECTIONED_MODULE)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # get_type_hints resolves string annotations in the module
    spec.loader.exec_module(module)
    return module


def _outcome(schema: ConfigSchema, override: str):
    """The built config as a dict, or the error message."""
    try:
        tree = {}
        schema.set(tree, *schema.parse_override(override), origin="--set")
        return dataclasses.asdict(schema.build(tree))
    except ValueError as err:
        return str(err)


@pytest.mark.parametrize("override", GOOD + BAD)
def test_types_are_checked_alike_with_and_without_postponed_annotations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str
) -> None:
    postponed = _load_module(tmp_path, monkeypatch, "sections_postponed", "from __future__ import annotations\n")
    evaluated = _load_module(tmp_path, monkeypatch, "sections_evaluated", "")
    assert isinstance(dataclasses.fields(postponed.Shape)[0].type, str)  # the case a string comparison got wrong
    assert dataclasses.fields(evaluated.Shape)[0].type is int
    outcomes = [_outcome(ConfigSchema(m.Root, ValueError), override) for m in (postponed, evaluated)]
    assert outcomes[0] == outcomes[1]
    key = override.partition("=")[0]
    if override in GOOD:
        assert isinstance(outcomes[0], dict)
    else:
        assert isinstance(outcomes[0], str) and outcomes[0].startswith(f"{key}: ")


def test_the_typed_values_of_the_sectioned_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_module(tmp_path, monkeypatch, "sections_typed", "")
    schema = ConfigSchema(module.Root, ValueError)
    tree: dict = {}
    for override in GOOD:
        schema.set(tree, *schema.parse_override(override), origin="--set")
    shape = schema.build(tree).shape
    assert (shape.layers, shape.rate, shape.tied, shape.name, shape.width, shape.norm) == (
        4,
        1.0,
        False,
        "off",
        None,
        1e-5,
    )
    assert (shape.kind, shape.betas, shape.tags) == ("b", (0.8, 1.0), ["x", "y"])
    assert type(shape.layers) is int and type(shape.rate) is float and type(shape.betas[1]) is float
