"""train.precision: fp8 in process: which layers go to float8, the hardware refusal, what the checkpoint holds.

The trained run (50 steps against bf16, 2 ranks, ZeRO-3, activation checkpointing) is in test_fp8_compile_train.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.engine import ds_config_for_run
from pretrain.errors import ConfigError
from pretrain.fp8 import convert_to_fp8, fp8_module_names, fp8_summary
from pretrain.model import GPT

pytest.importorskip("torchao")


def _model(preset: str) -> GPT:
    torch.manual_seed(0)
    return GPT(load_config(preset, None, ["model.vocab_size=256"]).model).to(torch.bfloat16)


@pytest.mark.parametrize(
    ("preset", "per_block"),
    [
        ("debug", ["attn.qkv", "attn.proj", "mlp.up", "mlp.down"]),
        ("llama-debug", ["attn.qkv", "attn.proj", "mlp.up", "mlp.gate", "mlp.down"]),
    ],
)
def test_exactly_the_block_linears_compute_in_float8(preset: str, per_block: list[str]) -> None:
    model = _model(preset)
    convert_to_fp8(model, "tensorwise", emulate=True)
    expected = {f"blocks.{i}.{name}" for i in range(len(model.blocks)) for name in per_block}
    assert set(fp8_module_names(model)) == expected
    assert type(model.lm_head) is not type(model.blocks[0].attn.qkv)  # the LM head stays a bf16 linear
    assert isinstance(model.wte, torch.nn.Embedding) and model.lm_head.weight.dtype == torch.bfloat16
    assert "high precision: wte" in fp8_summary(model) and "lm_head" in fp8_summary(model)


def test_checkpointed_state_is_the_bf16_models_own() -> None:
    """Same keys, shapes and dtypes, same parameter objects: an fp8 run saves, resumes and exports like bf16."""
    model = _model("llama-debug")
    before = {k: (v.shape, v.dtype, v.data_ptr()) for k, v in model.state_dict().items()}
    convert_to_fp8(model, "rowwise", emulate=True)
    after = {k: (v.shape, v.dtype, v.data_ptr()) for k, v in model.state_dict().items()}
    assert after == before


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_emulated_float8_is_close_to_bf16_and_not_equal(recipe: str) -> None:
    """One forward/backward: float8 casts change the loss a little (so they ran), never a lot."""
    bf16 = _model("llama-debug")
    fp8 = copy.deepcopy(bf16)
    convert_to_fp8(fp8, recipe, emulate=True)
    idx = torch.randint(0, 256, (2, 128), generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for model in (bf16, fp8):
        _, loss = model(idx, idx)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.blocks[0].mlp.down.weight.grad.float())
    assert losses[1] != losses[0]
    assert losses[1] == pytest.approx(losses[0], rel=0.01)
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > 0.98, f"float8 gradient of blocks.0.mlp.down points elsewhere (cosine {cosine:.3f})"


def test_fp8_on_hardware_without_float8_matmuls_names_the_emulation(tmp_path: Path) -> None:
    cfg = load_config("debug", None, ["model.vocab_size=256", "train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"train\.fp8_emulate: true"):
        ds_config_for_run(cfg, 1, tmp_path)  # this CPU has no float8 matmuls


def test_fp8_runs_bf16_outside_the_float8_matmuls(tmp_path: Path) -> None:
    sets = ["model.vocab_size=256", "train.precision=fp8", "train.fp8_emulate=true"]
    resolved = ds_config_for_run(load_config("debug", None, sets), 1, tmp_path)
    assert resolved["bf16"]["enabled"] is True
    assert resolved["communication_data_type"] == "fp32"


def test_unknown_recipe_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.fp8_recipe.*tensorwise\|rowwise"):
        load_config("debug", None, ["train.fp8_recipe=blockwise"])
