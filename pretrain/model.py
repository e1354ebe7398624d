"""A GPT decoder for one device: GPT-2 and Llama style variants chosen by ModelConfig.

Plain PyTorch with no distributed code: ZeRO sharding, bf16 and activation checkpointing are applied from
outside by the engine. Every parameter is initialised where it is created (see `InitLinear`), because under
`deepspeed.zero.Init` a submodule's parameters are partitioned as soon as its `__init__` returns, so a
whole-model `self.apply(init)` afterwards would only see empty shards.

Shapes in comments: B batch, T time, C d_model, nh heads, nkv key/value heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.chunked_ce import chunked_cross_entropy
from pretrain.config import ModelConfig

CheckpointFn = Callable[..., torch.Tensor]


class InitLinear(nn.Linear):
    """Linear layer initialised N(0, std) with zero bias from inside its own constructor."""

    def __init__(self, in_features: int, out_features: int, bias: bool, std: float) -> None:
        self.init_std = std  # read by reset_parameters, which nn.Linear.__init__ calls
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class InitEmbedding(nn.Embedding):
    """Embedding initialised N(0, std) from inside its own constructor."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float) -> None:
        self.init_std = std
        super().__init__(num_embeddings, embedding_dim)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (as Llama does), so bf16 activations keep their scale exact."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def positions(n_pos: int) -> torch.Tensor:
    """Positions 0..n_pos-1 as fp32, made from integers so no constructor patching can change them.

    `deepspeed.zero.Init` turns every floating result of `torch.arange`/`zeros`/... into the model dtype (bf16):
    a float arange of 2048 positions in bf16 collapses neighbours onto one value. An integer arange is left
    alone, and the conversion to fp32 is not a patched constructor (transformers builds its RoPE the same way).
    """
    return torch.arange(n_pos, dtype=torch.int64).float()


def inverse_frequencies(dim: int, base: float) -> torch.Tensor:
    """base^(-2i/dim) for i < dim/2 in fp32: the angular frequencies of sinusoidal positions and RoPE. (dim/2,)"""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """Vaswani et al. fixed positions in fp32: sin on even channels, cos on odd ones. (n_pos, dim)"""
    angles = torch.outer(positions(n_pos), inverse_frequencies(dim, 10000.0))  # (n_pos, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleaved, no patched zeros()


class Rotary(nn.Module):
    """RoPE in the half-split `rotate_half` layout of Hugging Face Llama, so q/k weights map unpermuted.

    One instance is shared by all blocks; its cos/sin tables are fp32 non-persistent buffers computed from integer
    positions (see `positions`): not parameters, so ZeRO never partitions them, and not in checkpoints. Forward
    casts the slice it uses to the activations' dtype, so in a bf16 run a table the engine cast to bf16 (only if
    the JSON sets `data_types.buffer_dtype`) rotates exactly as the fp32 one.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float) -> None:
        super().__init__()
        freqs = torch.outer(positions(max_len), inverse_frequencies(head_dim, theta))  # (max_len, hs/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (max_len, hs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate x (B, nh, T, hs) as if its first position were `start`, or by per-token `positions` (B, T)."""
        T = x.size(-2)
        if positions is None:
            cos = self.cos[start : start + T].to(x.dtype)  # (T, hs)
            sin = self.sin[start : start + T].to(x.dtype)
        else:
            cos = self.cos[positions].to(x.dtype).unsqueeze(1)  # (B, 1, T, hs)
            sin = self.sin[positions].to(x.dtype).unsqueeze(1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class KVCache:
    """Per-layer keys/values of the tokens seen so far, for one-token-at-a-time generation."""

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, cfg.n_kv_head, cfg.seq_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0  # number of cached positions; the next token's position

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k/v (B, nkv, T, hs) for `layer`; return all cached k/v including them."""
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


@dataclass
class Documents:
    """Where the documents of a packed batch are, from the EOS tokens that end them (model.doc_mask).

    The shards end every document with EOS, so a token starts a document when it is first in the window or follows
    an EOS; nothing else is read. `doc_ids` (B, T) numbers the documents of each row; `positions` (B, T) counts
    from each document's start (model.doc_positions_reset); `block_mask` is FlexAttention's where it runs (CUDA).
    """

    doc_ids: torch.Tensor
    positions: torch.Tensor | None
    block_mask: object | None

    def dense_mask(self) -> torch.Tensor:
        """(B, 1, T, T) bool: query i sees key j when j <= i and both are in one document (SDPA's fallback)."""
        same = self.doc_ids.unsqueeze(2) == self.doc_ids.unsqueeze(1)  # (B, T, T)
        return same.tril().unsqueeze(1)


def find_documents(idx: torch.Tensor, cfg: ModelConfig, use_flex: bool) -> Documents:
    """The document layout of idx (B, T) from its EOS tokens (see Documents)."""
    B, T = idx.shape
    starts = torch.ones_like(idx, dtype=torch.bool)
    starts[:, 1:] = idx[:, :-1] == cfg.eos_id
    doc_ids = starts.long().cumsum(dim=1) - 1  # (B, T)
    positions = None
    if cfg.doc_positions_reset:
        steps = torch.arange(T, device=idx.device).expand(B, T)
        positions = steps - torch.where(starts, steps, 0).cummax(dim=1).values
    return Documents(doc_ids, positions, _flex_block_mask(doc_ids) if use_flex else None)


def _flex_block_mask(doc_ids: torch.Tensor) -> object:
    """FlexAttention's block mask for causal attention within documents: blocks wholly outside are skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    def within_document(b, h, q, kv):
        return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

    B, T = doc_ids.shape
    return create_block_mask(within_document, B, None, T, T, device=doc_ids.device)


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """flex_attention compiled once per process: eager FlexAttention materialises the scores."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_runs(device: torch.device, dropout: float) -> bool:
    """FlexAttention where its kernels run (CUDA) and no attention dropout is asked (it has none)."""
    return device.type == "cuda" and dropout == 0.0


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal attention through SDPA, which picks flash/efficient kernels on GPU;
    within documents (model.doc_mask) through FlexAttention's block masks on CUDA, SDPA with a dense mask elsewhere.
    model.qk_norm: RMSNorm over the whole query and key projections before the heads split (OLMo 2)."""

    def __init__(self, cfg: ModelConfig, layer: int, rotary: Rotary | None) -> None:
        super().__init__()
        self.cfg, self.layer, self.rotary = cfg, layer, rotary
        kv_width = cfg.n_kv_head * cfg.head_dim
        self.qkv = InitLinear(cfg.d_model, cfg.d_model + 2 * kv_width, cfg.bias, cfg.init_std)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.k_norm = RMSNorm(kv_width, cfg.norm_eps)
        self.proj = InitLinear(cfg.d_model, cfg.d_model, cfg.bias, residual_std(cfg))
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, documents: Documents | None = None
    ) -> torch.Tensor:
        cfg, (B, T, C) = self.cfg, x.shape
        kv_width = cfg.n_kv_head * cfg.head_dim
        q, k, v = self.qkv(x).split((C, kv_width, kv_width), dim=-1)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        start = kv_cache.pos if kv_cache is not None else 0
        if self.rotary is not None:
            positions = documents.positions if documents is not None else None
            q, k = self.rotary(q, start, positions), self.rotary(k, start, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # (B, nkv, start+T, hs)
        if documents is not None:
            y = self._within_documents(q, k, v, documents)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=_cached_mask(start, T, x.device),
                dropout_p=cfg.dropout if self.training else 0.0,
                is_causal=start == 0 and T > 1,
                enable_gqa=cfg.n_kv_head != cfg.n_head,
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))

    def _within_documents(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, documents: Documents
    ) -> torch.Tensor:
        """Causal attention that never crosses a document boundary. (B, nh, T, hs)"""
        gqa = self.cfg.n_kv_head != self.cfg.n_head
        if documents.block_mask is not None:
            return _compiled_flex_attention()(q, k, v, block_mask=documents.block_mask, enable_gqa=gqa)
        dropout = self.cfg.dropout if self.training else 0.0
        mask = documents.dense_mask()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)


def _cached_mask(start: int, T: int, device: torch.device) -> torch.Tensor | None:
    """Causal mask for T new queries after `start` cached keys; None where is_causal or no mask suffices."""
    if start == 0 or T == 1:
        return None
    return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start)


def z_loss_term(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """PaLM's auxiliary loss: mean over scored tokens of logsumexp(logits)^2, which keeps the softmax normaliser
    near 1 (log Z near 0) so bf16 logits do not drift. logits (N, V) fp32, targets (N,) with -100 ignored."""
    scored = targets != -100
    return (torch.logsumexp(logits, dim=-1).pow(2) * scored).sum() / scored.sum()


def residual_std(cfg: ModelConfig) -> float:
    """GPT-2 scales projections into the residual stream by 1/sqrt(2·n_layer): two per block add up."""
    return cfg.init_std / math.sqrt(2 * cfg.n_layer)


class MLP(nn.Module):
    """4x GELU (tanh approximation, GPT-2's `gelu_new`) or SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.up = InitLinear(cfg.d_model, cfg.d_ff, cfg.bias, cfg.init_std)
        if self.swiglu:
            self.gate = InitLinear(cfg.d_model, cfg.d_ff, cfg.bias, cfg.init_std)
        self.down = InitLinear(cfg.d_ff, cfg.d_model, cfg.bias, residual_std(cfg))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate(x)) * self.up(x) if self.swiglu else F.gelu(self.up(x), approximate="tanh")
        return self.dropout(self.down(h))


class Block(nn.Module):
    """Pre-LN transformer block; forward takes only x so activation checkpointing passes one tensor."""

    def __init__(self, cfg: ModelConfig, layer: int, rotary: Rotary | None) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer, rotary)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, documents: Documents | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), kv_cache, documents)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only LM: embeddings (+ positions), n_layer pre-LN blocks, final norm, LM head (tied by default)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = InitEmbedding(cfg.padded_vocab_size, cfg.d_model, cfg.init_std)
        if cfg.pos_emb == "learned":
            self.wpe = InitEmbedding(cfg.seq_len, cfg.d_model, cfg.init_std)
        elif cfg.pos_emb == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.seq_len, cfg.d_model), persistent=False)
        rotary = Rotary(cfg.head_dim, cfg.seq_len, cfg.rope_theta) if cfg.pos_emb == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i, rotary) for i in range(cfg.n_layer))
        self.norm_f = make_norm(cfg)
        self.lm_head = InitLinear(cfg.d_model, cfg.padded_vocab_size, False, cfg.init_std)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._checkpoint_fn: CheckpointFn | None = None
        self._checkpoint_every_k = 1
        self.loss_chunk_tokens = 0  # > 0: loss via pretrain/chunked_ce.py (set by its enable_chunked_loss)

    def set_activation_checkpointing(self, fn: CheckpointFn | None, every_k: int = 1) -> None:
        """Recompute blocks i with i % every_k == 0 in backward via `fn(block, x)`; None turns it off.

        `fn` follows `torch.utils.checkpoint.checkpoint(function, *args)`; the engine passes DeepSpeed's.
        """
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        self._checkpoint_fn, self._checkpoint_every_k = fn, every_k

    def embed(self, idx: torch.Tensor, start: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings plus absolute positions start..start+T-1, or per-token `positions` (B, T) counted from
        each document's start (rotary is applied in attention)."""
        T = idx.size(1)
        if start + T > self.cfg.seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds model.seq_len={self.cfg.seq_len}; "
                "crop the input or build the model with a larger model.seq_len"
            )
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.wte(idx)  # (B, T, C)
        if self.cfg.pos_emb == "learned":
            x = x + self.wpe(positions)
        elif self.cfg.pos_emb == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        return self.drop(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, kv_cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab_size) (None when loss_chunk_tokens and targets); loss if targets (shifted).

        With model.doc_mask (and no KV cache: generation sees one document) attention stays within documents."""
        documents = None
        if self.cfg.doc_mask and kv_cache is None:
            documents = find_documents(idx, self.cfg, flex_attention_runs(idx.device, self._attention_dropout()))
        x = self.embed(idx, kv_cache.pos if kv_cache is not None else 0, documents and documents.positions)
        for i, block in enumerate(self.blocks):
            checkpointed = kv_cache is None and self._checkpointed(i)
            if checkpointed:  # the checkpoint function passes tensors; a layout rides along in the function
                x = self._checkpoint_fn(
                    block if documents is None else functools.partial(block, documents=documents), x
                )
            else:
                x = block(x, kv_cache, documents)
        if kv_cache is not None:
            kv_cache.pos += idx.size(1)
        h = self.norm_f(x)
        if targets is not None and self.loss_chunk_tokens:  # training loss without whole logits; none returned
            chunk, vocab = self.loss_chunk_tokens, self.cfg.vocab_size
            return None, chunked_cross_entropy(h, self.lm_head.weight, targets, vocab, chunk)
        logits = self.lm_head(h)[..., : self.cfg.vocab_size]  # drop padded rows (B, T, V)
        loss = None
        if targets is not None:
            flat = logits.float().reshape(-1, logits.size(-1))
            loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100)
            if self.cfg.z_loss and self.training:
                loss = loss + self.cfg.z_loss * z_loss_term(flat, targets.reshape(-1))
        return logits, loss

    def _attention_dropout(self) -> float:
        return self.cfg.dropout if self.training else 0.0

    def _checkpointed(self, layer: int) -> bool:
        return self._checkpoint_fn is not None and self.training and layer % self._checkpoint_every_k == 0

    def new_kv_cache(self, batch: int) -> KVCache:
        ref = self.wte.weight
        return KVCache(self.cfg, batch, ref.device, ref.dtype)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by up to max_new_tokens sampled tokens; temperature 0 means greedy.

        Uses a KV cache, feeding one token per step. When the context would outgrow model.seq_len the cache is
        rebuilt from the last seq_len tokens, the same window plain cropping (nanoGPT) would see. Sequences that
        emitted `eos_id` keep emitting it; generation stops early once all have.
        """
        cache, fresh = self.new_kv_cache(idx.size(0)), idx
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if cache.pos + fresh.size(1) > self.cfg.seq_len:
                cache, fresh = self.new_kv_cache(idx.size(0)), idx[:, -self.cfg.seq_len :]
            logits, _ = self(fresh, kv_cache=cache)
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_id = torch.where(done[:, None], torch.full_like(next_id, eos_id), next_id)
                done |= next_id[:, 0] == eos_id
            idx, fresh = torch.cat((idx, next_id), dim=1), next_id
            if eos_id is not None and bool(done.all()):
                break
        return idx


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of logits (B, V) -> (B, 1): greedy at temperature 0, else top-k/nucleus sampling."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        logits = nucleus_filter(logits, top_p)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p (always at least the best one)."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
