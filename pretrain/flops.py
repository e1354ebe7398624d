"""Parameter and FLOP arithmetic for the GPT model, from its config alone (no torch).

`pretrain plan`, MFU reporting and the preset tests need sizes before (or without) building a model, so the
counts live here as pure functions. tests/unit/test_flops.py checks them against `sum(p.numel())` of the built
model for every architectural variant, so the two cannot drift apart.
"""

from __future__ import annotations

from pretrain.config import ModelConfig


def norm_params(cfg: ModelConfig) -> int:
    """One normalisation layer: a gain, plus a shift for LayerNorm with biases (RMSNorm never has one)."""
    has_shift = cfg.norm == "layernorm" and cfg.bias
    return cfg.d_model * (2 if has_shift else 1)


def attention_params(cfg: ModelConfig) -> int:
    """Fused Q/K/V projection (K and V have n_kv_head heads each) and the output projection."""
    kv_width = cfg.n_kv_head * cfg.head_dim
    qkv_out = cfg.d_model + 2 * kv_width
    weights = cfg.d_model * qkv_out + cfg.d_model * cfg.d_model
    biases = qkv_out + cfg.d_model if cfg.bias else 0
    return weights + biases


def mlp_params(cfg: ModelConfig) -> int:
    """GELU MLP: up and down projections; SwiGLU adds a gate projection of the same shape as up."""
    n_in = 2 if cfg.mlp == "swiglu" else 1
    weights = (n_in + 1) * cfg.d_model * cfg.d_ff
    biases = n_in * cfg.d_ff + cfg.d_model if cfg.bias else 0
    return weights + biases


def block_params(cfg: ModelConfig) -> int:
    """One pre-LN transformer block: two norms, attention, MLP."""
    return 2 * norm_params(cfg) + attention_params(cfg) + mlp_params(cfg)


def embedding_params(cfg: ModelConfig) -> int:
    """Input tables: the padded token embedding and, for learned positions, the positional table.

    Sinusoidal and rotary positions are fixed buffers, not parameters.
    """
    positional = cfg.seq_len * cfg.d_model if cfg.pos_emb == "learned" else 0
    return cfg.padded_vocab_size * cfg.d_model + positional


def lm_head_params(cfg: ModelConfig) -> int:
    """Parameters the LM head adds: none when tied to the token embedding (counted once, there)."""
    return 0 if cfg.tie_embeddings else cfg.padded_vocab_size * cfg.d_model


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by part; the values sum to `count_params(cfg)`."""
    return {
        "embedding": embedding_params(cfg),
        "blocks": cfg.n_layer * block_params(cfg),
        "final_norm": norm_params(cfg),
        "lm_head": lm_head_params(cfg),
    }


def count_params(cfg: ModelConfig, exclude_embeddings: bool = False) -> int:
    """Exact number of trainable parameters of `GPT(cfg)`.

    With `exclude_embeddings=True` the input tables (token and learned positional embedding) are left out,
    the "non-embedding N" of Kaplan et al. (2020) that scaling laws are stated in. An untied LM head is a
    matmul like any other layer and stays counted; a tied head is the embedding and so is left out with it.
    """
    parts = param_breakdown(cfg)
    if exclude_embeddings:
        parts.pop("embedding")
    return sum(parts.values())


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: block projections plus the (padded) LM head.

    Norm gains, biases and embedding lookups are excluded: they cost O(d_model) per token, not O(d_model^2).
    The padded head rows are included because the device really multiplies them.
    """
    kv_width = cfg.n_kv_head * cfg.head_dim
    attention = cfg.d_model * (cfg.d_model + 2 * kv_width) + cfg.d_model * cfg.d_model
    mlp = (3 if cfg.mlp == "swiglu" else 2) * cfg.d_model * cfg.d_ff
    return cfg.n_layer * (attention + mlp) + cfg.padded_vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token, the PaLM convention (Chowdhery et al. 2022, app. B).

    6·N counts every matmul weight N once for the forward (2 FLOPs per multiply-add) and twice for the
    backward (grads w.r.t. inputs and weights); the LM head is a matmul and is included. Attention scores and
    the weighted sum add 12·n_layer·d_model·seq_len (QK^T and AV, forward + backward, n_head·head_dim =
    d_model). PaLM counts the full T×T score matrix even though causal masking makes half of it zero, so MFU
    numbers computed with this function compare directly with PaLM's and the wider literature's. Activation
    recomputation from checkpointing is deliberately not counted: MFU measures useful model FLOPs.
    """
    seq_len = cfg.seq_len if seq_len is None else seq_len
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layer * cfg.d_model * seq_len
