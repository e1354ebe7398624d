"""Engine wiring that needs no process group: DeepSpeed JSON resolution, optimizer groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.engine import (
    DS_CONFIG_DIR,
    check_gradient_dtypes,
    computed_ds_values,
    decay_groups,
    ds_config_for_run,
    load_ds_json,
    resolve_ds_config,
)
from pretrain.errors import ConfigError

SHIPPED = sorted(p.name for p in DS_CONFIG_DIR.glob("*.json"))


def _cfg(*sets: str):
    return load_config("debug", None, ["model.vocab_size=256", *sets])


def _autos(node) -> list:
    if isinstance(node, dict):
        return [a for v in node.values() for a in _autos(v)]
    return [node] if node == "auto" else []


def test_all_three_configs_ship() -> None:
    assert {"zero3_bf16.json", "zero3_offload.json", "zero3_cpu.json"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("world", [1, 2, 4])
def test_shipped_config_resolves_and_deepspeed_accepts_it(name: str, world: int, tmp_path: Path) -> None:
    """Every 'auto' is filled, the batch arithmetic holds, and DeepSpeed's own parser (which sees our
    '_comment' keys) accepts the result."""
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = _cfg(f"train.ds_config=ds_configs/{name}")
    resolved = ds_config_for_run(cfg, world, tmp_path)
    assert _autos(resolved) == []
    assert any(k.startswith("_comment") for k in resolved)
    assert resolved["tensorboard"]["output_path"] == str(tmp_path)
    accum = cfg.grad_accum_steps(world)
    assert resolved["train_batch_size"] == cfg.train.micro_batch_size * accum * world
    assert resolved["train_batch_size"] * cfg.model.seq_len == cfg.train.global_batch_tokens
    parsed = DeepSpeedConfig(resolved) if world == 1 else None  # no process group: DeepSpeed assumes 1 rank
    if parsed is not None:
        assert parsed.zero_optimization_stage == 3
        assert parsed.gradient_accumulation_steps == accum
        assert parsed.communication_data_type == torch.float32 and parsed.grad_accum_dtype == "fp32"
    zero = resolved["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert resolved["scheduler"]["params"]["cos_min_ratio"] == pytest.approx(0.1)


def test_explicit_value_that_contradicts_the_run_config_is_refused() -> None:
    template = load_ds_json("ds_configs/zero3_cpu.json")
    template["train_micro_batch_size_per_gpu"] = 7
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu=7 contradicts.*\(2\)"):
        resolve_ds_config(template, computed_ds_values(_cfg(), 1, "run"), source="mine.json")


def test_explicit_value_that_agrees_is_kept() -> None:
    template = load_ds_json("ds_configs/zero3_cpu.json")
    template["gradient_clipping"] = 1.0
    template["optimizer"]["params"]["betas"] = [0.9, 0.95]
    resolved = resolve_ds_config(template, computed_ds_values(_cfg(), 2, "run"))
    assert resolved["gradient_clipping"] == 1.0 and resolved["optimizer"]["params"]["betas"] == [0.9, 0.95]


def test_indivisible_batch_is_refused_before_deepspeed_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="global_batch_tokens"):
        ds_config_for_run(_cfg(), 3, tmp_path)  # 1024 tokens / (2 x 128 x 3) is not whole


def test_missing_or_broken_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_ds_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n}')
    with pytest.raises(ConfigError, match=r"bad.json:2"):
        load_ds_json(bad)


def test_weight_decay_only_on_matrices_and_tied_embedding_once() -> None:
    from pretrain.model import GPT

    model = GPT(_cfg().model)
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "wte.weight" in decayed and all(p.ndim >= 2 for p in decay["params"])
    assert exempt and all(p.ndim == 1 for p in no_decay["params"])
    assert any(n.endswith("bias") for n in exempt) and any("norm" in n for n in exempt)
    total = sum(p.numel() for p in decay["params"] + no_decay["params"])
    assert total == sum(p.numel() for p in model.parameters())  # tied head counted once, nothing missed


@pytest.mark.parametrize(
    ("precision", "json_value", "expected"),
    [("bf16", "auto", True), ("fp32", "auto", False), ("auto", "auto", False), ("auto", True, True)],
)
def test_precision_fills_bf16_or_keeps_the_json_choice(precision, json_value, expected, tmp_path: Path) -> None:
    """train.precision fills an "auto" bf16.enabled (CPU here: auto means fp32); an explicit JSON value stays."""
    template = {**load_ds_json("zero3_cpu.json"), "bf16": {"enabled": json_value}}
    (tmp_path / "p.json").write_text(json.dumps(template))
    cfg = _cfg(f"train.precision={precision}", f"train.ds_config={tmp_path / 'p.json'}")
    assert ds_config_for_run(cfg, 2, tmp_path)["bf16"]["enabled"] is expected


def test_precision_contradicting_the_json_is_refused(tmp_path: Path) -> None:
    cfg = _cfg("train.precision=fp32", "train.ds_config=ds_configs/zero3_bf16.json")
    with pytest.raises(ConfigError, match="bf16.enabled"):
        ds_config_for_run(cfg, 2, tmp_path)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize(
    ("grad_dtype", "precision", "expected"),
    [("fp32", "bf16", "fp32"), ("bf16", "bf16", "bf16"), ("bf16", "fp32", "fp32")],
)
def test_gradients_are_reduced_and_accumulated_in_train_grad_dtype(
    name: str, grad_dtype: str, precision: str, expected: str, tmp_path: Path
) -> None:
    """fp32 unless train.grad_dtype=bf16 asks otherwise; an fp32 model has fp32 gradients whatever is asked."""
    template = {**load_ds_json(name), "bf16": {"enabled": "auto"}}
    (tmp_path / "g.json").write_text(json.dumps(template))
    sets = [f"train.grad_dtype={grad_dtype}", f"train.precision={precision}", f"train.ds_config={tmp_path / 'g.json'}"]
    resolved = ds_config_for_run(_cfg(*sets), 2, tmp_path)
    assert resolved["communication_data_type"] == resolved["data_types"]["grad_accum_dtype"] == expected


def test_json_reducing_in_bf16_against_the_run_config_is_refused(tmp_path: Path) -> None:
    template = load_ds_json("zero3_bf16.json")
    template["communication_data_type"] = "bf16"
    (tmp_path / "b.json").write_text(json.dumps(template))
    with pytest.raises(ConfigError, match=r"communication_data_type='bf16' contradicts the run config \('fp32'\)"):
        ds_config_for_run(_cfg(f"train.ds_config={tmp_path / 'b.json'}", "train.precision=bf16"), 2, tmp_path)


def test_engine_whose_gradient_dtypes_differ_from_the_json_is_refused() -> None:
    """What the running ZeRO-3 optimizer holds wins over what the JSON asked: bf16 there is an error naming both."""
    from types import SimpleNamespace

    ds_config = {"communication_data_type": "fp32", "data_types": {"grad_accum_dtype": "fp32"}}
    fp32 = SimpleNamespace(communication_data_type=torch.float32, grad_partitions_flat_buffer=torch.zeros(2))
    assert check_gradient_dtypes(fp32, ds_config) == (
        "gradients: reduced across ranks in fp32, accumulated over micro-batches in fp32"
    )
    bf16_buffer = SimpleNamespace(
        communication_data_type=torch.float32, grad_partitions_flat_buffer=torch.zeros(2, dtype=torch.bfloat16)
    )
    with pytest.raises(ConfigError, match=r"data_types.grad_accum_dtype: asked fp32, running bf16"):
        check_gradient_dtypes(bf16_buffer, ds_config)
    bf16_reduce = SimpleNamespace(communication_data_type=torch.bfloat16, gradient_accumulation_dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"communication_data_type: asked fp32, running bf16"):
        check_gradient_dtypes(bf16_reduce, ds_config)
