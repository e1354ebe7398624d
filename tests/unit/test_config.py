"""Run config: validation messages name the field and the fix; presets, YAML and overrides layer in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pretrain import cli
from pretrain.config import ModelConfig, RunConfig, check_batch_arithmetic, load_config
from pretrain.errors import ConfigError
from pretrain.presets import PRESETS

EXAMPLE = Path(__file__).resolve().parents[2] / "pretrain" / "configs" / "example.yaml"


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        load_config("debug", overrides=["train.micro_batchsize=4"])
    message = str(err.value)
    assert "train.micro_batchsize" in message
    assert "did you mean 'train.micro_batch_size'" in message


def test_unknown_section_in_yaml_names_file_and_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: debug\noptimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, path)
    assert "optimizer" in str(err.value) and str(path) in str(err.value)
    assert "did you mean 'optim'" in str(err.value)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'gpt2-124m'"):
        load_config("gpt2-124", None)


def test_impossible_batch_arithmetic_gives_numbers_and_a_fix():
    cfg = load_config("gpt2-124m")  # 524288 tokens = 16 x 1024 x grad_accum x world
    assert cfg.grad_accum_steps(8) == 4
    assert cfg.grad_accum_steps(32) == 1
    with pytest.raises(ConfigError) as err:
        cfg.grad_accum_steps(24)  # 16 x 1024 x 24 = 393216 does not divide 524288
    message = str(err.value)
    assert message.startswith("train.global_batch_tokens")
    assert "393216" in message and "524288" in message
    # The suggested global batch sizes really are multiples of micro x seq x world.
    assert "train.global_batch_tokens=393216" in message and "train.global_batch_tokens=786432" in message
    assert check_batch_arithmetic(786432, 16, 1024, 24) == 2


def test_batch_smaller_than_one_pass_suggests_a_micro_batch_that_divides():
    with pytest.raises(ConfigError) as err:
        check_batch_arithmetic(524288, 16, 1024, 128)
    assert "train.micro_batch_size=4" in str(err.value)
    assert check_batch_arithmetic(524288, 4, 1024, 128) == 1


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match=r"model\.n_head.*d_model=768"):
        ModelConfig(d_model=768, n_head=5)
    with pytest.raises(ConfigError, match=r"model\.n_head"):
        load_config("gpt2-124m", overrides=["model.n_head=7"])


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError, match=r"model\.n_kv_head.*n_head=32"):
        load_config("llama-1b", overrides=["model.n_kv_head=5"])
    assert load_config("llama-1b", overrides=["model.n_kv_head=8"]).model.n_kv_head == 8


def test_wrong_types_are_rejected_by_field_and_yaml_floats_are_accepted():
    with pytest.raises(ConfigError, match=r"train\.micro_batch_size: expected an integer"):
        load_config("debug", overrides=["train.micro_batch_size=two"])
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing"):
        load_config("debug", overrides=["train.activation_checkpointing=sometimes"])
    # PyYAML's YAML 1.1 reads `3e-4` (no dot) as a string; the config loader reads YAML 1.2 numbers.
    assert load_config("debug", overrides=["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)


def test_yaml_then_overrides_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: gpt2-124m\noptim:\n  lr: 1.0e-4\n  warmup_steps: 50\ntrain:\n  max_steps: 900\n")
    cfg = load_config(None, path, ["optim.lr=5e-5", "optim.betas=[0.9, 0.99]"])
    assert cfg.preset == "gpt2-124m"
    assert cfg.optim.lr == pytest.approx(5e-5)  # override beats YAML
    assert cfg.optim.warmup_steps == 50  # YAML beats preset
    assert cfg.train.max_steps == 900
    assert cfg.optim.betas == (0.9, 0.99)  # lists become tuples
    assert cfg.train.micro_batch_size == PRESETS["gpt2-124m"]["train"]["micro_batch_size"]  # preset kept
    assert cfg.model.n_layer == 12


def test_saved_config_reloads_equal(tmp_path):
    cfg = load_config("llama-debug", overrides=["train.max_steps=7", "log.peak_tflops=312", "data.path=/data/x"])
    cfg.save(tmp_path / "run" / "config.yaml")
    reloaded = load_config(None, tmp_path / "run" / "config.yaml")
    assert reloaded == cfg
    assert RunConfig.from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())) == cfg
    assert reloaded.log.peak_tflops == 312.0 and reloaded.data.path == "/data/x"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_divides_on_one_node(name):
    cfg = load_config(name)
    assert cfg.preset == name
    world = 1 if "debug" in name else 8
    accum = cfg.grad_accum_steps(world)
    m, t = cfg.model, cfg.train
    assert t.micro_batch_size * m.seq_len * accum * world == t.global_batch_tokens
    assert 0 < cfg.optim.warmup_steps < t.max_steps


def test_yaml_boolean_off_means_the_literal_off():
    """`--set train.activation_checkpointing=off` is the word `off`: only true/false are booleans (YAML 1.2)."""
    cfg = load_config("debug", overrides=["train.activation_checkpointing=off"])
    assert cfg.train.activation_checkpointing == "off"
    with pytest.raises(ConfigError, match="train.activation_checkpointing"):
        load_config("debug", overrides=["train.activation_checkpointing=true"])


# The one config mechanism (infra/config_schema.py): both halves read and check values alike.


def _recipe_value(key: str, text: str):
    from data_pipeline.config import load_recipe

    section, name = key.split(".")
    return getattr(getattr(load_recipe(overrides=[f"{key}={text}"]), section), name)


def _run_value(key: str, text: str):
    section, name = key.split(".")
    return getattr(getattr(load_config("debug", overrides=[f"{key}={text}"]), section), name)


@pytest.mark.parametrize(
    "text, run_key, recipe_key, expected",
    [
        ("3e-4", "optim.lr", "dedup.verify_threshold", 0.0003),  # YAML 1.1 would read a string
        ("7e-1", "optim.min_lr_ratio", "dedup.threshold", 0.7),
        ("1", "optim.min_lr_ratio", "dedup.verify_threshold", 1.0),  # an int for a float field becomes a float
        ("1e3", "train.seed", "dedup.seed", 1000),  # an integral number for an int field becomes an int
        ("1_000", "train.seed", "dedup.seed", 1000),
        ("null", "log.peak_tflops", "dedup.verify_threshold", None),
        ("off", "data.path", "read.text_field", "off"),  # a word for a string field, not False
        ("no", "log.csv", "dedup.exact", False),  # ... and false for a boolean field
        ("On", "log.csv", "dedup.exact", True),
        ("false", "log.csv", "dedup.exact", False),
    ],
)
def test_the_same_override_text_gives_the_same_value_in_both_halves(text, run_key, recipe_key, expected):
    run_value, recipe_value = _run_value(run_key, text), _recipe_value(recipe_key, text)
    assert run_value == recipe_value == expected
    assert type(run_value) is type(recipe_value) is type(expected)


@pytest.mark.parametrize(
    "load, override, message",
    [
        (
            _run_value,
            "train.max_step",
            "train.max_step: unknown key (--set); did you mean 'train.max_steps'? train keys:",
        ),
        (
            _recipe_value,
            "dedup.num_perms",
            "recipe: dedup.num_perms: unknown key (--set); did you mean 'dedup.num_perm'?",
        ),
        (_run_value, "trian.seed", "trian.seed: unknown section 'trian' (--set); did you mean 'train'? top-level keys"),
        (_recipe_value, "dedpu.seed", "recipe: dedpu.seed: unknown section 'dedpu' (--set); did you mean 'dedup'?"),
    ],
)
def test_both_halves_name_an_unknown_key_and_suggest_the_closest(load, override, message):
    from data_pipeline.errors import PipelineError
    from pretrain.errors import PretrainError

    with pytest.raises((PretrainError, PipelineError)) as err:
        load(override, "5")
    assert str(err.value).startswith(message)


def test_both_halves_name_the_key_of_a_wrong_type_and_raise_their_own_error():
    from data_pipeline.config import RecipeError
    from data_pipeline.errors import PipelineError
    from pretrain.errors import PretrainError

    with pytest.raises(ConfigError) as run_err:
        _run_value("train.seed", "lots")
    with pytest.raises(RecipeError) as recipe_err:
        _recipe_value("dedup.seed", "lots")
    assert str(run_err.value) == "train.seed: expected an integer, got 'lots' (--set)"
    assert str(recipe_err.value) == "recipe: dedup.seed: expected an integer, got 'lots' (--set)"
    assert isinstance(run_err.value, PretrainError) and not isinstance(run_err.value, PipelineError)
    assert isinstance(recipe_err.value, PipelineError) and not isinstance(recipe_err.value, PretrainError)


def test_a_wrong_type_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: debug\noptim:\n  betas: [0.9]\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, path)
    assert str(err.value) == f"optim.betas: expected a list of 2 values [number, number], got [0.9] ({path})"


# The one config mechanism (infra/config_schema.py): both halves read and check values alike.


def test_example_yaml_loads_through_the_real_entry_point(capsys):
    cfg = load_config(None, EXAMPLE)
    written = yaml.safe_load(EXAMPLE.read_text())
    assert cfg.preset == written["preset"]
    assert cfg.train.max_steps == written["train"]["max_steps"]
    assert cfg.log.peak_tflops == written["log"]["peak_tflops"]
    assert cli.main(["plan", "--config", str(EXAMPLE), "--world-size", "32"]) == 0  # the `pretrain` console script
    out = capsys.readouterr().out
    assert f"tokens per run   {cfg.train.tokens_per_run:,} ({written['train']['max_steps']:,} steps" in out
