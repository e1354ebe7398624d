"""Named model sizes ("flavors") with the optimizer and batch recipes they were published with.

A preset is a nested dict of section overrides on top of the dataclass defaults in `pretrain.config`; a YAML file
and `--set section.key=value` overrides go on top of it (`load_config`). Sources:

- GPT-2 shapes: Radford et al. 2019 and the released checkpoints (vocab 50257, learned positions, GELU,
  LayerNorm, biases, tied head). GPT-2 published no training recipe, so each size takes the recipe of the GPT-3
  model of the nearest size (Brown et al. 2020, Table 2.1: Small, Medium, Large, XL).
- GPT-3 sizes: Brown et al. 2020, Table 2.1 and Appendix B: AdamW beta 0.9/0.95, eps 1e-8, weight decay 0.1,
  clip 1.0, linear warmup over 375M tokens, cosine decay to 10% of peak, 300B training tokens. Deviation: the
  paper alternates dense and locally banded sparse attention layers; these presets use dense attention in all.
- Llama-style: TinyLlama 1.1B (Zhang et al. 2024) and LLaMA-7B (Touvron et al. 2023): RoPE, RMSNorm, SwiGLU,
  no biases, untied head, 32000-token vocabulary.

Batch sizes: every >= 1B preset defaults to 2^21 = 2,097,152 tokens per step (1024 sequences of 2048). Where the
paper used 1M (GPT-3 1.3B and 2.7B) or 4M (LLaMA-7B) this deviates on purpose: 2^21 tokens is 1024 sequences,
which divides evenly at 8 GPUs/node for 1 to 128 nodes (grad_accum = 1024 / (micro_batch x GPUs)), and at
ZeRO-3 a larger step amortizes the per-step parameter all-gather and gradient reduce-scatter. Get the paper's
batch back with `--set train.global_batch_tokens=1048576`. Micro batches are powers of two sized for 80 GB GPUs
with activation checkpointing, so the batch arithmetic divides at 8 x 2^k GPUs.
"""

from __future__ import annotations

import copy

from infra.config_schema import suggest
from pretrain.errors import ConfigError

TOKENS_2M = 2**21  # 2,097,152 tokens: 1024 sequences of 2048
TOKENS_HALF_M = 2**19  # 524,288 tokens: 512 sequences of 1024 (GPT-3 Small/Medium/Large's 0.5M)
GPT3_WARMUP_TOKENS = 375_000_000
GPT3_TRAIN_TOKENS = 300_000_000_000


def _steps(tokens: int, batch_tokens: int) -> int:
    """Optimizer steps to consume `tokens` at `batch_tokens` per step, rounded up."""
    return -(-tokens // batch_tokens)


def _gpt(n_layer: int, d_model: int, n_head: int, seq_len: int, lr: float, batch: int, micro: int) -> dict:
    """A GPT-2/GPT-3 shaped preset with the GPT-3 paper's recipe (warmup 375M tokens, 300B tokens, cosine)."""
    return {
        "model": {
            "vocab_size": 50257,
            "seq_len": seq_len,
            "n_layer": n_layer,
            "n_head": n_head,
            "d_model": d_model,
            "pos_emb": "learned",
            "norm": "layernorm",
            "mlp": "gelu",
            "bias": True,
            "tie_embeddings": True,
        },
        "optim": {
            "lr": lr,
            "min_lr_ratio": 0.1,
            "warmup_steps": _steps(GPT3_WARMUP_TOKENS, batch),
            "betas": (0.9, 0.95),
            "eps": 1e-8,
            "weight_decay": 0.1,
            "grad_clip": 1.0,
        },
        "train": {
            "global_batch_tokens": batch,
            "micro_batch_size": micro,
            "max_steps": _steps(GPT3_TRAIN_TOKENS, batch),
            "eval_interval": 1000,
            "save_interval": 1000,
        },
    }


def _llama(n_layer: int, d_model: int, n_head: int, n_kv_head: int, d_ff: int, lr: float, micro: int) -> dict:
    """A Llama-shaped preset: RoPE, RMSNorm, SwiGLU, no biases, untied head, seq 2048, 2^21-token steps."""
    return {
        "model": {
            "vocab_size": 32000,
            "seq_len": 2048,
            "n_layer": n_layer,
            "n_head": n_head,
            "n_kv_head": n_kv_head,
            "d_model": d_model,
            "d_ff": d_ff,
            "pos_emb": "rope",
            "rope_theta": 10000.0,
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "bias": False,
            "tie_embeddings": False,
        },
        "optim": {"lr": lr, "min_lr_ratio": 0.1, "warmup_steps": 2000, "betas": (0.9, 0.95), "eps": 1e-5},
        "train": {
            "global_batch_tokens": TOKENS_2M,
            "micro_batch_size": micro,
            "max_steps": _steps(1_000_000_000_000, TOKENS_2M),  # 1T tokens, LLaMA-7B's budget
            "eval_interval": 1000,
            "save_interval": 1000,
        },
    }


def _debug(mlp_style: dict) -> dict:
    """Trains on one CPU in seconds; 1024-token steps divide at world size 1, 2 and 4 (micro 2 x seq 128)."""
    model = {"vocab_size": 512, "seq_len": 128, "n_layer": 2, "n_head": 4, "d_model": 64, **mlp_style}
    return {
        "model": model,
        "optim": {"lr": 1e-3, "warmup_steps": 5, "min_lr_ratio": 0.1},
        "train": {
            "global_batch_tokens": 1024,
            "micro_batch_size": 2,
            "max_steps": 20,
            "eval_interval": 10,
            "save_interval": 10,
            "keep_last": 2,
        },
        "data": {"val_samples": 8},
        "log": {"interval": 1},
    }


_LLAMA_STYLE = {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "tie_embeddings": False}

PRESETS: dict[str, dict] = {
    "debug": _debug({}),
    "llama-debug": _debug({**_LLAMA_STYLE, "n_kv_head": 2}),
    # GPT-2 shapes. 124M/350M/774M take GPT-3 Small/Medium/Large's 0.5M-token batch and peak lr; 1.5B takes
    # GPT-3 XL's lr 2e-4 with the 2^21-token step of every >= 1B preset (see the module docstring).
    "gpt2-124m": _gpt(12, 768, 12, 1024, 6.0e-4, TOKENS_HALF_M, micro=16),
    "gpt2-350m": _gpt(24, 1024, 16, 1024, 3.0e-4, TOKENS_HALF_M, micro=8),
    "gpt2-774m": _gpt(36, 1280, 20, 1024, 2.5e-4, TOKENS_HALF_M, micro=8),
    "gpt2-1.5b": _gpt(48, 1600, 25, 1024, 2.0e-4, TOKENS_2M, micro=4),
    # GPT-3 (Table 2.1). The paper lists XL as 24 heads of 128 (= 3072, not d_model 2048); 16 heads of 128 is
    # the consistent reading. 13B: the paper's d_model 5140 is not divisible by 40 heads; 5120 = 40 x 128.
    # Batch: paper 1M for 1.3B and 2.7B, 2M for 6.7B and 13B; all use 2^21 here (module docstring).
    "gpt3-1.3b": _gpt(24, 2048, 16, 2048, 2.0e-4, TOKENS_2M, micro=8),
    "gpt3-2.7b": _gpt(32, 2560, 32, 2048, 1.6e-4, TOKENS_2M, micro=4),
    "gpt3-6.7b": _gpt(32, 4096, 32, 2048, 1.2e-4, TOKENS_2M, micro=2),
    "gpt3-13b": _gpt(40, 5120, 40, 2048, 1.0e-4, TOKENS_2M, micro=1),
    # TinyLlama 1.1B: 22 layers, GQA with 4 KV heads, lr 4e-4. TinyLlama trained 3T tokens; 1T here.
    "llama-1b": _llama(22, 2048, 32, 4, 5632, 4.0e-4, micro=8),
    # LLaMA-7B: lr 3e-4, batch 4M in the paper (2^21 here), 1T tokens, RMSNorm eps 1e-6.
    "llama-7b": _llama(32, 4096, 32, 32, 11008, 3.0e-4, micro=2),
    # The same with 8 KV heads (Llama-2-70B-style GQA at 7B scale): a 4x smaller KV cache, ~12% fewer parameters.
    "llama-7b-gqa8": _llama(32, 4096, 32, 8, 11008, 3.0e-4, micro=2),
}
PRESETS["llama-7b"]["model"]["norm_eps"] = 1e-6
PRESETS["llama-7b-gqa8"]["model"]["norm_eps"] = 1e-6

# Published total parameter counts. GPT-2: the released checkpoints' counts (the paper's 117M/345M/762M/1542M
# were a miscount of the same models). GPT-3: Table 2.1. Llama: the model cards. Debug presets and the GQA variant
# have no published size and are absent.
PUBLISHED_PARAMS: dict[str, float] = {
    "gpt2-124m": 124e6,
    "gpt2-350m": 355e6,
    "gpt2-774m": 774e6,
    "gpt2-1.5b": 1.558e9,
    "gpt3-1.3b": 1.3e9,
    "gpt3-2.7b": 2.7e9,
    "gpt3-6.7b": 6.7e9,
    "gpt3-13b": 13.0e9,
    "llama-1b": 1.1e9,
    "llama-7b": 6.7e9,
}


def preset_dict(name: str) -> dict:
    """A deep copy of the named preset's section overrides; unknown names suggest the closest one."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; {suggest(name, list(PRESETS))}valid: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
