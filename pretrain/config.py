"""Run configuration: one dataclass per concern, validated when built.

Every error names the field and says what to do, so a typo in a YAML file or a `--set` override is caught
before a single GPU-hour is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the fix."""


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


@dataclass
class ModelConfig:
    """Shape of the GPT model. `vocab_size` is the tokenizer's true size; the embedding is padded."""

    vocab_size: int = 50257
    seq_len: int = 1024  # maximum context length (learned positional table size)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention; None means n_head (plain multi-head)
    d_model: int = 768
    d_ff: int | None = None  # None: 4*d_model for gelu, Llama's rounded 8/3*d_model for swiglu
    pos_emb: Literal["learned", "sinusoidal", "rope"] = "learned"
    rope_theta: float = 10000.0
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    mlp: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = True
    init_std: float = 0.02
    pad_vocab_multiple: int = 64

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.mlp == "gelu" else _llama_ffn_width(self.d_model)
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "d_ff", "pad_vocab_multiple"):
            _require(getattr(self, name) > 0, f"model.{name}", f"must be positive, got {getattr(self, name)}")
        _require(
            self.d_model % self.n_head == 0,
            "model.n_head",
            f"{self.n_head} heads do not divide model.d_model={self.d_model}; pick a divisor of d_model",
        )
        _require(
            self.n_kv_head > 0 and self.n_head % self.n_kv_head == 0,
            "model.n_kv_head",
            f"{self.n_kv_head} must divide model.n_head={self.n_head} (grouped-query attention groups)",
        )
        _require(self.head_dim % 2 == 0 or self.pos_emb != "rope", "model.pos_emb", "rope needs an even head_dim")
        _require(self.pos_emb in ("learned", "sinusoidal", "rope"), "model.pos_emb", "use learned|sinusoidal|rope")
        _require(self.norm in ("layernorm", "rmsnorm"), "model.norm", "use layernorm|rmsnorm")
        _require(self.mlp in ("gelu", "swiglu"), "model.mlp", "use gelu|swiglu")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Embedding rows: the vocabulary rounded up so the LM-head matmul hits tensor-core friendly shapes."""
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


def _llama_ffn_width(d_model: int, multiple_of: int = 256) -> int:
    """SwiGLU hidden width as in Llama: 2/3 of 4*d_model, rounded up to a multiple of 256."""
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
