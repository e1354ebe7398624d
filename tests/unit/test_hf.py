"""Hugging Face interoperability: the same weights give the same logits in our GPT and in transformers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from pretrain.config import ModelConfig
from pretrain.errors import ConfigError
from pretrain.interop.hf import from_hf, save_hf, to_hf
from pretrain.model import GPT

TINY = dict(vocab_size=1000, seq_len=64, n_layer=2, n_head=4, d_model=64)  # 1000 pads to 1024
LLAMA = dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False)
VARIANTS = {
    "gpt2": dict(),
    "gpt2-sinusoidal": dict(pos_emb="sinusoidal"),
    "gpt2-untied-custom-ff": dict(tie_embeddings=False, d_ff=96, norm_eps=1e-6),
    "llama-gqa": dict(**LLAMA, n_kv_head=2, tie_embeddings=False),
    "llama-mqa-bias-tied-theta": dict(**{**LLAMA, "bias": True}, n_kv_head=1, rope_theta=500000.0),
}


def ours(variant: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**TINY, **VARIANTS[variant])).eval()


def hf_from_ours(model: GPT) -> torch.nn.Module:
    hf_config, state = to_hf(model, model.cfg)
    hf_class = GPT2LMHeadModel if hf_config.model_type == "gpt2" else LlamaForCausalLM
    hf_model = hf_class(hf_config).eval()
    hf_model.load_state_dict(state, strict=True)
    return hf_model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_parity(variant: str) -> None:
    model = ours(variant)
    hf_model = hf_from_ours(model)
    idx = torch.randint(0, 1000, (2, 48))
    with torch.no_grad():
        assert max_diff(model(idx)[0], hf_model(idx).logits) < 1e-4
    expected = "gpt2" if variant.startswith("gpt2") else "llama"
    assert hf_model.config.model_type == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_from_hf_round_trip(variant: str) -> None:
    model = ours(variant)
    hf_model = hf_from_ours(model)
    cfg, state = from_hf(hf_model.config, hf_model.state_dict())
    # A sinusoidal table exports as GPT-2's learned wpe and comes back as learned positions.
    assert cfg == (replace(model.cfg, pos_emb="learned") if "sinusoidal" in variant else model.cfg)
    back = GPT(cfg).eval()
    back.load_state_dict(state, strict=True)
    assert (back.wte.weight[1000:] == 0).all()  # padding rows are zero-filled
    idx = torch.randint(0, 1000, (2, 48))
    with torch.no_grad():
        assert torch.equal(back(idx)[0], model(idx)[0])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_import_of_a_transformers_initialised_model(family: str) -> None:
    """Direction HF -> ours on weights we did not write, with a vocabulary (1003) that needs padding."""
    torch.manual_seed(1)
    if family == "gpt2":
        hf_config = GPT2Config(
            vocab_size=1003, n_positions=40, n_embd=48, n_layer=2, n_head=3, bos_token_id=0, eos_token_id=0
        )
        hf_model = GPT2LMHeadModel(hf_config).eval()
    else:
        hf_config = LlamaConfig(
            vocab_size=1003, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, max_position_embeddings=40, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        hf_model = LlamaForCausalLM(hf_config).eval()
    cfg, state = from_hf(hf_model.config, hf_model.state_dict())
    model = GPT(cfg).eval()
    model.load_state_dict(state, strict=True)
    assert cfg.padded_vocab_size == 1024 and (cfg.n_kv_head == 2 or family == "gpt2")
    idx = torch.randint(0, 1003, (3, 40))
    with torch.no_grad():
        assert max_diff(model(idx)[0], hf_model(idx).logits) < 1e-4


@pytest.mark.parametrize("variant", ["gpt2", "llama-gqa", "llama-mqa-bias-tied-theta"])
def test_saved_folder_loads_with_auto_model(variant: str, tmp_path) -> None:
    model = ours(variant)
    save_hf(model.state_dict(), model.cfg, tmp_path, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = json.loads((tmp_path / "config.json").read_text())
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel" if variant == "gpt2" else "LlamaForCausalLM"]
    assert (config["bos_token_id"], config["eos_token_id"], config["vocab_size"]) == (1, 2, 1000)
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 0)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in set(f.keys())) == (not model.cfg.tie_embeddings)  # a tied head is stored once
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 1000, (2, 32))
    with torch.no_grad():
        assert max_diff(loaded(idx).logits, model(idx)[0]) < 1e-4


def test_bf16_weights_save_in_bf16(tmp_path) -> None:
    model = ours("llama-gqa").to(torch.bfloat16)
    save_hf(model.state_dict(), model.cfg, tmp_path, eos_token_id=2)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert loaded.model.layers[1].self_attn.k_proj.weight.dtype == torch.bfloat16
    k_rows = model.blocks[1].attn.qkv.weight[64:96]
    assert torch.equal(loaded.model.layers[1].self_attn.k_proj.weight, k_rows)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (dict(pos_emb="rope", norm="layernorm", mlp="swiglu"), "model.norm=layernorm"),
        (dict(pos_emb="rope", norm="rmsnorm", mlp="gelu"), "model.mlp=gelu"),
        (dict(bias=False), "model.bias=False"),
        (dict(n_kv_head=2), "model.n_kv_head=2"),
        (dict(norm="rmsnorm", mlp="swiglu"), "model.norm=rmsnorm, model.mlp=swiglu"),
    ],
)
def test_inexpressible_shapes_name_the_fields(fields: dict, named: str) -> None:
    cfg = ModelConfig(**{**TINY, **fields})
    with torch.device("meta"):
        model = GPT(cfg)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        to_hf(model, cfg)


def test_state_dict_from_another_config_is_refused() -> None:
    model = ours("gpt2")
    other = replace(model.cfg, n_layer=3)
    with pytest.raises(ConfigError, match=r"missing \['blocks\.2\."):
        to_hf(model.state_dict(), other)


@pytest.mark.parametrize("variant", ["gpt2", "llama-gqa"])
def test_exported_model_generates_the_same_greedy_tokens(variant: str, tmp_path) -> None:
    model = ours(variant)
    save_hf(model.state_dict(), model.cfg, tmp_path)  # no EOS: both run the full 20 steps
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = torch.randint(0, 1000, (1, 6))
    theirs = loaded.generate(prompt, do_sample=False, max_new_tokens=20)
    assert torch.equal(model.generate(prompt, 20, temperature=0.0), theirs)


def test_folder_saved_by_transformers_loads_with_matching_logits(tmp_path) -> None:
    """A folder as transformers writes it (sharded safetensors + index) and the base-model key layout of the original
    gpt2 folder (no `transformer.` prefix, no head) both load through load_hf_folder."""
    from safetensors.torch import save_file

    from pretrain.interop.hf import load_hf_folder

    torch.manual_seed(2)
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=1003, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                    num_key_value_heads=2, max_position_embeddings=40, tie_word_embeddings=False)
    ).eval()  # fmt: skip
    llama.save_pretrained(tmp_path / "llama", max_shard_size="40KB")
    assert (tmp_path / "llama" / "model.safetensors.index.json").is_file()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=1003, n_positions=40, n_embd=48, n_layer=2, n_head=3)).eval()
    gpt2.config.save_pretrained(tmp_path / "gpt2")
    base = {
        k.removeprefix("transformer."): v.contiguous() for k, v in gpt2.state_dict().items() if k != "lm_head.weight"
    }
    save_file(base, str(tmp_path / "gpt2" / "model.safetensors"))
    idx = torch.randint(0, 1003, (2, 40))
    for name, hf_model in (("llama", llama), ("gpt2", gpt2)):
        cfg, state = load_hf_folder(tmp_path / name, pad_vocab_multiple=128)
        model = GPT(cfg).eval()
        model.load_state_dict(state, strict=True)
        assert cfg.padded_vocab_size == 1024 and (model.wte.weight[1003:] == 0).all()
        with torch.no_grad():
            assert max_diff(model(idx)[0], hf_model(idx).logits) < 1e-4, name


def test_folder_without_safetensors_is_refused(tmp_path) -> None:
    from pretrain.interop.hf import load_hf_folder

    GPT2Config(vocab_size=100, n_positions=16, n_embd=16, n_layer=1, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"no model\.safetensors or model\.safetensors\.index\.json"):
        load_hf_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.json: missing"):
        load_hf_folder(tmp_path / "nowhere")
