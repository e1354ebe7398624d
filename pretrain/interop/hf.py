"""Weight mapping between our GPT and Hugging Face transformers (GPT2LMHeadModel, LlamaForCausalLM).

A trained model is only useful if the rest of the ecosystem can load it, so export targets the two stock
architectures every tool knows rather than custom code: GPT-2 for learned/sinusoidal positions + LayerNorm +
GELU with biases, Llama for RoPE + RMSNorm + SwiGLU (+ GQA, optional biases). Our fused `qkv` projection is laid
out [q | k | v] like GPT-2's `c_attn`, and RoPE uses Llama's half-split rotation, so no head permutation is needed;
GPT-2's Conv1D stores weights (in, out), hence the transposes. The embedding's padded rows are sliced off on
export and zero-filled on import. `load_hf_folder` reads a local folder (config.json + safetensors) for
`pretrain.train --init-from-hf` (pretrain/interop/hf_init.py).

transformers is imported inside the functions that use it, not at the top: its config classes take seconds to
import (11 s measured on the 2-core CI machine), and every training launch imports this module through hf_init.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from pretrain.config import ModelConfig
from pretrain.errors import ConfigError
from pretrain.model import GPT, sinusoidal_table

if TYPE_CHECKING:
    from transformers import GPT2Config, LlamaConfig, PretrainedConfig

GPT2_FIELDS = "pos_emb=learned|sinusoidal, norm=layernorm, mlp=gelu, bias=true, n_kv_head=n_head"
LLAMA_FIELDS = "pos_emb=rope, norm=rmsnorm, mlp=swiglu"
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation our MLP uses


def hf_family(cfg: ModelConfig) -> str:
    """'gpt2' or 'llama'; a ConfigError naming the offending fields for shapes neither family expresses."""
    if cfg.pos_emb == "rope":
        wrong = [
            f"model.{k}={getattr(cfg, k)}"
            for k, ok in (("norm", "rmsnorm"), ("mlp", "swiglu"))
            if getattr(cfg, k) != ok
        ]
        _require_expressible(wrong, "LlamaForCausalLM (model.pos_emb=rope)", LLAMA_FIELDS)
        return "llama"
    wanted = {"norm": "layernorm", "mlp": "gelu", "bias": True, "n_kv_head": cfg.n_head}
    wrong = [f"model.{k}={getattr(cfg, k)}" for k, ok in wanted.items() if getattr(cfg, k) != ok]
    _require_expressible(wrong, f"GPT2LMHeadModel (model.pos_emb={cfg.pos_emb})", GPT2_FIELDS)
    return "gpt2"


def _require_expressible(wrong: list[str], family: str, needs: str) -> None:
    if wrong:
        raise ConfigError(
            f"{', '.join(wrong)}: no Hugging Face architecture expresses this model; {family} needs {needs}. "
            f"Exportable shapes: GPT2LMHeadModel ({GPT2_FIELDS}) or LlamaForCausalLM ({LLAMA_FIELDS}). "
            "Change those fields for future runs; this checkpoint still works with `pretrain generate`."
        )


def to_hf(
    model_or_state_dict: nn.Module | dict[str, torch.Tensor],
    cfg: ModelConfig,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> tuple[GPT2Config | LlamaConfig, dict[str, torch.Tensor]]:
    """Our weights as (transformers config, state dict) of GPT2LMHeadModel or LlamaForCausalLM."""
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    ids = dict(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    family = hf_family(cfg)
    check_state_keys(state, cfg)
    if family == "gpt2":
        return gpt2_config(cfg, ids), gpt2_state(state, cfg)
    return llama_config(cfg, ids), llama_state(state, cfg)


def check_state_keys(state: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """The state dict must be exactly GPT(cfg)'s (a tied head may be absent): a mismatch means the wrong config."""
    with torch.device("meta"):
        expected = set(GPT(cfg).state_dict())
    missing = expected - set(state) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
    unexpected = set(state) - expected
    if missing or unexpected:
        raise ConfigError(
            f"state dict does not fit the model config (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}); pass the ModelConfig the weights were trained with"
        )


def gpt2_config(cfg: ModelConfig, ids: dict[str, int | None]) -> GPT2Config:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.d_ff,
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.norm_eps,
        initializer_range=cfg.init_std,
        tie_word_embeddings=cfg.tie_embeddings,
        architectures=["GPT2LMHeadModel"],
        **ids,
    )


def llama_config(cfg: ModelConfig, ids: dict[str, int | None]) -> LlamaConfig:
    """Llama has no residual dropout; model.dropout becomes attention_dropout (irrelevant for inference)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_bias=cfg.bias,
        attention_dropout=cfg.dropout,
        mlp_bias=cfg.bias,
        architectures=["LlamaForCausalLM"],
        **ids,
    )


def _shared(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Embedding and head sliced to the true vocabulary."""
    head = state["wte.weight"] if cfg.tie_embeddings else state["lm_head.weight"]
    return {"wte": state["wte.weight"][: cfg.vocab_size], "lm_head": head[: cfg.vocab_size]}


GPT2_NORMS = (("norm1", "ln_1"), ("norm2", "ln_2"))
GPT2_CONV1DS = (
    ("attn.qkv", "attn.c_attn"),
    ("attn.proj", "attn.c_proj"),
    ("mlp.up", "mlp.c_fc"),
    ("mlp.down", "mlp.c_proj"),
)


def gpt2_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Conv1D layers keep (in, out) weights: every projection is transposed."""
    shared = _shared(state, cfg)
    dtype = state["wte.weight"].dtype
    wpe = state["wpe.weight"] if cfg.pos_emb == "learned" else sinusoidal_table(cfg.seq_len, cfg.d_model).to(dtype)
    out = {"transformer.wte.weight": shared["wte"], "transformer.wpe.weight": wpe, "lm_head.weight": shared["lm_head"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in GPT2_NORMS:
            out[f"{theirs}{b}.weight"], out[f"{theirs}{b}.bias"] = state[f"{ours}{a}.weight"], state[f"{ours}{a}.bias"]
        for a, b in GPT2_CONV1DS:
            out[f"{theirs}{b}.weight"] = state[f"{ours}{a}.weight"].t()
            out[f"{theirs}{b}.bias"] = state[f"{ours}{a}.bias"]
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = state["norm_f.weight"], state["norm_f.bias"]
    return out


LLAMA_LINEARS = (
    ("attn.proj", "self_attn.o_proj"),
    ("mlp.gate", "mlp.gate_proj"),
    ("mlp.up", "mlp.up_proj"),
    ("mlp.down", "mlp.down_proj"),
)
LLAMA_NORMS = (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"))


def llama_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Linear layers keep (out, in) weights as ours do; only the fused qkv is split."""
    shared = _shared(state, cfg)
    out = {"model.embed_tokens.weight": shared["wte"], "lm_head.weight": shared["lm_head"]}
    kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for kind in kinds:
            q, k, v = state[f"{ours}attn.qkv.{kind}"].split(_qkv_sizes(cfg), dim=0)
            out.update({f"{theirs}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v), strict=True)})
            out.update({f"{theirs}{b}.{kind}": state[f"{ours}{a}.{kind}"] for a, b in LLAMA_LINEARS})
        out.update({f"{theirs}{b}.weight": state[f"{ours}{a}.weight"] for a, b in LLAMA_NORMS})
    out["model.norm.weight"] = state["norm_f.weight"]
    return out


def _qkv_sizes(cfg: ModelConfig) -> tuple[int, int, int]:
    kv_width = cfg.n_kv_head * cfg.head_dim
    return cfg.d_model, kv_width, kv_width


def from_hf(
    hf_cfg: PretrainedConfig, state: dict[str, torch.Tensor], pad_vocab_multiple: int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A transformers GPT2LMHeadModel/LlamaForCausalLM config and state dict as (our ModelConfig, our state dict),
    the embedding zero-padded to a multiple of `pad_vocab_multiple` (ModelConfig's default when None)."""
    cfg = config_from_hf(hf_cfg)
    if pad_vocab_multiple is not None:
        cfg = replace(cfg, pad_vocab_multiple=pad_vocab_multiple)
    state = _with_base_prefix(state, hf_cfg.model_type)
    try:
        ours = state_from_gpt2(state, cfg) if hf_cfg.model_type == "gpt2" else state_from_llama(state, cfg)
    except KeyError as err:
        raise ConfigError(
            f"the {hf_cfg.model_type} weights lack {err.args[0]!r}; they do not fit their config.json"
        ) from None
    ours = _pad_vocab(ours, cfg)
    check_state_keys(ours, cfg)
    return cfg, ours


def config_from_hf(hf_cfg: PretrainedConfig) -> ModelConfig:
    """Our ModelConfig for a transformers config; a ConfigError for families other than gpt2 and llama."""
    if hf_cfg.model_type == "gpt2":
        return config_from_gpt2(hf_cfg)
    if hf_cfg.model_type == "llama":
        return config_from_llama(hf_cfg)
    raise ConfigError(f"model_type={hf_cfg.model_type!r}: only gpt2 and llama checkpoints can be imported")


BASE_PREFIX = {"gpt2": "transformer.", "llama": "model."}


def _with_base_prefix(state: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Weights saved from the base model (GPT2Model, as the original gpt2 folder is) lack the head model's prefix."""
    prefix = BASE_PREFIX[model_type]
    if any(key.startswith(prefix) for key in state):
        return state
    return {prefix + key: value for key, value in state.items()}


def read_hf_config(folder: str | os.PathLike) -> PretrainedConfig:
    """config.json of a local transformers folder (no network)."""
    from transformers import AutoConfig

    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing; give a folder written by `pretrain export` or transformers' save_pretrained"
        )
    return AutoConfig.from_pretrained(Path(folder), local_files_only=True)


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of a folder: model.safetensors, or the shards model.safetensors.index.json names."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    raise ConfigError(
        f"{folder}: no model.safetensors or model.safetensors.index.json; save the model with safetensors "
        "(transformers' default) or `pretrain export`"
    )


def load_hf_folder(
    folder: str | os.PathLike, pad_vocab_multiple: int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A local GPT-2 or Llama folder (config.json + safetensors) as (our ModelConfig, our state dict)."""
    hf_cfg = read_hf_config(folder)
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        state.update(load_file(str(path)))
    return from_hf(hf_cfg, state, pad_vocab_multiple)


def config_from_gpt2(hf_cfg: GPT2Config) -> ModelConfig:
    _require_hf(hf_cfg.activation_function in GPT2_ACTIVATIONS, "activation_function", hf_cfg.activation_function)
    _require_hf(hf_cfg.scale_attn_weights, "scale_attn_weights", False)
    _require_hf(not hf_cfg.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx", True)
    return ModelConfig(
        vocab_size=hf_cfg.vocab_size,
        seq_len=hf_cfg.n_positions,
        n_layer=hf_cfg.n_layer,
        n_head=hf_cfg.n_head,
        d_model=hf_cfg.n_embd,
        d_ff=hf_cfg.n_inner or 4 * hf_cfg.n_embd,
        pos_emb="learned",
        norm="layernorm",
        norm_eps=hf_cfg.layer_norm_epsilon,
        mlp="gelu",
        bias=True,
        dropout=hf_cfg.resid_pdrop,
        tie_embeddings=bool(hf_cfg.tie_word_embeddings),
        init_std=hf_cfg.initializer_range,
    )


def config_from_llama(hf_cfg: LlamaConfig) -> ModelConfig:
    rope = hf_cfg.rope_parameters or {}
    _require_hf(rope.get("rope_type", "default") == "default", "rope_parameters.rope_type", rope.get("rope_type"))
    _require_hf(hf_cfg.hidden_act == "silu", "hidden_act", hf_cfg.hidden_act)
    _require_hf(hf_cfg.attention_bias == hf_cfg.mlp_bias, "attention_bias != mlp_bias", hf_cfg.attention_bias)
    head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    _require_hf(head_dim * hf_cfg.num_attention_heads == hf_cfg.hidden_size, "head_dim", head_dim)
    return ModelConfig(
        vocab_size=hf_cfg.vocab_size,
        seq_len=hf_cfg.max_position_embeddings,
        n_layer=hf_cfg.num_hidden_layers,
        n_head=hf_cfg.num_attention_heads,
        n_kv_head=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads,
        d_model=hf_cfg.hidden_size,
        d_ff=hf_cfg.intermediate_size,
        pos_emb="rope",
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        norm="rmsnorm",
        norm_eps=hf_cfg.rms_norm_eps,
        mlp="swiglu",
        bias=bool(hf_cfg.attention_bias),
        dropout=float(hf_cfg.attention_dropout),
        tie_embeddings=bool(hf_cfg.tie_word_embeddings),
        init_std=hf_cfg.initializer_range,
    )


def _require_hf(ok: bool, field: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"Hugging Face config {field}={value!r}: our GPT cannot represent it; import another model")


def state_from_gpt2(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of gpt2_state: Conv1D (in, out) weights transposed back to Linear (out, in)."""
    out = {"wte.weight": state["transformer.wte.weight"], "wpe.weight": state["transformer.wpe.weight"]}
    out["lm_head.weight"] = out["wte.weight"] if cfg.tie_embeddings else state["lm_head.weight"]
    out["norm_f.weight"], out["norm_f.bias"] = state["transformer.ln_f.weight"], state["transformer.ln_f.bias"]
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in GPT2_NORMS:
            out[f"{ours}{a}.weight"], out[f"{ours}{a}.bias"] = state[f"{theirs}{b}.weight"], state[f"{theirs}{b}.bias"]
        for a, b in GPT2_CONV1DS:
            out[f"{ours}{a}.weight"] = state[f"{theirs}{b}.weight"].t().contiguous()
            out[f"{ours}{a}.bias"] = state[f"{theirs}{b}.bias"]
    return out


def state_from_llama(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"wte.weight": state["model.embed_tokens.weight"], "norm_f.weight": state["model.norm.weight"]}
    out["lm_head.weight"] = out["wte.weight"] if cfg.tie_embeddings else state["lm_head.weight"]
    kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for kind in kinds:
            qkv = [state[f"{theirs}self_attn.{n}_proj.{kind}"] for n in "qkv"]
            out[f"{ours}attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            out.update({f"{ours}{a}.{kind}": state[f"{theirs}{b}.{kind}"] for a, b in LLAMA_LINEARS})
        out.update({f"{ours}{a}.weight": state[f"{theirs}{b}.weight"] for a, b in LLAMA_NORMS})
    return out


def _pad_vocab(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Zero rows up to padded_vocab_size; a tied head shares the padded embedding tensor."""
    extra = cfg.padded_vocab_size - cfg.vocab_size

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(extra, t.size(1))]) if extra else t

    state["wte.weight"] = pad(state["wte.weight"])
    state["lm_head.weight"] = state["wte.weight"] if cfg.tie_embeddings else pad(state["lm_head.weight"])
    return state


def save_hf(
    model_state: nn.Module | dict[str, torch.Tensor],
    cfg: ModelConfig,
    out_dir: str | os.PathLike,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> Path:
    """Write a folder `AutoModelForCausalLM.from_pretrained` loads: config.json, generation_config.json and
    model.safetensors (in the weights' own dtype; a tied head is stored once, as transformers expects)."""
    from transformers import GenerationConfig

    hf_config, state = to_hf(model_state, cfg, bos_token_id, eos_token_id, pad_token_id)
    if cfg.tie_embeddings:
        state.pop("lm_head.weight")
    hf_config.dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(out)
    ids = dict(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    GenerationConfig(**ids).save_pretrained(out)
    save_file(_unshared(state), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (q/k/v views of one qkv weight); copy only those."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    return out
