"""Parameter and FLOP arithmetic must match the model that is actually built."""

from __future__ import annotations

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.flops import count_params, flops_per_token, matmul_params
from pretrain.model import GPT

SMALL = dict(vocab_size=1000, seq_len=32, n_layer=2, n_head=4, d_model=64)
VARIANTS = {
    "gpt2": dict(),
    "sinusoidal-nobias": dict(pos_emb="sinusoidal", bias=False),
    "untied-layernorm": dict(tie_embeddings=False),
    "rope-rms-swiglu-gqa": dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2),
    "llama-untied-mqa-bias": dict(
        pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=True, n_kv_head=1, tie_embeddings=False
    ),
    "gelu-rms-custom-ff": dict(norm="rmsnorm", d_ff=100),
    "swiglu-learned-layernorm": dict(mlp="swiglu", d_ff=96, n_kv_head=2),
}


def built_params(cfg: ModelConfig, exclude_embeddings: bool = False) -> int:
    model = GPT(cfg)
    skip = {id(model.wte.weight)}
    if cfg.pos_emb == "learned":
        skip.add(id(model.wpe.weight))
    params = model.parameters()  # yields a tied weight once
    return sum(p.numel() for p in params if not (exclude_embeddings and id(p) in skip))


@pytest.mark.parametrize("name", VARIANTS)
def test_count_params_equals_built_model(name: str) -> None:
    cfg = ModelConfig(**SMALL, **VARIANTS[name])
    assert count_params(cfg) == built_params(cfg)
    assert count_params(cfg, exclude_embeddings=True) == built_params(cfg, exclude_embeddings=True)


def test_vocab_padding_is_counted() -> None:
    cfg = ModelConfig(**{**SMALL, "vocab_size": 1001})
    assert cfg.padded_vocab_size == 1024
    assert count_params(cfg) - count_params(cfg, exclude_embeddings=True) == (1024 + 32) * 64


def test_gpt2_small_published_shape() -> None:
    """GPT-2 124M: 124,439,808 parameters with the unpadded 50257 vocabulary (HF's count)."""
    cfg = ModelConfig(pad_vocab_multiple=1)
    assert count_params(cfg) == 124_439_808


def test_llama_7b_published_shape() -> None:
    """Llama-2 7B has exactly 6,738,415,616 parameters."""
    cfg = ModelConfig(
        vocab_size=32000,
        seq_len=4096,
        n_layer=32,
        n_head=32,
        d_model=4096,
        pos_emb="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
        tie_embeddings=False,
    )
    assert cfg.d_ff == 11008
    assert count_params(cfg) == 6_738_415_616


def test_flops_per_token_matches_hand_count() -> None:
    cfg = ModelConfig(**SMALL)
    d, L, ff, V = 64, 2, 256, 1024
    per_layer = 4 * d * d + 2 * d * ff
    assert matmul_params(cfg) == L * per_layer + V * d
    assert flops_per_token(cfg) == 6 * (L * per_layer + V * d) + 12 * L * d * 32
    assert flops_per_token(cfg, seq_len=64) - flops_per_token(cfg, seq_len=32) == 12 * L * d * 32


def test_matmul_params_match_measured_forward() -> None:
    """The linear layers' forward FLOPs counted by torch's FlopCounterMode are exactly 2·matmul_params per token.

    Only mm/addmm are summed: CPU attention kernels are not counted by FlopCounterMode, and the attention
    term is checked by hand in test_flops_per_token_matches_hand_count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    for variant in ("gpt2", "rope-rms-swiglu-gqa", "llama-untied-mqa-bias"):
        cfg = ModelConfig(**SMALL, **VARIANTS[variant])
        model, T = GPT(cfg), 32
        with FlopCounterMode(display=False) as counter:
            model(torch.randint(0, cfg.vocab_size, (1, T)))
        by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        linear_flops = by_op.get("aten.mm", 0) + by_op.get("aten.addmm", 0)
        assert linear_flops == 2 * matmul_params(cfg) * T, variant
